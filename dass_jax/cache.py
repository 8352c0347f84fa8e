"""The user's cache: one folder for everything dass_jax writes once and reuses.

    $DASS_JAX_CACHE/<name>   when DASS_JAX_CACHE is set, else
    ~/.cache/dass_jax/<name>

Users of it: `synthetic` (the generated dataset), `hub` (Hugging Face hub files, in
huggingface_hub's own layout), `downloads` (files fetched from URLs) and `converted` (published
checkpoints converted on first use by `dass_jax.load_model`).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DASS_JAX_CACHE"


def cache_dir(name: str) -> Path:
  """The cache subfolder `name` (not created here)."""
  base = os.environ.get(CACHE_ENV)
  root = Path(base) if base else Path.home() / ".cache" / "dass_jax"
  return root / name
