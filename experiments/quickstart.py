"""The quickstart: teacher, distilled student and plain student on the embedded synthetic data.

Run by `python -m experiments.train --config experiments/configs/quickstart.py --workdir DIR`
(the config's `quickstart` section sends `experiments.train` here). Stages, each an ordinary
`experiments.train` run in its own subfolder (so an interrupted quickstart resumes stage by stage):

  1. generate (or reuse) the synthetic dataset (`dass_jax.data.synthetic.ensure_dataset`) with
     three splits: train (weak labels), valid and test (complete labels);
  2. DIR/teacher:      a small AST trained on its labels;
  3. DIR/student_kd:   a small DASS distilled from that teacher (the teacher's logits on the
                       clean training clips computed once into DIR/student_kd/teacher_logits.npy:
                       the students' input is not augmented, so this is the online teacher's
                       update, `experiments.teacher`);
  4. DIR/student_nokd: the same DASS with the same recipe and no teacher;
  5. a table of metrics, printed and written to DIR/quickstart.json, and the learning
     curves (training loss and valid mAP against the step, one line per stage) drawn into
     DIR/quickstart_curves.png.

Splits. Every choice is made on valid: each stage evaluates on valid during training and keeps
its best-on-valid model (`experiments.train`, `config.select`); the recipe (epochs, KD weight,
augmentation) was chosen on valid figures (docs/quickstart.md). The test clips are evaluated once
per stage, on the chosen model, after training.

quickstart.json: {"stages": {stage: {"mAP", "mAUC", "d_prime", "accuracy", "num_examples",
"valid", "seconds", "steps", "num_params", "examples_per_sec", "curves": `stage_curves(...)`}},
"seconds",
"chance_map", "dataset", "curves_png", "seed"}. The stage metrics ("mAP", ...) are on the test
split; "valid" holds the same metrics on valid; "valid_map" in "curves" is every evaluation on
valid during training. "chance_map" is the expected mAP of random scores on test.
"examples_per_sec" is the median training throughput of a stage over its logging intervals after
the first (which includes compilation).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from dass_jax import data, files
from dass_jax.data import synthetic
from experiments import logging_utils, quickstart_variants

RESULTS_FILE = "quickstart.json"
CURVES_FILE = "quickstart_curves.png"
STAGES = ("teacher", "student_kd", "student_nokd")
# The distilled student's teacher logits (inside its stage folder).
TEACHER_CACHE = "teacher_logits.npy"
# metrics.jsonl key of the valid mAP, logged at every evaluation during training.
VALID_MAP_KEY = "valid/mAP"


def stage_configs(
  config: ml_collections.ConfigDict, workdir: str, ds: synthetic.SyntheticDataset
) -> dict[str, ml_collections.ConfigDict]:
  """The three train configs (teacher, student_kd, student_nokd) of a quickstart config."""
  fields = config.to_dict()
  qs = ml_collections.ConfigDict(fields.pop("quickstart"))
  base = ml_collections.ConfigDict(fields)
  if not ds.valid_datafile:
    raise ValueError(f"the quickstart needs a valid split; {ds.root} has none (num_valid 0)")
  # The test split is read like the valid one (same frames, threads), without a feature cache.
  base.test.input = ml_collections.ConfigDict(base.evals.input.to_dict())
  for section in (base.input, base.evals.input, base.test.input):
    section.label_csv = ds.label_csv
  base.input.datafile = ds.train_datafile
  base.evals.input.datafile = ds.valid_datafile
  base.test.input.datafile = ds.eval_datafile

  teacher = ml_collections.ConfigDict(base.to_dict())
  teacher.model_type = qs.teacher.model_type
  teacher.model = ml_collections.ConfigDict(qs.teacher.model.to_dict())
  teacher.num_epochs = qs.teacher.num_epochs
  for field, value in qs.teacher.input.items():  # the teacher's own augmentation
    teacher.input[field] = value
  teacher.optim.lr = qs.teacher.lr
  teacher.wa_start, teacher.wa_end = qs.teacher.wa_start, qs.teacher.wa_end
  teacher.teacher.path = ""
  student_kd = ml_collections.ConfigDict(base.to_dict())
  student_kd.teacher.path = os.path.join(workdir, "teacher")
  student_kd.teacher.cache = os.path.join(workdir, "student_kd", TEACHER_CACHE)
  student_nokd = ml_collections.ConfigDict(base.to_dict())
  student_nokd.teacher.path = ""
  return {"teacher": teacher, "student_kd": student_kd, "student_nokd": student_nokd}


def ensure_dataset(config: ml_collections.ConfigDict) -> synthetic.SyntheticDataset:
  """The synthetic dataset of a quickstart config's `quickstart` section (generated on first use):
  its training datafile with the weak labels of `missing_label_rate`, `valid_datafile` the valid
  split and `eval_datafile` the test split."""
  qs = config.quickstart
  return synthetic.ensure_dataset(
    qs.dataset_dir or None,
    seed=qs.dataset_seed,
    num_train=qs.num_train,
    num_valid=qs.num_valid,
    num_eval=qs.num_test,
    clip_seconds=qs.clip_seconds,
    missing_label_rate=qs.missing_label_rate,
  )


def chance_map(ds: synthetic.SyntheticDataset) -> float:
  """Expected mAP of random scores: the mean over classes of the positive rate in test."""
  labels = data.read_label_csv(ds.label_csv)
  entries = data.read_datafile(ds.eval_datafile)
  counts = dict.fromkeys(labels.mids, 0)
  for entry in entries:
    for mid in entry.labels:
      counts[mid] += 1
  return sum(counts.values()) / (len(counts) * len(entries))


def _metrics(results: dict) -> dict:
  """A stage's figures: the test metrics of the model it chose on valid, and its valid metrics."""
  return {**results["test"], "valid": results["valid"]}


def stage_curves(rows: list[dict]) -> dict[str, list[list[float]]]:
  """Learning curves from a stage's metrics.jsonl rows (`logging_utils.read_metrics`).

  Returns {"train_loss": [[step, loss], ...], "train_label_loss": [[step, loss], ...],
  "valid_map": [[step, mAP], ...]}, sorted by step. "train_loss" is the optimised loss (with a
  teacher: (1 - w) label loss + w KD loss), "train_label_loss" its label part (the whole loss
  without a teacher), comparable between stages. A step logged twice (a resumed run) keeps its
  last value.
  """
  curves = {}
  label_loss = "train/loss_label" if any("train/loss_label" in r for r in rows) else "train/loss"
  for name, keys in (
    ("train_loss", ("train/loss",)),
    ("train_label_loss", (label_loss,)),
    ("valid_map", (VALID_MAP_KEY,)),
  ):
    points = {}
    for row in rows:
      for key in keys:
        if key in row:
          points[int(row["step"])] = float(row[key])
    curves[name] = [[step, value] for step, value in sorted(points.items())]
  return curves


def plot_curves(curves: dict[str, dict], chance: float | None = None, path: str | None = None):
  """Training loss and valid mAP against the step, one line per stage.

  Args:
    curves: {stage: `stage_curves(...)`}.
    chance: mAP of random scores, drawn as a dotted line.
    path: PNG to write (None: only return the figure).

  Returns:
    The matplotlib figure (closed, so that it is not shown twice in notebooks).
  """
  import matplotlib

  if path is not None:
    matplotlib.use("Agg")  # Headless runs; a notebook displays the returned figure instead.
  import matplotlib.pyplot as plt

  fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 3.8))
  for name, stage in curves.items():
    if stage.get("train_label_loss"):
      ax_loss.plot(*zip(*stage["train_label_loss"], strict=True), label=name)
    if stage.get("valid_map"):
      ax_map.plot(*zip(*stage["valid_map"], strict=True), marker="o", markersize=3, label=name)
  if chance is not None:
    ax_map.axhline(chance, color="gray", linestyle=":", label="chance")
  ax_loss.set(xlabel="step", ylabel="label loss (BCE)", title="training loss (label part)")
  ax_map.set(xlabel="step", ylabel="mAP (valid)", title="valid mAP", ylim=(0, 1))
  for ax in (ax_loss, ax_map):
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend()
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=110)
  plt.close(fig)
  return fig


def format_table(stages: dict[str, dict]) -> list[str]:
  """One line per stage: valid mAP (what chose), then the test metrics, params and seconds."""
  lines = [
    f"{'model':<14} {'valid mAP':>9} {'test mAP':>9} {'mAUC':>7} {'d_prime':>8} {'params':>8} "
    f"{'seconds':>8}"
  ]
  for name, m in stages.items():
    lines.append(
      f"{name:<14} {m['valid']['mAP']:9.4f} {m['mAP']:9.4f} {m['mAUC']:7.4f} {m['d_prime']:8.3f} "
      f"{m['num_params'] / 1e6:7.2f}M {m['seconds']:8.0f}"
    )
  return lines


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], dict],
) -> dict:
  """Runs every stage (see the module docstring); returns the content of quickstart.json.

  `train_and_evaluate` is `experiments.train.train_and_evaluate` (passed in, so that this module
  does not import the flag-defining train module).
  """
  if not workdir:
    raise ValueError("no work directory: pass --workdir or set config.workdir")
  start = time.perf_counter()
  ds = ensure_dataset(config)
  logging.info("synthetic dataset at %s (%.0f s)", ds.root, time.perf_counter() - start)
  table = {}
  stages = stage_configs(config, workdir, ds)
  stages.update(quickstart_variants.extra_stages(config, workdir, stages))
  for name, cfg in stages.items():
    stage_start = time.perf_counter()
    logging.info("quickstart stage %s", name)
    stage_dir = os.path.join(workdir, name)
    results = train_and_evaluate(cfg, stage_dir)
    rows = logging_utils.read_metrics(stage_dir)
    throughput = [r["train/examples_per_sec"] for r in rows if "train/examples_per_sec" in r]
    table[name] = {
      **_metrics(results),
      "seconds": time.perf_counter() - stage_start,
      "steps": results["steps"],
      "num_params": results["num_params"],
      "examples_per_sec": float(np.median(throughput[1:] or throughput or [0.0])),
      "curves": stage_curves(rows),
    }
  total = time.perf_counter() - start
  chance = chance_map(ds)
  summary = {
    "stages": table,
    "seconds": total,
    "chance_map": chance,
    "dataset": ds.root,
    "curves_png": CURVES_FILE,
    "seed": config.seed,
  }
  if jax.process_index() == 0:
    plot_curves(
      {name: m["curves"] for name, m in table.items()},
      chance,
      os.path.join(workdir, CURVES_FILE),
    )
    lines = format_table(table)
    lines.append(f"total {total:.0f} s; chance test mAP (random scores) ~ {chance:.3f}")
    lines.append(f"learning curves: {os.path.join(workdir, CURVES_FILE)}")
    print("\n".join(lines), flush=True)
    files.write_json(os.path.join(workdir, RESULTS_FILE), summary)
  return summary
