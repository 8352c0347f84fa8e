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
Finally the params tree is compared with the model's own abstract init. The key -> Flax path table
is `param_table` (a `convert_torch.mapping` table, applied by `mapping.params_from_table`); the
`dass_jax.models.dass` module docstring documents it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from convert_torch import hf_dass
from convert_torch.converter import Conversion, Converter, Option
from convert_torch.io import ConversionError, read_weights
from convert_torch.mapping import (
  Rule,
  conv_rules,
  count_indexed,
  dense_rules,
  norm_rules,
  params_from_table,
  rule,
  shape_of,
)
from convert_torch.params import conv, linear
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
  while depth := count_indexed(bare, f"layers.{len(depths)}.blocks.{{i}}.norm.weight"):
    depths.append(depth)
  if not depths:
    raise ConversionError(
      f"cannot infer the DASS architecture: no '{prefix}layers.0.blocks.0.*' keys in the checkpoint"
    )
  # Shapes are read from the bare keys; messages name them with the file's prefix.
  named = {prefix + k: v for k, v in bare.items()}
  shape = lambda key, ndim: shape_of(named, prefix + key, ndim, "DASS")
  dims = [shape(f"layers.{i}.blocks.0.norm.weight", 1)[0] for i in range(len(depths))]
  block0 = "layers.0.blocks.0."
  in_chans = shape(ANCHOR_KEY, 4)[1]
  if in_chans != 1:
    raise ConversionError(
      f"'{prefix}{ANCHOR_KEY}' takes {in_chans} input channels; DASS takes 1 (fbank). For an "
      "ImageNet VMamba checkpoint use `python -m convert_torch vmamba IN OUT --num-classes N`"
    )
  d_state = shape(block0 + "op.A_logs", 2)[1]
  d_inner = shape(block0 + "op.in_proj.weight", 2)[0]
  ssm_ratio = _ratio(d_inner, dims[0], "ssm_ratio (in_proj rows / dim)")
  mlp_hidden = shape(block0 + "mlp.fc1.weight", 2)[0]
  mlp_ratio = _ratio(mlp_hidden, dims[0], "mlp_ratio (fc1 rows / dim)")
  ranks = [shape(f"layers.{i}.blocks.0.op.dt_projs_weight", 3)[2] for i in range(len(depths))]
  if all(r == math.ceil(d / 16) for r, d in zip(ranks, dims)):
    dt_rank = 0
  elif len(set(ranks)) == 1:
    dt_rank = ranks[0]
  else:
    raise ConversionError(
      f"dt_rank per stage {ranks} is neither ceil(dim / 16) for dims {dims} "
      "nor one value for all stages; DassConfig cannot express it"
    )
  head_classes = shape("classifier.head.weight", 2)[0]
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


def _block(tn: str, path: str, dim: int, config: DassConfig, stage: int) -> list[Rule]:
  """One VSS block `layers.i.blocks.j` -> `layers_i/blocks_j`."""
  k, n, rank = 4, config.d_state, config.stage_dt_rank(stage)
  d_inner = int(config.ssm_ratio * dim)
  hidden = int(config.mlp_ratio * dim)
  op, top = f"{path}/op", f"{tn}.op"
  return [
    *norm_rules(f"{path}/norm", f"{tn}.norm", dim),
    rule(f"{op}/x_proj_weight", f"{top}.x_proj_weight", (k, rank + 2 * n, d_inner)),
    rule(f"{op}/dt_projs_weight", f"{top}.dt_projs_weight", (k, d_inner, rank)),
    rule(f"{op}/dt_projs_bias", f"{top}.dt_projs_bias", (k, d_inner)),
    rule(f"{op}/A_logs", f"{top}.A_logs", (k * d_inner, n)),
    rule(f"{op}/Ds", f"{top}.Ds", (k * d_inner,)),
    *norm_rules(f"{op}/out_norm", f"{top}.out_norm", d_inner),
    rule(f"{op}/in_proj/kernel", f"{top}.in_proj.weight", (d_inner, dim), linear),
    rule(f"{op}/conv2d/kernel", f"{top}.conv2d.weight", (d_inner, 1, 3, 3), conv),
    rule(f"{op}/out_proj/kernel", f"{top}.out_proj.weight", (dim, d_inner), linear),
    *norm_rules(f"{path}/norm2", f"{tn}.norm2", dim),
    *dense_rules(f"{path}/mlp/fc1", f"{tn}.mlp.fc1", hidden, dim),
    *dense_rules(f"{path}/mlp/fc2", f"{tn}.mlp.fc2", dim, hidden),
  ]


def param_table(config: DassConfig) -> list[Rule]:
  """Every torch key (no prefix) of a DASS with `config`: its Flax path, shape and transform."""
  half, dims = config.dims[0] // 2, config.dims
  table = [
    *conv_rules("patch_embed/conv0", "patch_embed.0", (half, config.in_chans, 3, 3)),
    *norm_rules("patch_embed/norm0", "patch_embed.2", half),
    *conv_rules("patch_embed/conv1", "patch_embed.5", (dims[0], half, 3, 3)),
    *norm_rules("patch_embed/norm1", "patch_embed.7", dims[0]),
  ]
  for i, (dim, depth) in enumerate(zip(dims, config.depths)):
    stage = f"layers_{i}"
    for j in range(depth):
      table += _block(f"layers.{i}.blocks.{j}", f"{stage}/blocks_{j}", dim, config, i)
    if i + 1 < len(dims):
      down = f"layers.{i}.downsample"
      table += conv_rules(f"{stage}/downsample/conv", f"{down}.1", (dims[i + 1], dim, 3, 3))
      table += norm_rules(f"{stage}/downsample/norm", f"{down}.3", dims[i + 1])
  table += norm_rules("classifier/norm", "classifier.norm", dims[-1])
  table += dense_rules("classifier/head", "classifier.head", config.num_classes, dims[-1])
  return table


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
  what = (
    f"DASS checkpoint (keys '{prefix}…', inferred depths={config.depths} "
    f"dims={config.dims} classes={config.num_classes})"
  )
  return config, params_from_table(param_table(config), state_dict, config, what, prefix)


def _check_hf_config(hf: dict, state_dict: dict[str, np.ndarray], where: Path) -> None:
  """A hub folder's config.json: its depths / dims / num_classes must match the weights' shapes."""
  inferred = infer_config(state_dict)
  if isinstance(hf.get("dims"), int):  # the hub model expands an int to dims * 2**i per stage
    hf = {**hf, "dims": [hf["dims"] * 2**i for i in range(len(inferred.depths))]}
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
      f"{where / 'config.json'} disagrees with the weights beside it:\n  " + "\n  ".join(wrong)
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
  """Loads a DASS checkpoint file (or a Hugging Face folder) as (state dict, format name)."""
  path = Path(path)
  state_dict, hf = read_weights(path)
  if path.is_dir() and not hf_dass.is_hf_layout(state_dict):
    raise ConversionError(f"{path}: not a Hugging Face DASS checkpoint (no '{hf_dass.HF_ANCHOR}')")
  if hf_dass.is_hf_layout(state_dict):
    state_dict = hf_dass.hf_to_dass(state_dict)
    if hf is not None:
      _check_hf_config(hf, state_dict, path)
    return state_dict, "hf-dass"
  return state_dict, FORMAT_NAMES[split_prefix(state_dict)]


def convert_file(
  path: str | os.PathLike, num_classes: int | None = None
) -> tuple[DassConfig, dict[str, Any]]:
  """Reads and converts a DASS checkpoint file; see the module docstring for the formats."""
  state_dict, _ = read_checkpoint(path)
  return torch_to_flax(state_dict, num_classes)


def describe(config: DassConfig) -> str:
  """One line on a DASS architecture."""
  return f"DASS depths={list(config.depths)} dims={list(config.dims)} classes={config.num_classes}"


def read(path: str | os.PathLike, num_classes: int | None = None) -> Conversion:
  """Converts a local DASS checkpoint file or Hugging Face folder."""
  state_dict, source_format = read_checkpoint(path)
  config, params = torch_to_flax(state_dict, num_classes)
  return Conversion(config, params, source_format, source_format, describe(config))


CONVERTER = Converter(
  name="dass",
  version=1,
  read=read,
  description="Convert a DASS PyTorch checkpoint (.pth / .safetensors / Hugging Face folder, "
  "hub id, URL or published name) into a dass_jax checkpoint folder (orbax params + "
  "config.json).",
  input_help="DASS checkpoint file or Hugging Face folder, hf://OWNER/NAME[@REVISION], an "
  "https:// URL, or a published name (python -m convert_torch --list)",
  options=(Option("num_classes", "fail unless the checkpoint's head has this many classes"),),
)
convert_to = CONVERTER.convert_to
main = CONVERTER.main
