r"""Quickstart: synthetic data -> small AST teacher -> DASS student with and without KD.

    python -m experiments.train --config experiments/configs/quickstart.py \
        --workdir work_dirs/quickstart

Trains three tiny models on the embedded synthetic dataset (13 sound-event classes, generated
into ~/.cache/dass_jax/synthetic or $DASS_JAX_CACHE on first use) and prints their held-out mAP.
Sized for a 2-core CPU (under 15 minutes). `:runlocal` shrinks everything to a seconds-long smoke
run (used by the tests):

    python -m experiments.train --config experiments/configs/quickstart.py:runlocal --workdir /tmp/q
"""

import ml_collections

from experiments.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.seed = 0
  c.batch_size = 16
  c.num_epochs = 3
  c.input.target_frames = 198  # 2 s clips (10 ms hop)
  # SpecAugment widths are given at 1024 frames and scaled to the clip (40 -> 8 frames here).
  c.input.freqm, c.input.timem, c.input.mixup = 12, 40, 0.0
  c.input.read_threads = 2
  c.evals.input.target_frames = 198
  c.evals.input.read_threads = 2
  c.evals.batch_size = 40
  c.evals.every_epochs = 2

  # Student: a 4-stage DASS with tiny widths.
  c.model_type = "dass"
  c.model = ml_collections.ConfigDict(
    {
      "depths": (1, 1, 2, 1),
      "dims": (16, 32, 64, 128),
      "drop_path_rate": 0.1,
      "scan_impl": "sequential",
    }
  )
  c.head_bias_init = "prior"  # from scratch: the head starts at the label prior
  c.loss.kd_weight = 0.5
  c.loss.temperature = 1.0
  c.optim.lr = 2e-3
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"
  c.optim.final_lr_ratio = 0.01
  c.optim.warmup_steps = 30
  c.optim.warmup_update_every = 1
  c.wa_start, c.wa_end = 0, 0
  c.log_every_steps = 10
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 2
  c.workdir = "work_dirs/quickstart"  # --workdir overrides

  c.quickstart = ml_collections.ConfigDict(
    {
      "dataset_dir": "",  # '' = the default cache folder
      "dataset_seed": 0,
      "num_train": 800,
      "num_eval": 200,
      "clip_seconds": 2.0,
      "teacher": {
        "model_type": "ast",
        "model": {
          "hidden_size": 64,
          "num_layers": 2,
          "num_heads": 4,
          "mlp_dim": 128,
          "max_length": 198,
        },
        "num_epochs": 4,
        "lr": 3e-3,
        "wa_start": 0,
        "wa_end": 0,
      },
    }
  )

  if arg.runlocal:
    c.batch_size = 4
    c.num_epochs = 1
    c.evals.batch_size = 8
    c.model.depths, c.model.dims = (1, 1, 1, 1), (8, 16, 32, 64)
    c.optim.warmup_steps = 2
    c.log_every_steps = 2
    c.quickstart.num_train, c.quickstart.num_eval = 16, 8
    c.quickstart.teacher.num_epochs = 1
    c.quickstart.teacher.model = {
      "hidden_size": 16,
      "num_layers": 1,
      "num_heads": 2,
      "mlp_dim": 32,
      "max_length": 198,
    }
  return c
