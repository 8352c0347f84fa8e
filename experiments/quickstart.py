"""The quickstart: teacher, distilled student and plain student on the embedded synthetic data.

Run by `python -m experiments.train --config experiments/configs/quickstart.py --workdir DIR`
(the config's `quickstart` section sends `experiments.train` here). Stages, each an ordinary
`experiments.train` run in its own subfolder (so an interrupted quickstart resumes stage by stage):

  1. generate (or reuse) the synthetic dataset (`dass_jax.data.synthetic.ensure_dataset`);
  2. DIR/teacher:      a small AST trained on its labels;
  3. DIR/student_kd:   a small DASS distilled from that teacher (online teacher in the step);
  4. DIR/student_nokd: the same DASS with the same recipe and no teacher;
  5. a table of held-out metrics, printed and written to DIR/quickstart.json.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

import jax
import ml_collections

from dass_jax import data
from dass_jax.data import synthetic

RESULTS_FILE = "quickstart.json"


def stage_configs(
  config: ml_collections.ConfigDict, workdir: str, ds: synthetic.SyntheticDataset
) -> dict[str, ml_collections.ConfigDict]:
  """The three train configs (teacher, student_kd, student_nokd) of a quickstart config."""
  fields = config.to_dict()
  qs = ml_collections.ConfigDict(fields.pop("quickstart"))
  base = ml_collections.ConfigDict(fields)
  for section in (base.input, base.evals.input):
    section.label_csv = ds.label_csv
  base.input.datafile = ds.train_datafile
  base.evals.input.datafile = ds.eval_datafile

  teacher = ml_collections.ConfigDict(base.to_dict())
  teacher.model_type = qs.teacher.model_type
  teacher.model = ml_collections.ConfigDict(qs.teacher.model.to_dict())
  teacher.num_epochs = qs.teacher.num_epochs
  teacher.optim.lr = qs.teacher.lr
  teacher.wa_start, teacher.wa_end = qs.teacher.wa_start, qs.teacher.wa_end
  teacher.teacher.path = ""
  student_kd = ml_collections.ConfigDict(base.to_dict())
  student_kd.teacher.path = os.path.join(workdir, "teacher")
  student_nokd = ml_collections.ConfigDict(base.to_dict())
  student_nokd.teacher.path = ""
  return {"teacher": teacher, "student_kd": student_kd, "student_nokd": student_nokd}


def _chance_map(ds: synthetic.SyntheticDataset) -> float:
  """Expected mAP of random scores: the mean over classes of the positive rate in eval."""
  labels = data.read_label_csv(ds.label_csv)
  entries = data.read_datafile(ds.eval_datafile)
  counts = dict.fromkeys(labels.mids, 0)
  for entry in entries:
    for mid in entry.labels:
      counts[mid] += 1
  return sum(counts.values()) / (len(counts) * len(entries))


def _metrics(results: dict) -> dict:
  return results.get("wa", results["final"])


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], dict],
) -> dict[str, dict]:
  """Runs every stage (see the module docstring); returns {stage: held-out metrics}.

  `train_and_evaluate` is `experiments.train.train_and_evaluate` (passed in, so that this module
  does not import the flag-defining train module).
  """
  if not workdir:
    raise ValueError("no work directory: pass --workdir or set config.workdir")
  start = time.perf_counter()
  qs = config.quickstart
  ds = synthetic.ensure_dataset(
    qs.dataset_dir or None,
    seed=qs.dataset_seed,
    num_train=qs.num_train,
    num_eval=qs.num_eval,
    clip_seconds=qs.clip_seconds,
  )
  logging.info("synthetic dataset at %s (%.0f s)", ds.root, time.perf_counter() - start)
  table = {}
  for name, cfg in stage_configs(config, workdir, ds).items():
    stage_start = time.perf_counter()
    logging.info("quickstart stage %s", name)
    table[name] = {
      **_metrics(train_and_evaluate(cfg, os.path.join(workdir, name))),
      "seconds": time.perf_counter() - stage_start,
    }
  total = time.perf_counter() - start
  lines = [f"{'model':<14} {'mAP':>7} {'mAUC':>7} {'d_prime':>8} {'seconds':>8}"]
  for name, m in table.items():
    lines.append(
      f"{name:<14} {m['mAP']:7.4f} {m['mAUC']:7.4f} {m['d_prime']:8.3f} {m['seconds']:8.0f}"
    )
  lines.append(f"total {total:.0f} s; chance mAP (random scores) ~ {_chance_map(ds):.3f}")
  if jax.process_index() == 0:
    print("\n".join(lines), flush=True)
    with open(os.path.join(workdir, RESULTS_FILE), "w", encoding="utf-8") as f:
      json.dump({"stages": table, "seconds": total, "dataset": ds.root}, f, indent=2)
  return table
