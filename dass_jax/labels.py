"""AudioSet class labels: the 527-class `class_labels_indices.csv` shipped with the package.

The CSV (AudioSet ontology, CC BY 4.0) has a header `index,mid,display_name` and one row per class,
e.g. `0,/m/09x0r,"Speech"`; row i is output i of an AudioSet classifier (AST, DASS).
"""

from __future__ import annotations

import csv
import importlib.resources
import os

AUDIOSET_NUM_CLASSES = 527
_HEADER = ["index", "mid", "display_name"]


def default_label_csv() -> str:
  """Path of the bundled AudioSet class_labels_indices.csv."""
  return str(importlib.resources.files("dass_jax") / "assets" / "class_labels_indices.csv")


def load_label_csv(path: str | os.PathLike | None = None) -> list[tuple[int, str, str]]:
  """Reads a class_labels_indices.csv.

  Args:
    path: CSV with header index,mid,display_name; None for the bundled AudioSet file.

  Returns:
    [(index, mid, display_name)] in row order; indices are 0..n-1 in order.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: wrong header, malformed row, or indices not 0..n-1 in order.
  """
  path = os.fspath(path) if path is not None else default_label_csv()
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header != _HEADER:
      raise ValueError(f"{path}: expected header {','.join(_HEADER)}, got {header}")
    rows = []
    for line, row in enumerate(reader, start=2):
      if len(row) != 3 or not row[0].strip().isdigit():
        raise ValueError(f"{path}:{line}: expected 'index,mid,display_name', got {row}")
      index = int(row[0])
      if index != len(rows):
        raise ValueError(f"{path}:{line}: index {index} out of order, expected {len(rows)}")
      rows.append((index, row[1], row[2]))
  if not rows:
    raise ValueError(f"{path}: no label rows")
  return rows


def class_names(num_classes: int) -> list[str]:
  """Display names for a classifier's outputs: AudioSet names for 527 classes, else 'class_<i>'."""
  if num_classes <= 0:
    raise ValueError(f"num_classes must be positive, got {num_classes}")
  if num_classes == AUDIOSET_NUM_CLASSES:
    return [name for _, _, name in load_label_csv()]
  return [f"class_{i}" for i in range(num_classes)]


def mid_to_index(path: str | os.PathLike | None = None) -> dict[str, int]:
  """Maps ontology ids ('/m/09x0r') to class indices (AudioSet label strings -> targets)."""
  return {mid: index for index, mid, _ in load_label_csv(path)}
