"""Atomic writes: a file or folder appears complete or not at all.

Everything dass-jax writes that a later run or user reads (datafiles, configs, caches, converted
checkpoints, imported datasets) goes through these helpers. Each builds its result in a temporary
sibling (same folder, hence same file system) and renames it into place, so a run killed half-way
leaves the previous version, or nothing, never a partial one:

    write_json(path, obj)                   # also write_text, save_npy
    with atomic_file("out.npy") as tmp:     # any writer: np.save(tmp, x), plt.savefig(tmp), ...
      np.save(tmp, x)
    with atomic_folder("out_dir") as tmp:   # a whole folder
      (tmp / "a.json").write_text("...")

Temporary siblings are named `.tmp-<name>-<random>`; those left by runs killed over an hour ago are
removed the next time the same target is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

# Temporary siblings older than this are left-overs of killed runs.
STALE_AFTER_S = 3600.0


def remove_stale(folder: str | os.PathLike, prefix: str, max_age_s: float = STALE_AFTER_S) -> None:
  """Removes the files and folders `folder/prefix*` older than `max_age_s` (killed runs)."""
  now = time.time()
  for path in Path(folder).glob(f"{prefix}*"):
    try:
      if now - path.lstat().st_mtime <= max_age_s:
        continue
      if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
      else:
        path.unlink(missing_ok=True)
    except FileNotFoundError:  # removed by another process meanwhile
      continue


def _tmp_prefix(target: Path) -> str:
  return f".tmp-{target.name}-"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temporary sibling of `path` to write; renamed onto `path` when the block succeeds.

  The temporary name keeps `path`'s suffix (`np.save` and `savefig` go by it). On an exception the
  temporary file is removed and `path` keeps its previous content (or stays absent).
  """
  target = Path(path)
  folder = target.parent
  folder.mkdir(parents=True, exist_ok=True)
  remove_stale(folder, _tmp_prefix(target))
  fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=target.suffix, dir=folder)
  os.close(fd)
  tmp = Path(tmp_name)
  try:
    yield tmp
    os.replace(tmp, target)
  finally:
    tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  with atomic_file(path) as tmp:
    tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, **kwargs) -> None:
  """Writes `obj` as JSON (with a final newline) to `path` atomically."""
  write_text(path, json.dumps(obj, indent=indent, **kwargs) + "\n")


def save_npy(path: str | os.PathLike, array: Any) -> None:
  """`np.save(path, array)`, atomically (`path` should end in .npy)."""
  import numpy as np

  with atomic_file(path) as tmp:
    np.save(tmp, array)


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
  """Moves the complete folder `new` to `target`, replacing an existing `target`.

  A missing `target` is created by one rename. An existing one is first renamed aside, then `new`
  renamed in, then the old one removed: a reader sees the old folder or the new one, and the only
  moment with neither is between two renames (a run killed there leaves `new` under its temporary
  name and the old folder under `.tmp-<name>-old-*`, both cleaned up later as stale).
  """
  new, target = Path(new), Path(target)
  if not target.exists():
    os.rename(new, target)
    return
  old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target) + "old-", dir=target.parent))
  os.rmdir(old)
  os.rename(target, old)
  os.rename(new, target)
  shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
  path: str | os.PathLike, if_exists: Literal["error", "replace", "keep"] = "error"
) -> Iterator[Path]:
  """Yields a new temporary sibling folder of `path`; it becomes `path` when the block succeeds.

  Args:
    path: the folder to create.
    if_exists: what to do when `path` exists at the end of the block: "error" (FileExistsError;
      also checked before the block starts, so no work is wasted), "replace" (`replace_folder`),
      or "keep" (another process wrote the same content first: keep theirs, drop ours).

  On an exception the temporary folder is removed and `path` is untouched.
  """
  target = Path(path)
  if if_exists not in ("error", "replace", "keep"):
    raise ValueError(f"if_exists must be 'error', 'replace' or 'keep', got {if_exists!r}")
  if if_exists == "error" and target.exists():
    raise FileExistsError(f"{target} exists; choose another folder or remove it")
  target.parent.mkdir(parents=True, exist_ok=True)
  remove_stale(target.parent, _tmp_prefix(target))
  tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), dir=target.parent))
  try:
    yield tmp
    if if_exists == "replace":
      replace_folder(tmp, target)
    else:
      try:
        os.rename(tmp, target)
      except OSError:
        if not target.exists():
          raise
        if if_exists == "error":
          raise FileExistsError(f"{target} appeared while it was being written") from None
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
