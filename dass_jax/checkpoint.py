"""Converted-model checkpoints: a folder with `config.json` (model type + config + metadata) and
`params/` (an orbax checkpoint of the Flax params tree).

    model, params, config = dass_jax.load_model("converted/dass_small")
    logits = model.apply({"params": params}, fbank)            # fbank: (batch, frames, 128)

Written by the converters (`python -m convert_torch ...`) and by `experiments.train` (its `export/`
folders), always through `save_converted`, which builds the whole folder under a temporary sibling
name and renames it into place (`dass_jax.files.replace_folder`): a folder with a `config.json` is
a complete checkpoint, and an interrupted save leaves the previous one (or nothing).

`config.json` records `params_sha256`, a digest of the params tree (`params_digest`), so a reader
can tell whether the params it cached something for are still the ones in the folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np

from dass_jax import files
from dass_jax.constants import AUDIOSET_NUM_CLASSES
from dass_jax.models import ModelConfig, build_model, config_from_dict

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
# Keys of config.json that describe where a checkpoint came from rather than the architecture.
METADATA_KEYS = frozenset({"source", "source_format", "labels", "params_sha256", "training"})
# metadata["source"] of the exports of `experiments.train` (their "training" entry says how).
TRAINING_SOURCE = "experiments.train"
# Entries of a folder that an interrupted save of the pre-atomic layout could leave behind.
_PARTIAL_ENTRIES = frozenset({PARAMS_DIR, CONFIG_FILE + ".tmp"})


def params_digest(params: Any) -> str:
  """SHA-256 (hex) of a params tree: every leaf's '/'-joined path, dtype, shape and bytes.

  Equal trees give equal digests whatever their container types (dict, FrozenDict) or where the
  arrays live; any changed value, shape, dtype or name changes it.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  digest = hashlib.sha256()
  for name in sorted(flat):
    leaf = np.ascontiguousarray(np.asarray(jax.device_get(flat[name])))
    digest.update(f"{name}|{leaf.dtype.str}|{leaf.shape}\n".encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()


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
  overwrite: bool = False,
) -> Path:
  """Writes an orbax `params/` checkpoint and `config.json` into `out_dir`, atomically.

  The folder is built as `.tmp-<name>` beside `out_dir` and renamed into place when complete
  (replacing an older checkpoint when `overwrite`), so `out_dir` never holds a mix of two saves.

  Args:
    out_dir: the checkpoint folder. It may be absent, empty, a converted checkpoint (with
      `overwrite`) or what an interrupted save of older versions left (`params/` alone); any other
      existing content is refused rather than deleted.
    config: the model config (stored with its `model_type`).
    params: the Flax params tree: numpy arrays, or jax arrays that every process can read whole
      (e.g. replicated). In a multi-process run every process calls this with the same params;
      orbax coordinates the write and process 0 writes config.json and renames the folder.
    extra: metadata stored beside the config (keys in METADATA_KEYS: source, source_format,
      labels, training). `params_sha256` (`params_digest`) is always written.
    overwrite: replace an existing converted checkpoint in `out_dir`.

  Returns:
    The absolute folder path.

  Raises:
    ValueError: unknown metadata keys.
    FileExistsError: `out_dir` already holds a converted checkpoint and not `overwrite`, or holds
      something else (nothing is touched).
  """
  unknown = set(extra or {}) - METADATA_KEYS
  if unknown:
    raise ValueError(
      f"unknown checkpoint metadata keys {sorted(unknown)}; allowed: {sorted(METADATA_KEYS)}"
    )
  out = Path(out_dir).absolute()
  if not overwrite:
    refuse_existing(out)
  if out.is_dir() and not is_converted(out) and set(os.listdir(out)) - _PARTIAL_ENTRIES:
    raise FileExistsError(
      f"{out} exists and holds files that are not a converted checkpoint; choose another folder"
    )
  params = jax.tree.map(np.asarray, params)
  meta = {**config.to_dict(), **(extra or {}), "params_sha256": params_digest(params)}
  # One temporary name on every process (they write into the same folder).
  tmp = out.parent / f".tmp-{out.name}"
  main = jax.process_index() == 0
  if main:
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed save
  _sync("save_converted_start")
  ocp = _orbax()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp / PARAMS_DIR, params, force=True)
    ckptr.wait_until_finished()
  if main:
    files.write_json(tmp / CONFIG_FILE, meta)
    files.replace_folder(tmp, out)
  _sync("save_converted_done")
  return out


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def read_metadata(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
  """The whole config.json of a converted checkpoint (config fields and metadata)."""
  path = Path(ckpt_dir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: is {ckpt_dir} a folder written by convert_torch?")
  return json.loads(path.read_text())


def load_config(ckpt_dir: str | os.PathLike, converter: str | None = None) -> ModelConfig:
  """The model config of a converted checkpoint: a folder, or a name / hub id / URL (converted on
  first use, as `load_model`)."""
  meta = read_metadata(resolve(ckpt_dir, converter))
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


def resolve(ckpt_dir: str | os.PathLike, converter: str | None = None) -> Path:
  """The local checkpoint folder of `ckpt_dir`: the folder itself, or for a published name, hub id
  or URL the cached conversion (`convert_torch.converted`, converted on first use)."""
  if is_source_name(ckpt_dir):
    from convert_torch.converted import converted_folder

    return Path(converted_folder(os.fspath(ckpt_dir), converter))
  return Path(ckpt_dir)


def label_kind(meta: dict[str, Any]) -> str | None:
  """Whether a checkpoint's classes are multi-label ('bce': a sigmoid per class) or single-label
  ('ce': a softmax over the classes), from its metadata (`read_metadata`); None when unknown.

  A training export records it (`training.label_kind`, the run's `config.loss.label_kind`);
  a converted checkpoint with the 527 AudioSet classes is multi-label (AudioSet is); anything
  else (an export written before the label kind was recorded, another converted classifier such
  as Speech Commands) does not say.
  """
  recorded = (meta.get("training") or {}).get("label_kind")
  if recorded:
    return recorded
  if meta.get("source") != TRAINING_SOURCE and meta.get("num_classes") == AUDIOSET_NUM_CLASSES:
    return "bce"
  return None


def override_config(config: ModelConfig, **overrides) -> ModelConfig:
  """`config` with `overrides` applied, refusing any that would change what the params compute.

  Only the config class's `RUNTIME_FIELDS` may take another value (scan implementation, compute
  dtype, chunking, train-time regularisation, ...); every other field (widths, depths, heads,
  norm eps, patching, max_length, ...) describes the saved params and may only be given the value
  it has. For another input length of a fixed-length model use the registry's `with_max_length`,
  which resizes the position embeddings as well.

  Raises:
    ValueError: naming the field (see `load_model`).
  """
  cls = type(config)
  allowed = sorted(cls.RUNTIME_FIELDS)
  unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(config)})
  if unknown:
    raise ValueError(
      f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; fields that may be "
      f"overridden when loading a checkpoint: {allowed}"
    )
  changed = dataclasses.replace(config, **overrides)  # validated (and normalised) by the class
  for name in sorted(set(overrides) - cls.RUNTIME_FIELDS):
    if getattr(changed, name) != getattr(config, name):
      raise ValueError(
        f"{cls.__name__}.{name}={overrides[name]!r} would change what the checkpoint's params "
        f"compute (it holds {name}={getattr(config, name)!r}); only {allowed} may be overridden "
        "when loading (for another input length of AST / AuM use the registry's with_max_length)"
      )
  return changed


def load_model(ckpt_dir: str | os.PathLike, converter: str | None = None, **config_overrides):
  """Loads a converted checkpoint as (module, params, config), params as numpy arrays.

  Args:
    ckpt_dir: a folder written by `python -m convert_torch` (or a training export); or a published
      name (`python -m convert_torch --list`), `hf://OWNER/NAME[@REVISION]` or an `https://` URL,
      which is fetched and converted on first use into the user's cache and reused afterwards
      (`convert_torch.converted`; this needs the [torch] extra, the folder path does not).
    converter: the `convert_torch` subcommand for a hub id or URL that is not a published name.
    **config_overrides: config fields that change how the model computes, not what its params
      compute: the config class's `RUNTIME_FIELDS` (e.g. DASS's scan_impl, dtype,
      mlp_token_chunk; Dasheng's db_floor). Any other field may only be given its stored value.

  Raises:
    ValueError: an override names no field of the config, or changes a field outside
      `RUNTIME_FIELDS` (the message names it and lists the fields that may change).
  """
  ckpt_dir = resolve(ckpt_dir, converter)
  config = override_config(load_config(ckpt_dir), **config_overrides)
  model = build_model(config)
  ocp = _orbax()
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(Path(ckpt_dir).absolute() / PARAMS_DIR)
  return model, params, config
