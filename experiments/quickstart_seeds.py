r"""The quickstart over several seeds: is the distilled student's gain over the plain one real?

    python -m experiments.quickstart_seeds --config experiments/configs/quickstart.py \
        --workdir work_dirs/quickstart_seeds --seeds 0,1,2

Runs the whole quickstart (teacher -> student_kd, student_nokd; `experiments.quickstart`) once per
seed in DIR/seed<s>/ (config.seed = s: initialisation, data order, augmentation and stochastic
depth change; the dataset stays the same), then prints and writes DIR/quickstart_seeds.json:
per-seed held-out mAP of each stage, mean ± sample std over the seeds, and the paired gain of KD
(student_kd - student_nokd, seed by seed) with a one-sided paired t-test. Every seed's folder
resumes like the quickstart, so an interrupted run continues where it stopped. The other flags
are experiments.train's (--compilation_cache_dir, `--config.a.b=value` overrides).
"""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags

from experiments import quickstart, train

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run, comma-separated.")
RESULTS_FILE = "quickstart_seeds.json"
# One-sided 95 % critical values of Student's t for 1..10 degrees of freedom.
_T95_ONE_SIDED = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812)


def _mean_std(values: list[float]) -> dict[str, float]:
  return {
    "mean": float(np.mean(values)),
    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
  }


def summarize(per_seed: dict[int, dict[str, float]]) -> dict:
  """Mean ± std of each stage's mAP and the paired KD gain, from {seed: {stage: mAP}}."""
  seeds = sorted(per_seed)
  stages = {name: _mean_std([per_seed[s][name] for s in seeds]) for name in per_seed[seeds[0]]}
  gains = [per_seed[s]["student_kd"] - per_seed[s]["student_nokd"] for s in seeds]
  gain = {**_mean_std(gains), "per_seed": gains, "positive_seeds": sum(g > 0 for g in gains)}
  n = len(gains)
  if n > 1 and gain["std"] > 0:
    gain["t"] = gain["mean"] / (gain["std"] / math.sqrt(n))
    gain["t_crit_95"] = _T95_ONE_SIDED[min(n - 1, len(_T95_ONE_SIDED)) - 1]
    significant = gain["t"] > gain["t_crit_95"]
  else:
    significant = n > 1 and gain["mean"] > 0  # Identical gains in every seed.
  if significant:
    verdict = (
      f"KD helps: +{gain['mean']:.3f} ± {gain['std']:.3f} mAP over {n} seeds "
      f"(paired, one-sided t-test at 95 %; better in {gain['positive_seeds']}/{n} seeds)"
    )
  else:
    verdict = (
      f"KD's gain {gain['mean']:+.3f} ± {gain['std']:.3f} mAP over {n} seeds is within seed "
      f"noise (paired, one-sided t-test at 95 %; better in {gain['positive_seeds']}/{n} seeds)"
    )
  gain["significant"] = bool(significant)
  return {"seeds": seeds, "stages": stages, "kd_gain": gain, "verdict": verdict}


def format_table(per_seed: dict[int, dict[str, float]], summary: dict) -> list[str]:
  seeds = summary["seeds"]
  head = f"{'model':<14}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds)
  lines = [head + f"{'mean ± std':>18}"]
  for name in summary["stages"]:
    cells = "".join(f"{per_seed[s][name]:9.4f}" for s in seeds)
    m = summary["stages"][name]
    lines.append(f"{name:<14}{cells}{m['mean']:>10.4f} ± {m['std']:.4f}")
  gain = summary["kd_gain"]
  cells = "".join(f"{g:+9.4f}" for g in gain["per_seed"])
  lines.append(f"{'kd - nokd':<14}{cells}{gain['mean']:>+10.4f} ± {gain['std']:.4f}")
  lines.append(summary["verdict"])
  return lines


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  train.setup_run()
  config = train.resolved_config()
  if "quickstart" not in config:
    raise app.UsageError("--config must be a quickstart config (it has a `quickstart` section)")
  workdir = train.resolved_workdir(config)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError as e:
    raise app.UsageError(f"--seeds takes integers, got {_SEEDS.value}") from e
  if len(set(seeds)) != len(seeds) or not seeds:
    raise app.UsageError(f"--seeds must be distinct and non-empty, got {seeds}")
  per_seed, runs = {}, {}
  try:
    for seed in seeds:
      seed_config = ml_collections.ConfigDict(config.to_dict())
      seed_config.seed = seed
      runs[seed] = quickstart.run(
        seed_config, os.path.join(workdir, f"seed{seed}"), train.train_and_evaluate
      )
      per_seed[seed] = {name: stage["mAP"] for name, stage in runs[seed]["stages"].items()}
  except train.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  summary = summarize(per_seed)
  summary["per_seed"] = {str(s): per_seed[s] for s in seeds}
  summary["seconds"] = {str(s): runs[s]["seconds"] for s in seeds}
  if jax.process_index() == 0:
    print("\n".join(["held-out mAP", *format_table(per_seed, summary)]), flush=True)
    with open(os.path.join(workdir, RESULTS_FILE), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
  return 0


if __name__ == "__main__":
  app.run(main)
