r"""The quickstart over several seeds: is a distilled student's gain over the plain one real?

    python -m experiments.quickstart_seeds --config experiments/configs/quickstart.py \
        --workdir work_dirs/quickstart_seeds --seeds 0,1,2,3,4

Runs the whole quickstart (`experiments.quickstart`: teacher -> student_kd, student_nokd, and any
extra stages the config adds) once per seed in DIR/seed<s>/ (config.seed = s: initialisation, data
order, augmentation and stochastic depth change; the dataset and its splits stay the same), then
prints and writes DIR/quickstart_seeds.json with, for every stage the runs have:

  * per-seed test mAP (and valid mAP) of the model each stage chose on valid, and mean ± sample
    std over the seeds;
  * for every student stage other than `student_nokd`, its paired gain over `student_nokd` on
    test (seed by seed: same seed, same data order), with mean ± std, min and max, a one-sided
    paired t-test (H1: gain > 0; t, degrees of freedom n - 1, p), the sign count (seeds with a
    positive gain, and its one-sided binomial p) and the one-sided Wilcoxon signed-rank test
    (exact p for small n), and a verdict at the 5 % level stated plainly whatever it is.

Every seed's folder resumes like the quickstart, so an interrupted run continues where it stopped.
The other flags are experiments.train's (--compilation_cache_dir, `--config.a.b=value` overrides).
"""

from __future__ import annotations

import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags
from scipy import stats

from dass_jax import files
from experiments import quickstart, train

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds to run, comma-separated.")
RESULTS_FILE = "quickstart_seeds.json"
BASELINE = "student_nokd"  # the student every other student is compared with, seed by seed
ALPHA = 0.05  # one-sided level of the verdicts


def _mean_std(values: list[float]) -> dict[str, float]:
  return {
    "mean": float(np.mean(values)),
    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
  }


def paired_gain(better: list[float], base: list[float]) -> dict:
  """Seed-by-seed gain `better - base` with its spread and one-sided tests of gain > 0.

  Returns {"per_seed", "mean", "std", "min", "max", "n", "t", "df", "p_t", "positive",
  "p_sign", "p_wilcoxon", "significant"}; p values are None where a test is undefined (fewer
  than two seeds, or every gain equal for the t-test / zero for Wilcoxon).
  """
  gains = [b - a for b, a in zip(better, base, strict=True)]
  n = len(gains)
  out = {"per_seed": gains, **_mean_std(gains), "min": min(gains), "max": max(gains), "n": n}
  out["positive"] = sum(g > 0 for g in gains)
  out["t"] = out["p_t"] = out["p_wilcoxon"] = None
  out["df"] = n - 1
  if n > 1 and out["std"] > 0:
    test = stats.ttest_rel(better, base, alternative="greater")
    out["t"], out["p_t"] = float(test.statistic), float(test.pvalue)
  nonzero = sum(g != 0 for g in gains)
  out["p_sign"] = (
    float(stats.binomtest(out["positive"], nonzero, 0.5, "greater").pvalue) if (nonzero) else None
  )
  if nonzero:
    out["p_wilcoxon"] = float(stats.wilcoxon(gains, alternative="greater").pvalue)
  out["significant"] = out["p_t"] is not None and out["p_t"] < ALPHA
  return out


def _verdict(name: str, gain: dict) -> str:
  n = gain["n"]
  spread = f"{gain['mean']:+.4f} ± {gain['std']:.4f} test mAP (min {gain['min']:+.4f}, max "
  spread += f"{gain['max']:+.4f}) over {n} seeds"
  if gain["p_t"] is None:
    t_test = "paired t-test undefined (fewer than two seeds or identical gains)"
  else:
    t_test = f"one-sided paired t-test t({gain['df']}) = {gain['t']:.2f}, p = {gain['p_t']:.3f}"
  tests = f"{t_test}; better in {gain['positive']}/{n} seeds"
  if gain["p_sign"] is not None:
    tests += f" (sign test p = {gain['p_sign']:.3f}"
    if gain["p_wilcoxon"] is not None:
      tests += f", Wilcoxon signed-rank p = {gain['p_wilcoxon']:.3f}"
    tests += ")"
  if gain["significant"]:
    return f"{name} vs {BASELINE}: {spread}; significant at 5 % ({tests})"
  return f"{name} vs {BASELINE}: {spread}; NOT significant at 5 %: within seed noise ({tests})"


def summarize(per_seed: dict[int, dict[str, float]], valid: dict | None = None) -> dict:
  """Mean ± std of every stage's test mAP and each student's paired gain over `student_nokd`.

  Args:
    per_seed: {seed: {stage: test mAP}}; every seed must have the same stages.
    valid: {seed: {stage: valid mAP}} (optional), summarised the same way.

  Returns:
    {"seeds", "stages": {stage: {"mean", "std"}}, "valid_stages" (with `valid`),
    "gains": {student: `paired_gain(...)`}, "verdicts": [one line per student]}.
  """
  seeds = sorted(per_seed)
  names = list(per_seed[seeds[0]])
  if any(list(per_seed[s]) != names for s in seeds):
    raise ValueError(
      f"the seeds' runs have different stages: { {s: list(per_seed[s]) for s in seeds} }"
    )
  out = {
    "seeds": seeds,
    "stages": {name: _mean_std([per_seed[s][name] for s in seeds]) for name in names},
  }
  if valid is not None:
    out["valid_stages"] = {name: _mean_std([valid[s][name] for s in seeds]) for name in names}
  out["gains"] = {}
  if BASELINE in names:
    base = [per_seed[s][BASELINE] for s in seeds]
    for name in names:
      if name.startswith("student") and name != BASELINE:
        out["gains"][name] = paired_gain([per_seed[s][name] for s in seeds], base)
  out["verdicts"] = [_verdict(name, gain) for name, gain in out["gains"].items()]
  return out


def format_table(per_seed: dict[int, dict[str, float]], summary: dict) -> list[str]:
  """Per-seed test mAP of every stage, mean ± std, each paired gain, and the verdicts."""
  seeds = summary["seeds"]
  width = max([14] + [len(f"{name} - nokd") + 1 for name in summary["stages"]])
  head = f"{'test mAP':<{width}}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds)
  lines = [head + f"{'mean ± std':>18}"]
  for name, m in summary["stages"].items():
    cells = "".join(f"{per_seed[s][name]:9.4f}" for s in seeds)
    lines.append(f"{name:<{width}}{cells}{m['mean']:>10.4f} ± {m['std']:.4f}")
  for name, gain in summary["gains"].items():
    cells = "".join(f"{g:+9.4f}" for g in gain["per_seed"])
    label = f"{name} - nokd"
    lines.append(f"{label:<{width}}{cells}{gain['mean']:>+10.4f} ± {gain['std']:.4f}")
  lines.extend(summary["verdicts"])
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
  per_seed, valid, runs = {}, {}, {}
  try:
    for seed in seeds:
      seed_config = ml_collections.ConfigDict(config.to_dict())
      seed_config.seed = seed
      runs[seed] = quickstart.run(
        seed_config, os.path.join(workdir, f"seed{seed}"), train.train_and_evaluate
      )
      stages = runs[seed]["stages"]
      per_seed[seed] = {name: stage["mAP"] for name, stage in stages.items()}
      valid[seed] = {name: stage["valid"]["mAP"] for name, stage in stages.items()}
  except train.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  summary = summarize(per_seed, valid)
  summary["per_seed"] = {str(s): per_seed[s] for s in seeds}
  summary["per_seed_valid"] = {str(s): valid[s] for s in seeds}
  summary["seconds"] = {str(s): runs[s]["seconds"] for s in seeds}
  if jax.process_index() == 0:
    print("\n".join(format_table(per_seed, summary)), flush=True)
    files.write_json(os.path.join(workdir, RESULTS_FILE), summary)
  return 0


if __name__ == "__main__":
  app.run(main)
