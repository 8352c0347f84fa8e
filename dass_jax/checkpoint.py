"""Converted-model checkpoints: a folder with `config.json` (model type + config + metadata) and
`params/` (an orbax checkpoint of the Flax params tree).

    model, params, config = dass_jax.load_model("converted/dass_small")
    logits = model.apply({"params": params}, fbank)            # fbank: (batch, frames, 128)

Written by the converters (`python -m convert_torch ...`) and by `experiments.train` (its `export/`
folders), always through `save_converted`. `config.json` is written last, atomically, so a folder
with a `config.json` is a complete checkpoint; a `params/` left without one by an interrupted save
is overwritten by the next save.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dass_jax.models import ModelConfig, build_model, config_from_dict

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
# Keys of config.json that describe where a checkpoint came from rather than the architecture.
METADATA_KEYS = frozenset({"source", "source_format", "labels"})


def _orbax():
  """orbax.checkpoint, imported when a checkpoint is read or written: `import dass_jax` (and so
  the GPU check and inference from in-memory params) needs jax, flax and numpy only."""
  import orbax.checkpoint as ocp

  return ocp


def is_converted(folder: str | os.PathLike) -> bool:
  """Whether `folder` holds a complete converted checkpoint (its config.json exists)."""
  return (Path(folder) / CONFIG_FILE).is_file()


def refuse_existing(out_dir: str | os.PathLike) -> None:
  """Raises FileExistsError if `out_dir` already holds a converted checkpoint; touches nothing."""
  if is_converted(out_dir):
    raise FileExistsError(
      f"{Path(out_dir).absolute()} already holds a converted checkpoint; choose another folder"
    )


def save_converted(
  out_dir: str | os.PathLike,
  config: ModelConfig,
  params: Any,
  extra: dict[str, Any] | None = None,
) -> Path:
  """Writes an orbax `params/` checkpoint, then `config.json`, into `out_dir`.

  Args:
    out_dir: the checkpoint folder (created if needed).
    config: the model config (stored with its `model_type`).
    params: the Flax params tree: numpy arrays, or jax arrays that every process can read whole
      (e.g. replicated). In a multi-process run every process calls this with the same params;
      orbax coordinates the write and process 0 writes config.json.
    extra: metadata stored beside the config (keys in METADATA_KEYS: source, source_format,
      labels).

  Returns:
    The absolute folder path.

  Raises:
    ValueError: unknown metadata keys.
    FileExistsError: `out_dir` already holds a converted checkpoint (nothing is touched).
  """
  unknown = set(extra or {}) - METADATA_KEYS
  if unknown:
    raise ValueError(
      f"unknown checkpoint metadata keys {sorted(unknown)}; allowed: {sorted(METADATA_KEYS)}"
    )
  refuse_existing(out_dir)
  out = Path(out_dir).absolute()
  out.mkdir(parents=True, exist_ok=True)
  params = jax.tree.map(np.asarray, params)
  ocp = _orbax()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(out / PARAMS_DIR, params, force=True)
    ckptr.wait_until_finished()
  if jax.process_index() == 0:
    tmp = out / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps({**config.to_dict(), **(extra or {})}, indent=2) + "\n")
    os.replace(tmp, out / CONFIG_FILE)
  return out


def read_metadata(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
  """The whole config.json of a converted checkpoint (config fields and metadata)."""
  path = Path(ckpt_dir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: is {ckpt_dir} a folder written by convert_torch?")
  return json.loads(path.read_text())


def load_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
  """The model config of a converted checkpoint."""
  meta = read_metadata(ckpt_dir)
  return config_from_dict({k: v for k, v in meta.items() if k not in METADATA_KEYS})


def is_source_name(name: str | os.PathLike) -> bool:
  """Whether `name` is a published name, hub id or URL rather than a local folder.

  Reads `convert_torch.published` (pure Python, no torch) only when `name` is not a folder.
  """
  text = os.fspath(name)
  if Path(text).is_dir():
    return False
  if text.startswith(("hf://", "https://", "http://")):
    return True
  from convert_torch import published

  return published.find(text) is not None


def load_model(ckpt_dir: str | os.PathLike, converter: str | None = None, **config_overrides):
  """Loads a converted checkpoint as (module, params, config), params as numpy arrays.

  Args:
    ckpt_dir: a folder written by `python -m convert_torch` (or a training export); or a published
      name (`python -m convert_torch --list`), `hf://OWNER/NAME[@REVISION]` or an `https://` URL,
      which is fetched and converted on first use into the user's cache and reused afterwards
      (`convert_torch.converted`; this needs the [torch] extra, the folder path does not).
    converter: the `convert_torch` subcommand for a hub id or URL that is not a published name.
    **config_overrides: config fields that do not change the params (e.g. scan_impl, dtype).
  """
  if is_source_name(ckpt_dir):
    from convert_torch.converted import converted_folder

    ckpt_dir = converted_folder(os.fspath(ckpt_dir), converter)
  config = load_config(ckpt_dir)
  if config_overrides:
    config = dataclasses.replace(config, **config_overrides)
  model = build_model(config)
  ocp = _orbax()
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(Path(ckpt_dir).absolute() / PARAMS_DIR)
  return model, params, config
