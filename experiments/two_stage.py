"""Teacher, then a student distilled from it, on the same data: two `experiments.train` runs.

A config with a `two_stage` section (e.g. `experiments/configs/own_data.py:OUT,kd`) is sent here by
`experiments.train`:

  1. DIR/teacher: the config with the fields of `two_stage.teacher` replacing its own (e.g.
     model_type, scratch_model, optim.lr) and no teacher: trained, chosen on valid, exported;
  2. DIR: the config itself, distilled from that export (`teacher.path = DIR/teacher`).

Each stage is an ordinary run in its own folder, so an interrupted run resumes stage by stage.
DIR/results.json is the student's (`experiments.train`), with the teacher's results added under
"teacher"; DIR/export is the student.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from dass_jax import files

TEACHER_DIR = "teacher"
RESULTS_FILE = "results.json"  # experiments.train's, which this module does not import


def _override(target: ml_collections.ConfigDict, fields: dict[str, Any], where: str) -> None:
  """Sets `fields` (nested dicts for sections) on `target`, refusing unknown names."""
  for name, value in fields.items():
    if name not in target:
      raise ValueError(f"two_stage.teacher.{where}{name} is not a config field")
    if isinstance(value, dict) and isinstance(target[name], ml_collections.ConfigDict):
      if name in ("model", "scratch_model"):  # a model's fields replace the section whole
        target[name] = ml_collections.ConfigDict(value)
      else:
        _override(target[name], value, f"{where}{name}.")
    else:
      target[name] = value


def stage_configs(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, tuple[ml_collections.ConfigDict, str]]:
  """{"teacher": (config, folder), "student": (config, folder)} of a two-stage config."""
  fields = config.to_dict()
  teacher_fields = fields.pop("two_stage")["teacher"]
  teacher = ml_collections.ConfigDict(fields)
  _override(teacher, teacher_fields, "")
  teacher.teacher.path = ""
  teacher.teacher.cache = ""
  student = ml_collections.ConfigDict(fields)
  teacher_dir = os.path.join(workdir, TEACHER_DIR)
  student.teacher.path = teacher_dir
  return {"teacher": (teacher, teacher_dir), "student": (student, workdir)}


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  train_and_evaluate: Callable[[ml_collections.ConfigDict, str], dict],
) -> dict:
  """Trains the teacher, then the student; returns the student's results with "teacher" added.

  `train_and_evaluate` is `experiments.train.train_and_evaluate` (passed in, so that this module
  does not import the flag-defining train module).
  """
  if not workdir:
    raise ValueError("no work directory: pass --workdir or set config.workdir")
  stages = stage_configs(config, workdir)
  teacher_config, teacher_dir = stages["teacher"]
  teacher_results = train_and_evaluate(teacher_config, teacher_dir)
  student_config, student_dir = stages["student"]
  results = {**train_and_evaluate(student_config, student_dir), "teacher": teacher_results}
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, RESULTS_FILE), results)
  return results
