r"""Your own recordings: train, fine-tune or distil on a folder written by `dass_jax.prepare`.

    python -m dass_jax.prepare --folder my_sounds --out data/my_sounds
    python -m experiments.train --config experiments/configs/own_data.py:data/my_sounds \
        --workdir work_dirs/my_sounds
    cat work_dirs/my_sounds/results.json      # {"valid": {...}, "test": {"accuracy", ...}, ...}

The text after ':' is the prepared folder, then optional comma-separated arguments:

  model=dass|ast  the architecture trained from scratch (default dass)
  kd              two stages (`experiments.two_stage`): an AST teacher from scratch on the same
                  data in W/teacher, then the student (model=...) distilled from it in W
  seconds=S       clip length in seconds (default: the 95th percentile of the clips' durations in
                  summary.json, at least 16 frames); shorter clips are zero-padded, longer ones
                  cropped (training and evaluation alike)
  epochs=N        training epochs (default 30)
  runlocal        a smoke run (tiny models, a few steps; what the tests run)

    python -m experiments.train --config experiments/configs/own_data.py:data/my_sounds,runlocal \
        --workdir /tmp/own_smoke

Fine-tuning a converted checkpoint instead (a folder, or a published name such as
dass-small-47.2, converted on first use; `python -m convert_torch --list`): its architecture is
kept, the classifier head replaced by one for your classes (`reinit_head`, bias at the label
prior); a lower learning rate suits it:

    python -m experiments.train --config experiments/configs/own_data.py:data/my_sounds \
        --workdir work_dirs/my_sounds_ft --config.init_from=dass-small-47.2 --config.optim.lr=1e-4

Distilling from a teacher you already have (trained on the same classes, e.g. an earlier
`experiments.train` work directory, or a converted folder): --config.teacher.path=FOLDER.

What the recipe does:
  * labels: single-label data (summary.json "label_kind") trains with softmax cross-entropy and
    chooses by valid accuracy; multi-label data with sigmoid BCE and valid mAP; KD uses the
    matching loss (KL to the teacher's softmax, or BCE to its sigmoid outputs, weight 0.5);
  * model from scratch: DASS with depths (1, 1, 2, 1) and dims (16, 32, 64, 128) (0.38 M params
    at 10 classes), sized for a 2-core CPU; model=ast: an AST of about the same size (hidden 96,
    3 layers, 4 heads, MLP 384, the clip length as max_length); classifier bias at the label prior;
  * Adam (b1 0.9, no weight decay), lr 2e-3, 100 warm-up steps, cosine decay to 1 %, batch 16;
    SpecAugment (freqm 24, timem 96 scaled to the clip length), no mixup; each clip's fbank
    computed once (`cache_fbank`, `evals.cache`);
  * selection on valid only: evaluated every epoch, the best valid checkpoint or the weight
    average of the last quarter of the epochs, whichever is better on valid; training stops
    after 10 evaluations without a better valid score; the test split is evaluated once, at the
    end, on the chosen model (`experiments.train`).
"""

from __future__ import annotations

import json
import os

import ml_collections

from dass_jax.constants import SAMPLE_RATE
from dass_jax.frontends import kaldi_fbank
from experiments.configs import common

SUMMARY_FILE = "summary.json"  # dass_jax.prepare's
MIN_FRAMES = 16  # an AST patch; also keeps DASS's four stride-2 stages non-trivial
DEFAULT_EPOCHS = 30
DASS_SCRATCH = {"depths": (1, 1, 2, 1), "dims": (16, 32, 64, 128), "drop_path_rate": 0.1}
AST_SCRATCH = {"hidden_size": 96, "num_layers": 3, "num_heads": 4, "mlp_dim": 384}
MODELS = ("dass", "ast")


def clip_frames(seconds: float) -> int:
  """Kaldi frames (25 ms windows every 10 ms at 16 kHz) of a clip of `seconds`, at least
  MIN_FRAMES."""
  window, shift, _ = kaldi_fbank.frame_geometry(SAMPLE_RATE)
  samples = int(round(seconds * SAMPLE_RATE))
  return max(MIN_FRAMES, 1 + (samples - window) // shift if samples >= window else 1)


def read_summary(folder: str) -> dict:
  path = os.path.join(folder, SUMMARY_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{path} not found: own_data.py takes a folder written by `python -m dass_jax.prepare`"
    )
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _scratch_model(name: str, frames: int, runlocal: bool) -> tuple[str, dict]:
  if name == "dass":
    fields = dict(DASS_SCRATCH, scan_impl="auto")
    if runlocal:
      fields.update(depths=(1, 1), dims=(8, 16))
    return "dass", fields
  fields = dict(AST_SCRATCH, max_length=frames)
  if runlocal:
    fields.update(hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
  return "ast", fields


def get_config(arg=None):
  folder, _, rest = (arg or "").partition(",")
  if not folder or "=" in folder:
    raise ValueError(
      "own_data.py needs the folder of `python -m dass_jax.prepare`: "
      "--config experiments/configs/own_data.py:OUT[,model=ast][,kd][,runlocal]"
    )
  arg = common.parse_arg(
    rest,
    model="dass",
    kd=False,
    seconds=0.0,
    epochs=0,
    runlocal=False,
    choices={"model": MODELS},
  )
  summary = read_summary(folder)
  counts = {name: split["clips"] for name, split in summary["splits"].items()}
  if counts.get("valid", 0) == 0:
    raise ValueError(
      f"{folder} has no valid clips: every choice is made on the valid split; rerun "
      "`python -m dass_jax.prepare` with --valid-fraction > 0"
    )
  single = summary["label_kind"] == "single"
  seconds = arg.seconds or summary["durations"]["p95"]
  frames = clip_frames(seconds)

  c = common.base_config()
  c.seed = 0
  c.batch_size = 16
  c.num_epochs = arg.epochs or DEFAULT_EPOCHS
  c.model_type, fields = _scratch_model(arg.model, frames, arg.runlocal)
  c.scratch_model = ml_collections.ConfigDict(fields)
  c.reinit_head = True  # with --config.init_from: a new head for these classes
  c.head_bias_init = "prior"

  labels = os.path.join(folder, "labels.csv")
  for section, split in ((c.input, "train"), (c.evals.input, "valid"), (c.test.input, "test")):
    section.datafile = os.path.join(folder, f"{split}.json") if counts.get(split) else ""
    section.label_csv = labels
    section.target_frames = frames
    section.read_threads = 2
  c.input.freqm, c.input.timem, c.input.mixup = 24, 96, 0.0
  c.input.cache_fbank = True
  c.evals.batch_size = 64
  c.evals.every_epochs = 1
  c.evals.cache = True
  c.select.model = "best"
  c.select.patience = 10
  c.wa_start = c.num_epochs - max(1, c.num_epochs // 4) + 1
  c.wa_end = c.num_epochs

  c.loss.label_kind = "ce" if single else "bce"
  c.loss.kd_kind = "kldiv" if single else "bce"
  c.loss.kd_weight = 0.5
  c.loss.temperature = 1.0
  c.loss.teacher_func = "softmax" if single else "sigmoid"
  c.optim.lr = 2e-3
  c.optim.b1 = 0.9
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"
  c.optim.final_lr_ratio = 0.01
  c.optim.warmup_steps = 100
  c.optim.warmup_update_every = 1
  c.log_every_steps = 20
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 1
  c.workdir = os.path.join("work_dirs", os.path.basename(os.path.normpath(folder)))

  if arg.kd:
    teacher_type, teacher_fields = _scratch_model("ast", frames, arg.runlocal)
    c.two_stage = ml_collections.ConfigDict(
      {"teacher": {"model_type": teacher_type, "scratch_model": teacher_fields}}
    )

  if arg.runlocal:
    c.batch_size = 4
    c.total_steps = 4
    c.num_epochs = 1
    c.evals.batch_size = 8
    c.evals.every_steps = 2
    c.select.patience = 0
    c.wa_start = c.wa_end = 0
    c.optim.warmup_steps = 2
    c.log_every_steps = 2
  # Small datasets: the warm-up takes at most a tenth of the run.
  total_steps = c.total_steps or c.num_epochs * max(1, counts["train"] // c.batch_size)
  c.optim.warmup_steps = max(1, min(c.optim.warmup_steps, total_steps // 10))
  return c
