r"""DASS on AudioSet, distilled from an AST teacher: the recipes of DASS `egs/audioset/run.sh`.

    python -m experiments.train \
      --config experiments/configs/audioset_dass.py:small,balanced \
      --workdir /exp/dass_small_balanced \
      --config.input.datafile=/data/audioset/balanced_train.json \
      --config.input.weights_file='' \
      --config.evals.input.datafile=/data/audioset/eval.json \
      --config.input.label_csv=/data/audioset/class_labels_indices.csv \
      --config.evals.input.label_csv=/data/audioset/class_labels_indices.csv \
      --config.teacher.path=/models/ast_audioset_converted

Arguments after ':' (comma separated): `small` or `medium` (model size), `balanced` or `full`
(training set), `runlocal` (a tiny smoke run on the synthetic data's paths you pass).

Recipe (DASS run.sh / traintest.py): Adam(lr 1e-4, betas (0.95, 0.999), L2 weight decay 5e-7),
batch 12, warm-up to lr over the first 1000 steps (updated every 50 steps), BCE label loss mixed
with KL(teacher || student) at temperature 1.0, kd weight 0.5, mixup 0.5, freqm 48, timem 192, 1024
frames, and
  balanced: 25 epochs, lr x0.5 every 5 epochs from epoch 10, weight averaging over epochs 6-25;
  full:      5 epochs, lr x0.5 every epoch from epoch 2, weight averaging over epochs 1-5, sampled
             with per-clip balancing weights (`python -m dass_jax.data.balanced` writes them; pass
             --config.input.weights_file).
The DASS code starts from ImageNet-pretrained VMamba weights; pass them as a converted checkpoint
with --config.init_from=... (the classifier is re-initialised with --config.reinit_head=True).
The kd weight (0.5) is the value of CMKD, DASS's predecessor recipe (run.sh does not set it).
The teacher can be any converted checkpoint (a DASS one is the authors' `--kd_teach_type DASS`),
or the student's own EMA with `--config.teacher.kind=ema` (`--kd_teach_type self`, momentum
`--config.teacher.ema_momentum=0.999`); see docs/distillation.md, `dass_v3.py` (SSLAM teacher) and
`dass_v2_ensemble.py` (two teachers).
"""

import ml_collections

from experiments.configs import common


def get_config(arg=None):
  arg = common.parse_arg(
    arg,
    lazy=True,
    size="small",
    set="balanced",
    runlocal=False,
    choices={"size": ("small", "medium"), "set": ("balanced", "full")},
  )
  c = common.base_config()
  c.batch_size = 12
  c.model_type = "dass"
  c.model = ml_collections.ConfigDict(
    {
      "depths": (2, 2, 8, 2) if arg.size == "small" else (2, 2, 20, 2),
      "dims": (96, 192, 384, 768),
      "drop_path_rate": 0.2 if arg.size == "small" else 0.3,
    }
  )
  c.input.target_frames = 1024
  c.input.freqm, c.input.timem, c.input.mixup = 48, 192, 0.5
  c.input.num_workers = 8
  c.evals.input.target_frames = 1024
  c.evals.batch_size = 48

  c.loss.label_kind = "bce"
  c.loss.kd_kind = "kldiv"
  c.loss.kd_weight = 0.5
  c.loss.temperature = 1.0

  c.optim.lr = 1e-4
  c.optim.warmup_steps = 1000
  c.optim.warmup_update_every = 50
  if arg.set == "balanced":
    c.num_epochs = 25
    c.optim.decay_start, c.optim.decay_every, c.optim.decay_rate = 10, 5, 0.5
    c.wa_start, c.wa_end = 6, 25
  else:
    c.num_epochs = 5
    c.optim.decay_start, c.optim.decay_every, c.optim.decay_rate = 2, 1, 0.5
    c.wa_start, c.wa_end = 1, 5
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000

  if arg.runlocal:
    c.batch_size = 4
    c.total_steps = 4
    c.model.depths, c.model.dims = (1, 1, 1, 1), (8, 16, 32, 64)
    c.input.target_frames = c.evals.input.target_frames = 198
    c.input.num_workers = 0
    c.evals.batch_size = 8
    c.wa_start = c.wa_end = 0
    c.log_every_steps = 1
  return c
