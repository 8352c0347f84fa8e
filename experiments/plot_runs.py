r"""Learning curves of `experiments.train` work directories side by side: training loss and a valid
metric against the epoch, one line per run, the chosen step marked.

    python -m experiments.plot_runs DASS=work_dirs/fsdd_dass AST=work_dirs/fsdd_ast \
        --metric accuracy --out docs/own_data_fsdd.png

Reads each run's metrics.jsonl (`train/loss`, `train/epoch`, `valid/<metric>`) and results.json
(the step chosen on valid).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dass_jax import files
from experiments import logging_utils


def curves(workdir: str, metric: str) -> dict[str, list[tuple[float, float]]]:
  """{"loss": [(epoch, train loss)], "valid": [(epoch, valid metric)]} of one run (a step logged
  twice, by a resumed run, keeps its last value)."""
  rows = logging_utils.read_metrics(workdir)
  epoch_of = {int(r["step"]): float(r["train/epoch"]) for r in rows if "train/epoch" in r}
  steps_per_epoch = max(epoch_of) / max(epoch_of.values()) if epoch_of else 1.0
  out = {}
  for name, key in (("loss", "train/loss"), ("valid", f"valid/{metric}")):
    points = {int(r["step"]): float(r[key]) for r in rows if key in r}
    out[name] = [(step / steps_per_epoch, value) for step, value in sorted(points.items())]
  results = os.path.join(workdir, "results.json")
  if os.path.isfile(results):
    with open(results, encoding="utf-8") as f:
      chosen = json.load(f)["selected"]["step"]
    out["chosen"] = [(chosen / steps_per_epoch, 0.0)]
  return out


def plot(runs: dict[str, str], metric: str, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(10, 3.6))
  for label, workdir in runs.items():
    c = curves(workdir, metric)
    (line,) = ax_loss.plot(*zip(*c["loss"], strict=True), label=label)
    ax_valid.plot(*zip(*c["valid"], strict=True), marker="o", markersize=2, label=label)
    for epoch, _ in c.get("chosen", []):
      ax_valid.axvline(epoch, color=line.get_color(), linestyle=":", linewidth=1)
  ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
  ax_valid.set(xlabel="epoch", ylabel=f"valid {metric}", title=f"valid {metric} (dotted: chosen)")
  for ax in (ax_loss, ax_valid):
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  with files.atomic_file(path) as tmp:
    fig.savefig(tmp, dpi=90)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.plot_runs", description=__doc__)
  parser.add_argument("runs", nargs="+", metavar="LABEL=WORKDIR")
  parser.add_argument("--metric", default="accuracy", help="valid metric (accuracy, mAP, ...)")
  parser.add_argument("--out", required=True, help="PNG to write")
  args = parser.parse_args(argv)
  runs = {}
  for item in args.runs:
    label, sep, workdir = item.partition("=")
    if not sep:
      parser.error(f"{item!r}: expected LABEL=WORKDIR")
    runs[label] = workdir
  plot(runs, args.metric, args.out)
  print(args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
