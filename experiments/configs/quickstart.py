r"""Quickstart: synthetic data -> small AST teacher -> DASS student with and without KD.

    python -m experiments.train --config experiments/configs/quickstart.py \
        --workdir work_dirs/quickstart

Trains three tiny models on the embedded synthetic dataset (13 sound-event classes, 1 s clips,
generated into ~/.cache/dass_jax/synthetic or $DASS_JAX_CACHE on first use: 800 training clips
with weak labels, 200 valid and 200 test clips), chooses each stage's checkpoint on valid, reports
test mAP once per stage and draws the learning curves (`experiments.quickstart`). Sized for a
2-core CPU (its cold wall time is measured by `scripts/remeasure.sh`). `:runlocal` shrinks
everything to a smoke run (used by the tests):

    python -m experiments.train --config experiments/configs/quickstart.py:runlocal --workdir /tmp/q

The recipe, and why (docs/quickstart.md has the measurements and the runs that chose the epochs
on valid; `experiments/quickstart_study.py` reproduces the diagnostics):
  * weak training labels: 30 % of the training clips' labels are left out (AudioSet's labels miss
    audible events too; the valid and test labels are complete). This is the situation in which a
    teacher's soft labels carry more than the labels, and what the quickstart shows KD doing;
  * the teacher (AST, 0.09 M params, half the student's cost per step) trains with AST's
    augmentation (mixup 0.5, SpecAugment: freqm 24 of 128 bins, timem 96 at 1024 frames = at most
    9 of the clip's 98 frames) so it generalises instead of memorising the weak labels; the
    students train without augmentation (they underfit rather than overfit in so few epochs), the
    distilled one on 0.5 label BCE + 0.5 BCE against the teacher's sigmoid outputs, from the
    teacher's logits computed once (the same update as the teacher in the step);
  * the epochs (teacher and students) were chosen on valid: the fewest steps whose three stages
    reach 0.80 valid mAP, to fit the time budget (docs/quickstart.md);
  * the models start from scratch, so the classifier bias starts at the label prior
    (`head_bias_init='prior'`): with a zero bias the first Adam steps drive every logit to the
    prior through the whole network and the features collapse to an input-independent vector;
  * 1 s clips (98 frames): events fill a larger share of the clip that DASS mean-pools over,
    and a step costs half that of 2 s clips;
  * Adam with a linear warm-up and a cosine decay (short runs; the AudioSet recipes' step decay
    halves the rate every epoch), no weight decay, no stochastic depth;
  * every stage evaluates on valid after each epoch and keeps its best-on-valid parameters; the
    scan is `auto` (the chunked scan on CPU); features are computed once per unmixed clip
    (`cache_fbank`, `evals.cache`).
"""

import ml_collections

from experiments.configs import common

CLIP_SECONDS = 1.0
FRAMES = 98  # Kaldi frames in 1 s: (16000 - 400) // 160 + 1.


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.seed = 0
  c.batch_size = 16
  c.num_epochs = 12  # chosen on valid (docs/quickstart.md, "Choosing the epochs on valid")
  c.input.target_frames = FRAMES
  c.input.freqm, c.input.timem, c.input.mixup = 0, 0, 0.0
  c.input.cache_fbank = True
  c.input.read_threads = 2
  c.evals.input.target_frames = FRAMES
  c.evals.input.read_threads = 2
  c.evals.batch_size = 40
  c.evals.every_epochs = 1
  c.evals.cache = True

  # Student: a 4-stage DASS with tiny widths.
  c.model_type = "dass"
  c.model = ml_collections.ConfigDict(
    {
      "depths": (1, 1, 2, 1),
      "dims": (16, 32, 64, 128),
      "drop_path_rate": 0.0,
      "scan_impl": "auto",
    }
  )
  c.head_bias_init = "prior"
  c.loss.kd_kind = "bce"
  c.loss.kd_weight = 0.5
  c.loss.temperature = 1.0
  c.optim.lr = 2e-3
  c.optim.b1 = 0.9
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"
  c.optim.final_lr_ratio = 0.01
  c.optim.warmup_steps = 50
  c.optim.warmup_update_every = 1
  c.log_every_steps = 10
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 1
  c.workdir = "work_dirs/quickstart"  # --workdir overrides

  c.quickstart = ml_collections.ConfigDict(
    {
      "dataset_dir": "",  # '' = the default cache folder
      "dataset_seed": 0,
      "num_train": 800,
      "num_valid": 200,  # every choice is made on these clips
      "num_test": 200,  # evaluated once per stage, after training
      "clip_seconds": CLIP_SECONDS,
      "missing_label_rate": 0.3,  # weak training labels (dass_jax.data.synthetic)
      # More stages after these (experiments/quickstart_variants.py): 'student_ema',
      # 'student_ensemble'.
      "extra_stages": (),
      "teacher": {
        "model_type": "ast",
        "model": {
          "hidden_size": 64,
          "num_layers": 2,
          "num_heads": 4,
          "mlp_dim": 128,
          "max_length": FRAMES,
        },
        "num_epochs": 50,  # chosen on valid, like the students' 12
        "lr": 3e-3,
        # AST's recipe: mixup and SpecAugment, so that the teacher does not memorise its
        # training clips' (weak) labels and its outputs on them say more than the labels.
        "input": {"mixup": 0.5, "freqm": 24, "timem": 96},
        "wa_start": 0,
        "wa_end": 0,
      },
    }
  )

  if arg.runlocal:
    c.batch_size = 4
    c.num_epochs = 1
    c.evals.batch_size = 8
    c.evals.every_steps = 2
    c.model.depths, c.model.dims = (1, 1), (8, 16)
    c.optim.warmup_steps = 2
    c.log_every_steps = 2
    c.quickstart.num_train, c.quickstart.num_valid, c.quickstart.num_test = 16, 8, 8
    c.quickstart.teacher.num_epochs = 1
    c.quickstart.teacher.model = {
      "hidden_size": 16,
      "num_layers": 1,
      "num_heads": 2,
      "mlp_dim": 32,
      "max_length": FRAMES,
    }
  return c
