"""Label CSVs (`class_labels_indices.csv`): the one reader and writer, and the bundled AudioSet set.

The CSV (AST's format) has a header `index,mid,display_name` and one row per class, e.g.
`0,/m/09x0r,"Speech"`; row i is output i of a classifier. The bundled file is the 527-class AudioSet
ontology (CC BY 4.0).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import os
import re

from dass_jax.constants import AUDIOSET_NUM_CLASSES

_HEADER = ["index", "mid", "display_name"]


@dataclasses.dataclass(frozen=True)
class LabelSet:
  """The classes of a label CSV in index order: `mids[i]` and `names[i]` describe output i."""

  mids: tuple[str, ...]
  names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.mids)

  def index_of(self) -> dict[str, int]:
    """Maps ontology ids ('/m/09x0r') to class indices."""
    return {mid: i for i, mid in enumerate(self.mids)}


def natural_key(name: str) -> list:
  """Sort key of class (or fold) names that orders digit runs by value: '2' before '10'."""
  return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def default_label_csv() -> str:
  """Path of the bundled AudioSet class_labels_indices.csv."""
  return str(importlib.resources.files("dass_jax") / "assets" / "class_labels_indices.csv")


def read_label_csv(path: str | os.PathLike | None = None) -> LabelSet:
  """Reads a label CSV.

  Args:
    path: CSV with header index,mid,display_name; None for the bundled AudioSet file.

  Returns:
    The LabelSet, indices 0..n-1 in order, mids stripped of surrounding blanks.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: wrong header, malformed row, indices not 0..n-1 in order, duplicate mids, no rows.
  """
  path = os.fspath(path) if path is not None else default_label_csv()
  if not os.path.isfile(path):
    raise FileNotFoundError(f"label CSV not found: {path}")
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header != _HEADER:
      raise ValueError(f"{path}: expected header {','.join(_HEADER)}, got {header}")
    mids, names = [], []
    for line, row in enumerate(reader, start=2):
      if len(row) != 3 or not row[0].strip().isdigit():
        raise ValueError(f"{path}:{line}: expected 'index,mid,display_name', got {row}")
      if int(row[0]) != len(mids):
        raise ValueError(f"{path}:{line}: index {int(row[0])} out of order, expected {len(mids)}")
      mids.append(row[1].strip())
      names.append(row[2])
  if not mids:
    raise ValueError(f"{path}: no label rows")
  if len(set(mids)) != len(mids):
    raise ValueError(f"{path}: duplicate mids")
  return LabelSet(mids=tuple(mids), names=tuple(names))


def write_label_csv(path: str | os.PathLike, labels: LabelSet) -> None:
  """Writes a label CSV with AST's header and quoting of display names."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(_HEADER)
    for i, (mid, name) in enumerate(zip(labels.mids, labels.names)):
      writer.writerow([i, mid, name])


def class_names(num_classes: int) -> list[str]:
  """Display names for a classifier's outputs: AudioSet names for 527 classes, else 'class_<i>'."""
  if num_classes <= 0:
    raise ValueError(f"num_classes must be positive, got {num_classes}")
  if num_classes == AUDIOSET_NUM_CLASSES:
    return list(read_label_csv().names)
  return [f"class_{i}" for i in range(num_classes)]
