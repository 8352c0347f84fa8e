"""Balanced sampling as in AST: per-example weights and a seeded sampler drawing by weight.

Label weight = 1000 / (count of the label in the datafile + 0.01); example weight = sum of the
weights of its labels. The weights file is a CSV with one float per datafile row.

CLI: `python -m dass_jax.data.balanced DATAFILE LABEL_CSV OUT.csv`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from dass_jax import labels as labels_lib
from dass_jax.data import datafile as datafile_lib


def sample_weights(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
  """AST's weights.

  Args:
    labels: class indices of each example.
    num_classes: number of classes.

  Returns:
    (num_examples,) float64 weights.
  """
  counts = np.zeros(num_classes, np.float64)
  for row in labels:
    np.add.at(counts, np.asarray(row, np.int64), 1.0)
  label_weight = 1000.0 / (counts + 0.01)
  return np.array([label_weight[np.asarray(row, np.int64)].sum() for row in labels])


def write_weights(path: str | os.PathLike, weights: np.ndarray) -> None:
  np.savetxt(path, weights, delimiter=",", fmt="%.18e")


def read_weights(path: str | os.PathLike, num_examples: int) -> np.ndarray:
  """Reads a weights CSV and checks it has one positive weight per example."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  try:
    weights = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=1)
  except ValueError as e:
    raise ValueError(f"weights file {path} is not a CSV of numbers: {e}") from e
  if weights.shape != (num_examples,):
    raise ValueError(
      f"weights file {path} has {weights.size} values, the datafile {num_examples} rows"
    )
  if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"weights file {path} needs finite, non-negative weights with a positive sum")
  return weights


def draw(weights: np.ndarray, num: int, seed: int, epoch: int) -> np.ndarray:
  """`num` example indices drawn with replacement, probability proportional to `weights`.

  Deterministic in (seed, epoch); (num,) int64.
  """
  rng = np.random.default_rng([seed, epoch, 1])
  return rng.choice(weights.shape[0], size=num, replace=True, p=weights / weights.sum())


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m dass_jax.data.balanced",
    description="Writes AST's balanced-sampling weights (one per datafile row) to a CSV.",
  )
  parser.add_argument("datafile", help="JSON datafile")
  parser.add_argument("label_csv", help="class_labels_indices.csv")
  parser.add_argument("out", help="output CSV")
  args = parser.parse_args(argv)
  try:
    labels = labels_lib.read_label_csv(args.label_csv)
    entries = datafile_lib.read_datafile(args.datafile)
    indices = datafile_lib.label_indices(entries, labels, source=args.datafile)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  weights = sample_weights(indices, len(labels))
  write_weights(args.out, weights)
  print(
    f"wrote {len(weights)} weights to {args.out} (min {weights.min():.4g}, max {weights.max():.4g})"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
