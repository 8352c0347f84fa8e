"""DASS PyTorch checkpoints -> (DassConfig, Flax params) and the `python -m convert_torch dass` CLI.

    python -m convert_torch dass DASS_small.pth converted/dass_small
    python -m convert_torch dass hf://saurabhati/DASS_small_AudioSet_47.2 converted/dass_small
    python -m convert_torch dass dass-small-47.2 converted/dass_small     # a published name
    model, params, config = dass_jax.load_model("converted/dass_small")

The input may be a local file or folder, a hub id, an https:// URL or a published name
(`convert_torch.sources`, `convert_torch.published`); remote ones are fetched into the user's
cache and verified first.

Accepted inputs (`.pth`/`.pt`/`.bin` via torch.load(weights_only=True), or `.safetensors`):
  * `module.v.…`: `DataParallel(DASS).state_dict()`, the published DASS_small.pth / DASS_medium.pth;
  * `v.…`: `DASS.state_dict()`; bare `patch_embed.…` (or `module.patch_embed.…`): the VSSM
    backbone's own state dict (DataParallel-wrapped);
  * the Hugging Face hub format (`model.safetensors`, or the folder holding it with its
    `config.json`), see `convert_torch.hf_dass`.

The architecture (depths, dims, d_state, dt_rank, ssm_ratio, mlp_ratio, num_classes) is read from
key names and shapes. The expected key -> shape set is then rebuilt from that config and compared
with the file: any missing, unexpected or mis-shaped tensor is a ConversionError listing them.
Finally the params tree is compared with the model's own abstract init
(`convert_torch.params.check_against_model`). The key -> Flax path table and the array transforms
are in the `dass_jax.models.dass` module docstring.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convert_torch import hf_dass
from convert_torch.io import ConversionError, check_keys, load_state_dict
from convert_torch.params import check_against_model, conv, copy, count_params, linear
from convert_torch.sources import SourceError, resolve
from dass_jax.checkpoint import refuse_existing, save_converted
from dass_jax.models import DassConfig

# Key prefixes in the order they are tried: DataParallel(DASS), DASS, DataParallel(VSSM), VSSM.
PREFIXES = ("module.v.", "v.", "module.", "")
ANCHOR_KEY = "patch_embed.0.weight"
FORMAT_NAMES = {
  "module.v.": "dass-dataparallel",
  "v.": "dass-module",
  "module.": "vssm-dataparallel",
  "": "vssm",
}
MEDIUM_DEPTHS = (2, 2, 20, 2)


Transform = Callable[[np.ndarray], np.ndarray]
# torch key (without prefix) -> (Flax path, transform, torch shape)
Layout = dict[str, tuple[tuple[str, ...], Transform, tuple[int, ...]]]


def split_prefix(state_dict: dict[str, np.ndarray]) -> str:
  """The prefix (one of PREFIXES) under which `patch_embed.0.weight` is stored."""
  for prefix in PREFIXES:
    if prefix + ANCHOR_KEY in state_dict:
      return prefix
  sample = ", ".join(sorted(state_dict)[:5]) or "(no tensors)"
  raise ConversionError(
    f"not a DASS checkpoint: no '{ANCHOR_KEY}' key under any of the prefixes "
    f"{[p for p in PREFIXES if p]} or without prefix (first keys: {sample})"
  )


def _shape(bare: dict[str, np.ndarray], key: str, prefix: str, ndim: int) -> tuple[int, ...]:
  """The shape of a key the config is inferred from; it must exist and have rank `ndim`."""
  if key not in bare:
    raise ConversionError(f"cannot infer the DASS architecture: key '{prefix}{key}' is missing")
  shape = tuple(np.shape(bare[key]))
  if len(shape) != ndim:
    raise ConversionError(
      f"cannot infer the DASS architecture: '{prefix}{key}' has shape "
      f"{shape}, expected a rank-{ndim} tensor"
    )
  return shape


def _ratio(numerator: int, denominator: int, what: str) -> float:
  ratio = numerator / denominator
  if int(ratio * denominator) != numerator:
    raise ConversionError(f"{what}: {numerator} / {denominator} is not a representable ratio")
  return ratio


def infer_config(
  bare: dict[str, np.ndarray], prefix: str = "", num_classes: int | None = None
) -> DassConfig:
  """Reads the DassConfig from key names and shapes (keys without `prefix`)."""
  depths = []
  while f"layers.{len(depths)}.blocks.0.norm.weight" in bare:
    i, depth = len(depths), 0
    while f"layers.{i}.blocks.{depth}.norm.weight" in bare:
      depth += 1
    depths.append(depth)
  if not depths:
    raise ConversionError(
      f"cannot infer the DASS architecture: no '{prefix}layers.0.blocks.0.*' keys in the checkpoint"
    )
  dims = [
    _shape(bare, f"layers.{i}.blocks.0.norm.weight", prefix, 1)[0] for i in range(len(depths))
  ]
  block0 = "layers.0.blocks.0."
  in_chans = _shape(bare, ANCHOR_KEY, prefix, 4)[1]
  if in_chans != 1:
    raise ConversionError(
      f"'{prefix}{ANCHOR_KEY}' takes {in_chans} input channels; DASS takes 1 (fbank). For an "
      "ImageNet VMamba checkpoint use `python -m convert_torch vmamba IN OUT --num-classes N`"
    )
  d_state = _shape(bare, block0 + "op.A_logs", prefix, 2)[1]
  d_inner = _shape(bare, block0 + "op.in_proj.weight", prefix, 2)[0]
  ssm_ratio = _ratio(d_inner, dims[0], "ssm_ratio (in_proj rows / dim)")
  mlp_hidden = _shape(bare, block0 + "mlp.fc1.weight", prefix, 2)[0]
  mlp_ratio = _ratio(mlp_hidden, dims[0], "mlp_ratio (fc1 rows / dim)")
  ranks = [
    _shape(bare, f"layers.{i}.blocks.0.op.dt_projs_weight", prefix, 3)[2]
    for i in range(len(depths))
  ]
  if all(r == math.ceil(d / 16) for r, d in zip(ranks, dims)):
    dt_rank = 0
  elif len(set(ranks)) == 1:
    dt_rank = ranks[0]
  else:
    raise ConversionError(
      f"dt_rank per stage {ranks} is neither ceil(dim / 16) for dims {dims} "
      "nor one value for all stages; DassConfig cannot express it"
    )
  head_classes = _shape(bare, "classifier.head.weight", prefix, 2)[0]
  if num_classes is not None and num_classes != head_classes:
    raise ConversionError(
      f"'{prefix}classifier.head.weight' has {head_classes} classes, "
      f"expected num_classes={num_classes}"
    )
  depths = tuple(depths)
  return DassConfig(
    num_classes=head_classes,
    depths=depths,
    dims=tuple(dims),
    d_state=d_state,
    ssm_ratio=ssm_ratio,
    dt_rank=dt_rank,
    mlp_ratio=mlp_ratio,
    drop_path_rate=0.3 if depths == MEDIUM_DEPTHS else 0.2,
  )


def _ln(torch_name: str, path: tuple[str, ...], dim: int) -> Layout:
  return {
    f"{torch_name}.weight": (path + ("scale",), copy, (dim,)),
    f"{torch_name}.bias": (path + ("bias",), copy, (dim,)),
  }


def _conv3x3(torch_name: str, path: tuple[str, ...], cin: int, cout: int) -> Layout:
  return {
    f"{torch_name}.weight": (path + ("kernel",), conv, (cout, cin, 3, 3)),
    f"{torch_name}.bias": (path + ("bias",), copy, (cout,)),
  }


def _block(tn: str, path: tuple[str, ...], dim: int, config: DassConfig, stage: int) -> Layout:
  """One VSS block `layers.i.blocks.j` -> `layers_i/blocks_j`."""
  k, n, rank = 4, config.d_state, config.stage_dt_rank(stage)
  d_inner = int(config.ssm_ratio * dim)
  hidden = int(config.mlp_ratio * dim)
  op = path + ("op",)
  layout = _ln(f"{tn}.norm", path + ("norm",), dim)
  layout.update(
    {
      f"{tn}.op.x_proj_weight": (op + ("x_proj_weight",), copy, (k, rank + 2 * n, d_inner)),
      f"{tn}.op.dt_projs_weight": (op + ("dt_projs_weight",), copy, (k, d_inner, rank)),
      f"{tn}.op.dt_projs_bias": (op + ("dt_projs_bias",), copy, (k, d_inner)),
      f"{tn}.op.A_logs": (op + ("A_logs",), copy, (k * d_inner, n)),
      f"{tn}.op.Ds": (op + ("Ds",), copy, (k * d_inner,)),
    }
  )
  layout.update(_ln(f"{tn}.op.out_norm", op + ("out_norm",), d_inner))
  layout.update(
    {
      f"{tn}.op.in_proj.weight": (op + ("in_proj", "kernel"), linear, (d_inner, dim)),
      f"{tn}.op.conv2d.weight": (op + ("conv2d", "kernel"), conv, (d_inner, 1, 3, 3)),
      f"{tn}.op.out_proj.weight": (op + ("out_proj", "kernel"), linear, (dim, d_inner)),
    }
  )
  layout.update(_ln(f"{tn}.norm2", path + ("norm2",), dim))
  mlp = path + ("mlp",)
  layout.update(
    {
      f"{tn}.mlp.fc1.weight": (mlp + ("fc1", "kernel"), linear, (hidden, dim)),
      f"{tn}.mlp.fc1.bias": (mlp + ("fc1", "bias"), copy, (hidden,)),
      f"{tn}.mlp.fc2.weight": (mlp + ("fc2", "kernel"), linear, (dim, hidden)),
      f"{tn}.mlp.fc2.bias": (mlp + ("fc2", "bias"), copy, (dim,)),
    }
  )
  return layout


def param_layout(config: DassConfig) -> Layout:
  """Every torch key (no prefix) of a DASS with `config`: its Flax path, transform and shape."""
  half, dims = config.dims[0] // 2, config.dims
  pe = ("patch_embed",)
  layout = _conv3x3("patch_embed.0", pe + ("conv0",), config.in_chans, half)
  layout.update(_ln("patch_embed.2", pe + ("norm0",), half))
  layout.update(_conv3x3("patch_embed.5", pe + ("conv1",), half, dims[0]))
  layout.update(_ln("patch_embed.7", pe + ("norm1",), dims[0]))
  for i, (dim, depth) in enumerate(zip(dims, config.depths)):
    stage = (f"layers_{i}",)
    for j in range(depth):
      layout.update(_block(f"layers.{i}.blocks.{j}", stage + (f"blocks_{j}",), dim, config, i))
    if i + 1 < len(dims):
      layout.update(
        _conv3x3(f"layers.{i}.downsample.1", stage + ("downsample", "conv"), dim, dims[i + 1])
      )
      layout.update(_ln(f"layers.{i}.downsample.3", stage + ("downsample", "norm"), dims[i + 1]))
  layout.update(_ln("classifier.norm", ("classifier", "norm"), dims[-1]))
  layout["classifier.head.weight"] = (
    ("classifier", "head", "kernel"),
    linear,
    (config.num_classes, dims[-1]),
  )
  layout["classifier.head.bias"] = (("classifier", "head", "bias"), copy, (config.num_classes,))
  return layout


def torch_to_flax(
  state_dict: dict[str, np.ndarray], num_classes: int | None = None
) -> tuple[DassConfig, dict[str, Any]]:
  """Converts a DASS state dict (numpy arrays) into (DassConfig, Flax `params` tree).

  Args:
    state_dict: keys `module.v.…`, `v.…` or bare VSSM keys; arrays in PyTorch layouts.
    num_classes: if given, the checkpoint's head must have this many classes.

  Raises:
    ConversionError: the keys or shapes do not form a DASS that DassConfig can describe.
  """
  prefix = split_prefix(state_dict)
  bare = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
  config = infer_config(bare, prefix, num_classes)
  layout = param_layout(config)
  check_keys(
    {prefix + k: shape for k, (_, _, shape) in layout.items()},
    state_dict,
    f"DASS checkpoint (keys '{prefix}…', inferred depths={config.depths} "
    f"dims={config.dims} classes={config.num_classes})",
  )
  params: dict[str, Any] = {}
  for key, (path, transform, _) in layout.items():
    node = params
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = np.ascontiguousarray(transform(np.asarray(bare[key])), dtype=np.float32)
  check_against_model(config, params)
  return config, params


def _check_hf_config(config_path: Path, state_dict: dict[str, np.ndarray]) -> None:
  """A hub folder's config.json: its depths / dims / num_classes must match the weights' shapes."""
  try:
    hf = json.loads(config_path.read_text())
  except (OSError, ValueError) as e:
    raise ConversionError(f"{config_path}: not a readable JSON config ({e})") from e
  inferred = infer_config(state_dict)
  if isinstance(hf.get("dims"), int):  # the hub model expands an int to dims * 2**i per stage
    hf["dims"] = [hf["dims"] * 2**i for i in range(len(inferred.depths))]
  found = {
    "depths": tuple(inferred.depths),
    "dims": tuple(inferred.dims),
    "num_classes": inferred.num_classes,
  }
  wrong = [
    f"{name}: config.json {hf[name]} vs weights {value}"
    for name, value in found.items()
    if name in hf and (tuple(hf[name]) if isinstance(hf[name], list) else hf[name]) != value
  ]
  if wrong:
    raise ConversionError(
      f"{config_path} disagrees with the weights beside it:\n  " + "\n  ".join(wrong)
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """Loads a DASS checkpoint file (or a Hugging Face folder) as (state dict, format name)."""
  path = Path(path)
  if path.is_dir():
    state_dict = hf_dass.load_hf_dir(path)
    if (path / "config.json").is_file():
      _check_hf_config(path / "config.json", state_dict)
    return state_dict, "hf-dass"
  state_dict = load_state_dict(path)
  if hf_dass.is_hf_layout(state_dict):
    return hf_dass.hf_to_dass(state_dict), "hf-dass"
  return state_dict, FORMAT_NAMES[split_prefix(state_dict)]


def convert_file(
  path: str | os.PathLike, num_classes: int | None = None
) -> tuple[DassConfig, dict[str, Any]]:
  """Reads and converts a DASS checkpoint file; see the module docstring for the formats."""
  state_dict, _ = read_checkpoint(path)
  return torch_to_flax(state_dict, num_classes)


def convert_to(
  source: str | os.PathLike, out_dir: str | os.PathLike, num_classes: int | None = None
) -> tuple[Path, str]:
  """Fetches (if remote), converts and saves a DASS checkpoint into the new folder `out_dir`.

  Returns:
    (the output folder, a one-line summary of what was converted).

  Raises:
    ConversionError, SourceError, FileNotFoundError, FileExistsError (`out_dir` already holds
    a checkpoint; nothing is written then, nor on any other error).
  """
  refuse_existing(out_dir)
  fetched = resolve(source, "dass")
  state_dict, source_format = read_checkpoint(fetched.path)
  config, params = torch_to_flax(state_dict, num_classes)
  out = save_converted(
    out_dir, config, params, extra={"source": fetched.source, "source_format": source_format}
  )
  return out, (
    f"converted {fetched.source} ({source_format}): DASS depths={list(config.depths)} "
    f"dims={list(config.dims)} classes={config.num_classes}, "
    f"{count_params(params):,} parameters -> {out}"
  )


def main(argv: list[str] | None = None) -> int:
  """`python -m convert_torch dass SOURCE OUT_DIR`; returns the exit status."""
  parser = argparse.ArgumentParser(
    prog="python -m convert_torch dass",
    description="Convert a DASS PyTorch checkpoint (.pth / .safetensors / Hugging Face folder, "
    "hub id, URL or published name) into a dass_jax checkpoint folder (orbax params + "
    "config.json).",
  )
  parser.add_argument(
    "input",
    help="DASS checkpoint file or Hugging Face folder, hf://OWNER/NAME[@REVISION], an https:// "
    "URL, or a published name (python -m convert_torch --list)",
  )
  parser.add_argument("output_dir", help="new folder for the converted checkpoint")
  parser.add_argument(
    "--num-classes",
    type=int,
    default=None,
    help="fail unless the checkpoint's head has this many classes",
  )
  args = parser.parse_args(argv)
  try:
    _, summary = convert_to(args.input, args.output_dir, args.num_classes)
  except (
    ConversionError,
    SourceError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
  ) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(summary)
  return 0
