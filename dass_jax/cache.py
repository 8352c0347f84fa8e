"""The user's cache: one folder for everything dass_jax writes once and reuses.

    $DASS_JAX_CACHE/<name>   when DASS_JAX_CACHE is set, else
    ~/.cache/dass_jax/<name>

Users of it: `synthetic` (the generated dataset), `hub` (Hugging Face hub files, in
huggingface_hub's own layout), `downloads` (files fetched from URLs) and `converted` (published
checkpoints converted on first use by `dass_jax.load_model`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

CACHE_ENV = "DASS_JAX_CACHE"


def cache_dir(name: str) -> Path:
  """The cache subfolder `name` (not created here)."""
  base = os.environ.get(CACHE_ENV)
  root = Path(base) if base else Path.home() / ".cache" / "dass_jax"
  return root / name


def remove_stale(folder: str | os.PathLike, prefix: str, max_age_s: float = 3600.0) -> None:
  """Removes the temporary folders `folder/prefix*` older than `max_age_s` (killed runs)."""
  now = time.time()
  for path in Path(folder).glob(f"{prefix}*"):
    if now - path.stat().st_mtime > max_age_s:
      shutil.rmtree(path, ignore_errors=True)
