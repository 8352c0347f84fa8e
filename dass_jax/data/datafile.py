"""AST/DASS datafiles: the JSON list of clips and the label CSV.

Datafile: `{"data": [{"wav": "clips/a.wav", "labels": "/m/09x0r,/m/05zppz"}, ...]}`; a relative wav
path is relative to the datafile's folder. Rows may also carry a "fold" and a "group" string
(written by `python -m dass_jax.prepare`: the dataset's fold, the speaker or source recording);
the training pipeline ignores them, `experiments.probe` cross-validates over folds.

Label CSV: header `index,mid,display_name`, one row per class, indices 0..C-1 in order (read and
written by `dass_jax.labels`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from dass_jax import files
from dass_jax import labels as labels_lib


@dataclasses.dataclass(frozen=True)
class Entry:
  """One datafile row: an absolute wav path, its label mids, and optionally its fold and group."""

  wav: str
  labels: tuple[str, ...]
  fold: str | None = None
  group: str | None = None


def num_classes_from_csv(path: str | os.PathLike) -> int:
  """Number of classes in a label CSV."""
  return len(labels_lib.read_label_csv(path))


def read_datafile(path: str | os.PathLike) -> list[Entry]:
  """Reads a JSON datafile; wav paths come back absolute."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"datafile not found: {path}")
  with open(path, encoding="utf-8") as f:
    try:
      content = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"datafile {path} is not valid JSON: {e}") from e
  if not isinstance(content, dict) or not isinstance(content.get("data"), list):
    raise ValueError(f"datafile {path} must be a JSON object with a 'data' list")
  root = os.path.dirname(os.path.abspath(path))
  entries = []
  for i, item in enumerate(content["data"]):
    if not isinstance(item, dict) or not isinstance(item.get("wav"), str):
      raise ValueError(f"datafile {path} row {i}: needs a 'wav' string, got {item!r}")
    labels = item.get("labels", "")
    if not isinstance(labels, str):
      raise ValueError(f"datafile {path} row {i}: 'labels' must be a comma-separated string")
    mids = tuple(m.strip() for m in labels.split(",") if m.strip())
    extra = {k: str(item[k]) for k in ("fold", "group") if item.get(k) is not None}
    entries.append(Entry(wav=os.path.join(root, item["wav"]), labels=mids, **extra))
  return entries


def write_datafile(path: str | os.PathLike, entries: Sequence[Entry]) -> None:
  """Writes a JSON datafile (atomically); wav paths under its folder are stored relative to it."""
  root = os.path.dirname(os.path.abspath(path))

  def stored(wav: str) -> str:
    rel = os.path.relpath(os.path.abspath(wav), root)
    return wav if rel.startswith(os.pardir) else rel

  def row(e: Entry) -> dict[str, str]:
    out = {"wav": stored(e.wav), "labels": ",".join(e.labels)}
    out.update({k: v for k, v in (("fold", e.fold), ("group", e.group)) if v is not None})
    return out

  data = [row(e) for e in entries]
  files.write_json(path, {"data": data}, indent=1)


def label_indices(
  entries: Sequence[Entry], labels: labels_lib.LabelSet, source: str = "datafile"
) -> list[tuple[int, ...]]:
  """Class indices of each entry; raises ValueError naming the first unknown mid."""
  index = labels.index_of()
  out = []
  for row, entry in enumerate(entries):
    try:
      out.append(tuple(index[mid] for mid in entry.labels))
    except KeyError as e:
      raise ValueError(
        f"{source} row {row} ({entry.wav}): label {e.args[0]!r} is not in the label CSV"
      ) from None
  return out
