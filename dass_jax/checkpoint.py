"""Converted-model checkpoints: a folder with `config.json` (model type + config) and `params/`
(an orbax checkpoint of the Flax params tree).

    model, params, config = dass_jax.load_model("converted/dass_small")
    logits = model.apply({"params": params}, fbank)            # fbank: (batch, frames, 128)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dass_jax.config import AstConfig, DassConfig, config_from_dict

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
# Keys of config.json that describe where a checkpoint came from rather than the architecture.
METADATA_KEYS = frozenset({"source", "source_format", "labels"})


def build_model(config):
  """The Flax module for a config (DassConfig -> DASS, AstConfig -> AST)."""
  if isinstance(config, DassConfig):
    from dass_jax.dass import DASS

    return DASS(config)
  if isinstance(config, AstConfig):
    from dass_jax.ast import AST

    return AST(config)
  raise TypeError(f"no model for config type {type(config).__name__}")


def refuse_existing(out_dir: str | os.PathLike) -> None:
  """Raises FileExistsError if `out_dir` already holds a converted checkpoint; touches nothing."""
  out = Path(out_dir).absolute()
  if (out / PARAMS_DIR).exists() or (out / CONFIG_FILE).exists():
    raise FileExistsError(f"{out} already holds a converted checkpoint; choose another folder")


def save_converted(
  out_dir: str | os.PathLike, config, params: Any, extra: dict[str, Any] | None = None
) -> Path:
  """Writes `config.json` and an orbax `params/` checkpoint into `out_dir`.

  `extra` holds metadata stored beside the config (keys in METADATA_KEYS: source, source_format,
  labels). Refuses to overwrite an existing checkpoint so that nothing already written is lost.
  """
  import orbax.checkpoint as ocp

  unknown = set(extra or {}) - METADATA_KEYS
  if unknown:
    raise ValueError(
      f"unknown checkpoint metadata keys {sorted(unknown)}; allowed: {sorted(METADATA_KEYS)}"
    )
  refuse_existing(out_dir)
  out = Path(out_dir).absolute()
  out.mkdir(parents=True, exist_ok=True)
  params = jax.tree.map(np.asarray, params)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(out / PARAMS_DIR, params)
    ckptr.wait_until_finished()
  meta = {**config.to_dict(), **(extra or {})}
  (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
  return out


def load_config(ckpt_dir: str | os.PathLike):
  path = Path(ckpt_dir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: is {ckpt_dir} a folder written by convert_torch?")
  meta = json.loads(path.read_text())
  return config_from_dict({k: v for k, v in meta.items() if k not in METADATA_KEYS})


def load_model(ckpt_dir: str | os.PathLike, **config_overrides):
  """Loads a converted checkpoint as (module, params, config), params as numpy arrays.

  `config_overrides` replace config fields that do not change the params (e.g. scan_impl, dtype).
  """
  import dataclasses

  import orbax.checkpoint as ocp

  config = load_config(ckpt_dir)
  if config_overrides:
    config = dataclasses.replace(config, **config_overrides)
  model = build_model(config)
  path = Path(ckpt_dir).absolute() / PARAMS_DIR
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(path)
  return model, params, config
