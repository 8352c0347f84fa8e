"""Audio Mamba (AuM) PyTorch checkpoints -> (AumConfig, Flax params), `python -m convert_torch aum`.

    python -m convert_torch aum aum_small_audioset.pth converted/aum_small
    python -m convert_torch aum aum-small-audioset-39.7 converted/aum_small   # fetched by name
    model, params, config = dass_jax.load_model("converted/aum_small")

Accepted: the released AuM checkpoints, plain fp32 `AudioMamba.state_dict()`s written by
`torch.save` (`.pth`/`.pt`/`.bin`, read with torch.load(weights_only=True), or `.safetensors`),
with or without the `module.` prefix of DataParallel / accelerate. Every key is consumed; any
missing, unexpected or mis-shaped tensor is a ConversionError that lists them all (the AuM loader
itself loads with strict=False, so a converter must be stricter). SOURCE may also be an https://
URL or a published name, fetched by `convert_torch.sources` (the authors' Google Drive may answer
with a page instead of the file; then download it in a browser and pass the local file).

Architecture from the keys and shapes: embed_dim and patch size from `patch_embed.proj.weight`
(D, 1, P, P); depth from the `layers.i` indices; bimamba_type 'v2' (Bi-Bi) when the mixers have
`conv1d_b`, else 'v1' (Fo-Bi) when they have `A_b_log` (a unidirectional 'none' model is
refused); d_inner = expand * D from `in_proj.weight` (2E, D); d_state from `A_log` (E, S); d_conv
from `conv1d.weight` (E, 1, K); dt_rank from `dt_proj.weight` (E, R); classes from `head.weight`.
The patch grid comes from `pos_embed.pos_embed` (1, 1 + F*T, D) with F = num_mel_bins // P
(`--num-mel-bins`, 128 by default), and max_length = T * P (1024 for the AudioSet models) unless
`--max-length` gives another length with the same T. The RMSNorm eps (1e-5) is not in the file.

Mapping (i = block; Flax paths as in `dass_jax.models.aum`; transforms from `convert_torch.params`):

| torch key                               | Flax path                             | transform |
|-----------------------------------------|---------------------------------------|-----------|
| patch_embed.proj.{weight,bias}          | patch_embed/{kernel,bias}             | conv/copy |
| cls_token                               | cls_token                             | copy      |
| pos_embed.pos_embed                     | pos_embed                             | copy      |
| layers.i.norm.weight                    | layers_i/norm/scale                   | copy      |
| layers.i.mixer.in_proj.weight           | layers_i/mixer/in_proj/kernel         | linear    |
| layers.i.mixer.conv1d{,_b}.weight       | layers_i/mixer/conv1d{,_b}/kernel     | conv      |
| layers.i.mixer.conv1d{,_b}.bias         | layers_i/mixer/conv1d{,_b}/bias       | copy      |
| layers.i.mixer.x_proj{,_b}.weight       | layers_i/mixer/x_proj{,_b}/kernel     | linear    |
| layers.i.mixer.dt_proj{,_b}.weight      | layers_i/mixer/dt_proj{,_b}/kernel    | linear    |
| layers.i.mixer.dt_proj{,_b}.bias        | layers_i/mixer/dt_proj{,_b}/bias      | copy      |
| layers.i.mixer.{A_log,A_b_log,D,D_b}    | layers_i/mixer/{A_log,A_b_log,D,D_b}  | copy      |
| layers.i.mixer.out_proj.weight          | layers_i/mixer/out_proj/kernel        | linear    |
| norm_f.weight                           | norm_f/scale                          | copy      |
| head.{weight,bias}                      | head/{kernel,bias}                    | linear/copy |
(`_b` keys: v2 only; `A_b_log`: both variants.)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from convert_torch.io import ConversionError, check_keys, load_state_dict
from convert_torch.params import check_against_model, conv, copy, count_params, linear
from convert_torch.sources import SourceError, resolve
from dass_jax.checkpoint import refuse_existing, save_converted
from dass_jax.constants import NUM_MEL_BINS
from dass_jax.models import AumConfig

MODULE_PREFIX = "module."
ANCHOR_KEY = "patch_embed.proj.weight"
POS_KEY = "pos_embed.pos_embed"
MIXER0 = "layers.0.mixer."

# torch key (without prefix) -> (Flax path, transform, torch shape)
Layout = dict[str, tuple[tuple[str, ...], Any, tuple[int, ...]]]


def strip_module_prefix(state_dict: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
  """(keys without DataParallel's `module.`, the prefix removed: 'module.' or '')."""
  if state_dict and all(k.startswith(MODULE_PREFIX) for k in state_dict):
    return {k[len(MODULE_PREFIX) :]: v for k, v in state_dict.items()}, MODULE_PREFIX
  return state_dict, ""


def _shape(sd: dict[str, np.ndarray], key: str, ndim: int) -> tuple[int, ...]:
  """The shape of a key the architecture is read from; it must exist and have rank `ndim`."""
  if key not in sd:
    sample = ", ".join(sorted(sd)[:5]) or "(no tensors)"
    raise ConversionError(f"not an AuM checkpoint: key {key!r} is missing (first keys: {sample})")
  shape = tuple(np.shape(sd[key]))
  if len(shape) != ndim:
    raise ConversionError(
      f"cannot infer the AuM architecture: {key!r} has shape {shape}, expected rank {ndim}"
    )
  return shape


def infer_config(
  sd: dict[str, np.ndarray], num_mel_bins: int | None = None, max_length: int | None = None
) -> AumConfig:
  """Reads the AumConfig from key names and shapes (keys without `module.`)."""
  dim, in_chans, patch, patch_w = _shape(sd, ANCHOR_KEY, 4)
  if in_chans != 1 or patch != patch_w:
    raise ConversionError(
      f"{ANCHOR_KEY} has shape {(dim, in_chans, patch, patch_w)}; AuM takes one fbank channel "
      "in square patches (D, 1, P, P)"
    )
  depth = 0
  while f"layers.{depth}.norm.weight" in sd:
    depth += 1
  if not depth:
    raise ConversionError("not an AuM checkpoint: no 'layers.0.norm.weight' key")
  if MIXER0 + "conv1d_b.weight" in sd:
    bimamba_type = "v2"
  elif MIXER0 + "A_b_log" in sd:
    bimamba_type = "v1"
  else:
    raise ConversionError(
      f"{MIXER0}* has neither A_b_log nor conv1d_b: a unidirectional Mamba ('none', Fo-Fo) is "
      "not an AuM variant dass_jax supports (v1 Fo-Bi, v2 Bi-Bi)"
    )
  two_e = _shape(sd, MIXER0 + "in_proj.weight", 2)[0]
  if two_e % (2 * dim):
    raise ConversionError(
      f"{MIXER0}in_proj.weight has {two_e} rows, not 2 * expand * {dim} for an integer expand"
    )
  d_state = _shape(sd, MIXER0 + "A_log", 2)[1]
  d_conv = _shape(sd, MIXER0 + "conv1d.weight", 3)[2]
  rank = _shape(sd, MIXER0 + "dt_proj.weight", 2)[1]
  num_classes = _shape(sd, "head.weight", 2)[0]
  rows = _shape(sd, POS_KEY, 3)[1] - 1
  mel = num_mel_bins or NUM_MEL_BINS
  freq = mel // patch
  if freq < 1 or rows % freq:
    raise ConversionError(
      f"{POS_KEY} holds {rows} patch rows, not a multiple of the {freq} frequency patches of "
      f"num_mel_bins={mel} with patch {patch}: give the right --num-mel-bins"
    )
  time = rows // freq
  if max_length is not None and max_length // patch != time:
    raise ConversionError(
      f"--max-length {max_length} gives {max_length // patch} time patches but {POS_KEY} holds "
      f"{time} ({freq} x {time} grid): use {time * patch}..{time * patch + patch - 1}"
    )
  return AumConfig(
    num_classes=num_classes,
    embed_dim=dim,
    depth=depth,
    bimamba_type=bimamba_type,
    d_state=d_state,
    d_conv=d_conv,
    expand=two_e // (2 * dim),
    dt_rank=0 if rank == math.ceil(dim / 16) else rank,
    patch_size=patch,
    num_mel_bins=mel,
    max_length=max_length or time * patch,
  )


def param_layout(config: AumConfig) -> Layout:
  """Every torch key (no prefix) of an AuM with `config`: its Flax path, transform and shape."""
  d, e, s, p = config.embed_dim, config.d_inner, config.d_state, config.patch_size
  r, k, c = config.ssm_rank, config.d_conv, config.num_classes
  layout: Layout = {
    "patch_embed.proj.weight": (("patch_embed", "kernel"), conv, (d, 1, p, p)),
    "patch_embed.proj.bias": (("patch_embed", "bias"), copy, (d,)),
    "cls_token": (("cls_token",), copy, (1, 1, d)),
    POS_KEY: (("pos_embed",), copy, (1, 1 + config.num_patches, d)),
    "norm_f.weight": (("norm_f", "scale"), copy, (d,)),
    "head.weight": (("head", "kernel"), linear, (c, d)),
    "head.bias": (("head", "bias"), copy, (c,)),
  }
  suffixes = ("", "_b") if config.bimamba_type == "v2" else ("",)
  for i in range(config.depth):
    tn, path = f"layers.{i}.", (f"layers_{i}",)
    mx, mp = tn + "mixer.", path + ("mixer",)
    layout[tn + "norm.weight"] = (path + ("norm", "scale"), copy, (d,))
    layout[mx + "in_proj.weight"] = (mp + ("in_proj", "kernel"), linear, (2 * e, d))
    for name in ("A_log", "A_b_log"):
      layout[mx + name] = (mp + (name,), copy, (e, s))
    for sfx in suffixes:
      layout[mx + f"conv1d{sfx}.weight"] = (mp + (f"conv1d{sfx}", "kernel"), conv, (e, 1, k))
      layout[mx + f"conv1d{sfx}.bias"] = (mp + (f"conv1d{sfx}", "bias"), copy, (e,))
      layout[mx + f"x_proj{sfx}.weight"] = (mp + (f"x_proj{sfx}", "kernel"), linear, (r + 2 * s, e))
      layout[mx + f"dt_proj{sfx}.weight"] = (mp + (f"dt_proj{sfx}", "kernel"), linear, (e, r))
      layout[mx + f"dt_proj{sfx}.bias"] = (mp + (f"dt_proj{sfx}", "bias"), copy, (e,))
      layout[mx + f"D{sfx}"] = (mp + (f"D{sfx}",), copy, (e,))
    layout[mx + "out_proj.weight"] = (mp + ("out_proj", "kernel"), linear, (d, e))
  return layout


def torch_to_flax(
  state_dict: dict[str, np.ndarray],
  num_mel_bins: int | None = None,
  max_length: int | None = None,
) -> tuple[AumConfig, dict[str, Any]]:
  """Converts an AuM state dict (numpy arrays, torch layouts) into (AumConfig, Flax params).

  Raises:
    ConversionError: the keys or shapes do not form an AuM that AumConfig describes; the message
      lists every missing, unexpected and mis-shaped key.
  """
  bare, prefix = strip_module_prefix(state_dict)
  config = infer_config(bare, num_mel_bins, max_length)
  layout = param_layout(config)
  freq, time = config.grid
  check_keys(
    {k: shape for k, (_, _, shape) in layout.items()},
    bare,
    f"AuM checkpoint (keys '{prefix}…'; inferred {config.bimamba_type}, D={config.embed_dim}, "
    f"depth={config.depth}, {config.num_classes} classes, {freq} x {time} patches)",
  )
  params: dict[str, Any] = {}
  for key, (path, transform, _) in layout.items():
    node = params
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = np.ascontiguousarray(transform(np.asarray(bare[key])), dtype=np.float32)
  check_against_model(config, params)
  return config, params


def convert_to(
  source: str | os.PathLike,
  out_dir: str | os.PathLike,
  num_mel_bins: int | None = None,
  max_length: int | None = None,
) -> tuple[Path, str]:
  """Fetches (if remote), converts and saves an AuM checkpoint into the new folder `out_dir`.

  Args:
    source: a local state-dict file, an https:// URL or a published name (`aum-small-audioset-39.7`,
      `aum-base-audioset-32.7`; `convert_torch.sources`).
    out_dir: new folder; refused (FileExistsError), untouched, when it already holds a checkpoint.
    num_mel_bins, max_length: `infer_config`'s hints.

  Returns:
    (the output folder, a one-line summary). Nothing is written on an error.
  """
  refuse_existing(out_dir)
  fetched = resolve(source, "aum")
  state_dict = load_state_dict(fetched.path)
  config, params = torch_to_flax(state_dict, num_mel_bins, max_length)
  out = save_converted(
    out_dir,
    config,
    params,
    extra={"source": fetched.source, "source_format": f"aum/{config.bimamba_type}"},
  )
  freq, time = config.grid
  return out, (
    f"converted {fetched.source}: AuM {config.bimamba_type} D={config.embed_dim} "
    f"depth={config.depth} classes={config.num_classes}, {freq} x {time} patches for "
    f"{config.num_mel_bins} mel x "
    f"{config.max_length} frames, {count_params(params):,} parameters -> {out}"
  )


def main(argv: list[str] | None = None) -> int:
  """`python -m convert_torch aum SOURCE OUT_DIR`; returns the exit status."""
  parser = argparse.ArgumentParser(
    prog="python -m convert_torch aum",
    description="Convert an Audio Mamba (AuM) PyTorch checkpoint into a dass_jax checkpoint "
    "folder (orbax params + config.json).",
  )
  parser.add_argument(
    "input",
    help="AuM state dict (.pth / .pt / .safetensors), an https:// URL, or a published name "
    "(python -m convert_torch --list)",
  )
  parser.add_argument("output_dir", help="new folder for the converted checkpoint")
  parser.add_argument(
    "--num-mel-bins",
    type=int,
    default=None,
    help=f"input mel bins, which fix the frequency patches (default {NUM_MEL_BINS})",
  )
  parser.add_argument(
    "--max-length",
    type=int,
    default=None,
    help="input frames (default: time patches x patch size, 1024 for the AudioSet models)",
  )
  args = parser.parse_args(argv)
  try:
    _, summary = convert_to(args.input, args.output_dir, args.num_mel_bins, args.max_length)
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
