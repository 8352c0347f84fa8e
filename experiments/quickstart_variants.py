"""Extra quickstart stages: the DASS recipe's other teachers, on the quickstart's data.

Named in `config.quickstart.extra_stages` (default none, so the quickstart stays fast) and run after
the quickstart's own stages, each in DIR/<name>, reported beside them (quickstart.json, the table,
the curves, `experiments.quickstart_seeds`):

  student_ema       the student distilled from its own exponential moving average (DASS
                    `--kd_teach_type self`), no other teacher;
  student_ensemble  the student distilled from an ensemble of the AST teacher and the no-KD DASS
                    student (DIR/teacher and DIR/student_nokd), their logits averaged.

Each is `student_kd`'s config (same student, recipe, data and KD loss) with only the teacher
changed. The EMA momentum is 0.98 rather than DASS's 0.999: DASS's 0.999 averages over ~1000
steps, about half an epoch of its balanced-set runs (1 700 steps per epoch); the quickstart's
epochs are 50 steps, and 0.98 averages over ~50 steps, one epoch. It is set from that ratio, not
tuned on any split.
"""

from __future__ import annotations

import os

import ml_collections

EMA_MOMENTUM = 0.98
STAGES = ("student_ema", "student_ensemble")


def extra_stages(
  config: ml_collections.ConfigDict, workdir: str, stages: dict[str, ml_collections.ConfigDict]
) -> dict[str, ml_collections.ConfigDict]:
  """The train configs of the stages named in `config.quickstart.extra_stages` (a tuple of names,
  or of comma-separated names), in that order.

  Args:
    config: the quickstart config.
    workdir: the quickstart's work directory (stage folders are its subfolders).
    stages: the quickstart's own stage configs (`quickstart.stage_configs`), which the extra
      stages start from and must run before them.
  """
  # `--config.quickstart.extra_stages=a,b` arrives as the one-element tuple ('a,b',).
  names = [n.strip() for item in config.quickstart.extra_stages for n in str(item).split(",")]
  names = [n for n in names if n]
  unknown = sorted(set(names) - set(STAGES))
  if unknown:
    raise ValueError(f"config.quickstart.extra_stages: unknown {unknown}; known: {STAGES}")
  out = {}
  for name in names:
    cfg = ml_collections.ConfigDict(stages["student_kd"].to_dict())
    cfg.teacher.path = ""
    cfg.teacher.cache = ""  # student_kd's cache holds the AST teacher's logits alone
    if name == "student_ema":
      cfg.teacher.kind = "ema"
      cfg.teacher.ema_momentum = EMA_MOMENTUM
    else:
      cfg.teacher.combine = "logits"
      for teacher in ("teacher", "student_nokd"):
        cfg.teacher.ensemble[teacher] = {
          "path": os.path.join(workdir, teacher),
          "cache": os.path.join(workdir, name, f"{teacher}_logits.npy"),
        }
    out[name] = cfg
  return out
