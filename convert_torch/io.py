"""Reading PyTorch-side weight files into `{key: np.ndarray}` without unpickling objects.

Accepted: `.pth`/`.pt`/`.bin`/`.ckpt` (torch.load with weights_only=True) and `.safetensors`.
A top-level wrapper dict (`{"model": sd}`, `{"state_dict": sd}`) is unwrapped. `read_weights`
also takes a Hugging Face folder (weights + `config.json`). Checkpoints whose pickle holds
objects of training code (fairseq's) are read by `convert_torch.restricted_pickle` instead.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
# The weight files of a Hugging Face folder, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODULE_PREFIX = "module."


class ConversionError(ValueError):
  """A checkpoint does not fit the target architecture; the message lists what is wrong."""


def to_numpy(value, key: str) -> np.ndarray:
  """A torch tensor as a numpy array (bf16/fp16 widened to fp32); anything else is refused,
  naming the state-dict entry `key`."""
  import torch

  if not isinstance(value, torch.Tensor):
    raise ConversionError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
  tensor = value.detach().cpu()
  if tensor.dtype in (torch.bfloat16, torch.float16):
    tensor = tensor.float()
  return tensor.numpy()


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads a weight file into numpy arrays (bf16/fp16 widened to fp32)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint file not found: {path}")
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file

    try:
      return dict(load_file(str(path)))
    except Exception as e:  # safetensors raises its own error types
      if "bf16" not in str(e).lower() and "bfloat16" not in str(e).lower():
        raise ConversionError(f"{path}: not a readable safetensors file ({e})") from e
    from safetensors.torch import load_file as load_torch

    return {k: to_numpy(v, k) for k, v in load_torch(str(path)).items()}
  import torch

  try:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
    raise ConversionError(
      f"{path}: could not be loaded with torch.load(weights_only=True): {e}"
    ) from e
  if isinstance(obj, Mapping):
    for wrapper in WRAPPER_KEYS:
      inner = obj.get(wrapper)
      if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
        obj = inner
        break
  if not isinstance(obj, Mapping):
    raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")
  return {str(k): to_numpy(v, str(k)) for k, v in obj.items()}


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict | None]:
  """(state dict, config.json dict or None) of a weight file or a Hugging Face folder.

  A folder must hold one of WEIGHT_FILES (the first found is read); its `config.json`, when
  present, is returned parsed.
  """
  path = Path(path)
  if not path.is_dir():
    return load_state_dict(path), None
  weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
  if not weights:
    raise ConversionError(f"{path} holds none of {', '.join(WEIGHT_FILES)}")
  config_file = path / "config.json"
  try:
    hf = json.loads(config_file.read_text()) if config_file.is_file() else None
  except ValueError as e:
    raise ConversionError(f"{config_file}: not a readable JSON config ({e})") from e
  return load_state_dict(weights[0]), hf


def split_module_prefix(state_dict: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
  """(keys without DataParallel's `module.`, the prefix removed: 'module.' or '')."""
  if state_dict and all(k.startswith(MODULE_PREFIX) for k in state_dict):
    return {k[len(MODULE_PREFIX) :]: v for k, v in state_dict.items()}, MODULE_PREFIX
  return state_dict, ""


def check_keys(
  expected: Mapping[str, tuple[int, ...]], got: Mapping[str, np.ndarray], what: str
) -> None:
  """Raises ConversionError listing every missing, unexpected and mis-shaped key."""
  missing = sorted(set(expected) - set(got))
  unexpected = sorted(set(got) - set(expected))
  misshaped = sorted(
    f"{k}: file {tuple(got[k].shape)} vs model {tuple(expected[k])}"
    for k in set(expected) & set(got)
    if tuple(got[k].shape) != tuple(expected[k])
  )
  if missing or unexpected or misshaped:
    parts = [f"{what}: checkpoint does not fit the architecture"]
    for name, items in (
      ("missing", missing),
      ("unexpected", unexpected),
      ("mis-shaped", misshaped),
    ):
      if items:
        parts.append(f"  {len(items)} {name}:\n    " + "\n    ".join(items))
    raise ConversionError("\n".join(parts))
