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

Mapping (`param_table`, a `convert_torch.mapping` table; i = block; Flax paths as in
`dass_jax.models.aum`; transforms from `convert_torch.params`):

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

import math
from pathlib import Path
from typing import Any

import numpy as np

from convert_torch.converter import Conversion, Converter, Option
from convert_torch.io import ConversionError, load_state_dict, split_module_prefix
from convert_torch.mapping import (
  Rule,
  conv_rules,
  count_indexed,
  dense_rules,
  params_from_table,
  rule,
  shape_of,
)
from convert_torch.params import linear
from dass_jax.constants import NUM_MEL_BINS
from dass_jax.models import AumConfig

ANCHOR_KEY = "patch_embed.proj.weight"
POS_KEY = "pos_embed.pos_embed"
MIXER0 = "layers.0.mixer."


def _shape(sd: dict[str, np.ndarray], key: str, ndim: int) -> tuple[int, ...]:
  return shape_of(sd, key, ndim, "AuM")


def infer_config(
  sd: dict[str, np.ndarray], num_mel_bins: int | None = None, max_length: int | None = None
) -> AumConfig:
  """Reads the AumConfig from key names and shapes (keys without `module.`)."""
  if ANCHOR_KEY not in sd:
    sample = ", ".join(sorted(sd)[:5]) or "(no tensors)"
    raise ConversionError(
      f"not an AuM checkpoint: key {ANCHOR_KEY!r} is missing (first keys: {sample})"
    )
  dim, in_chans, patch, patch_w = _shape(sd, ANCHOR_KEY, 4)
  if in_chans != 1 or patch != patch_w:
    raise ConversionError(
      f"{ANCHOR_KEY} has shape {(dim, in_chans, patch, patch_w)}; AuM takes one fbank channel "
      "in square patches (D, 1, P, P)"
    )
  depth = count_indexed(sd, "layers.{i}.norm.weight")
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


def param_table(config: AumConfig) -> list[Rule]:
  """Every torch key (no prefix) of an AuM with `config`: its Flax path, shape and transform."""
  d, e, s, p = config.embed_dim, config.d_inner, config.d_state, config.patch_size
  r, k, c = config.ssm_rank, config.d_conv, config.num_classes
  table = [
    *conv_rules("patch_embed", "patch_embed.proj", (d, 1, p, p)),
    rule("cls_token", "cls_token", (1, 1, d)),
    rule("pos_embed", POS_KEY, (1, 1 + config.num_patches, d)),
    rule("norm_f/scale", "norm_f.weight", (d,)),
    *dense_rules("head", "head", c, d),
  ]
  suffixes = ("", "_b") if config.bimamba_type == "v2" else ("",)
  for i in range(config.depth):
    tn, path = f"layers.{i}.", f"layers_{i}"
    mx, mp = tn + "mixer.", path + "/mixer"
    table.append(rule(f"{path}/norm/scale", tn + "norm.weight", (d,)))
    table.append(rule(f"{mp}/in_proj/kernel", mx + "in_proj.weight", (2 * e, d), linear))
    for name in ("A_log", "A_b_log"):
      table.append(rule(f"{mp}/{name}", mx + name, (e, s)))
    for sfx in suffixes:
      table += conv_rules(f"{mp}/conv1d{sfx}", f"{mx}conv1d{sfx}", (e, 1, k))
      x_proj = f"x_proj{sfx}"
      table.append(rule(f"{mp}/{x_proj}/kernel", f"{mx}{x_proj}.weight", (r + 2 * s, e), linear))
      table += dense_rules(f"{mp}/dt_proj{sfx}", f"{mx}dt_proj{sfx}", e, r)
      table.append(rule(f"{mp}/D{sfx}", f"{mx}D{sfx}", (e,)))
    table.append(rule(f"{mp}/out_proj/kernel", mx + "out_proj.weight", (d, e), linear))
  return table


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
  bare, prefix = split_module_prefix(state_dict)
  config = infer_config(bare, num_mel_bins, max_length)
  freq, time = config.grid
  what = (
    f"AuM checkpoint (keys '{prefix}…'; inferred {config.bimamba_type}, D={config.embed_dim}, "
    f"depth={config.depth}, {config.num_classes} classes, {freq} x {time} patches)"
  )
  return config, params_from_table(param_table(config), bare, config, what)


def read(
  path: str | Path, num_mel_bins: int | None = None, max_length: int | None = None
) -> Conversion:
  """Converts a local AuM state-dict file (see the module docstring)."""
  config, params = torch_to_flax(load_state_dict(path), num_mel_bins, max_length)
  freq, time = config.grid
  return Conversion(
    config,
    params,
    source_format=f"aum/{config.bimamba_type}",
    layout=f"AuM {config.bimamba_type} state dict",
    details=f"AuM {config.bimamba_type} D={config.embed_dim} depth={config.depth} "
    f"classes={config.num_classes}, {freq} x {time} patches for {config.num_mel_bins} mel x "
    f"{config.max_length} frames",
  )


CONVERTER = Converter(
  name="aum",
  version=1,
  read=read,
  description="Convert an Audio Mamba (AuM) PyTorch checkpoint into a dass_jax checkpoint "
  "folder (orbax params + config.json).",
  input_help="AuM state dict (.pth / .pt / .safetensors), an https:// URL, or a published name "
  "(python -m convert_torch --list)",
  options=(
    Option(
      "num_mel_bins",
      f"input mel bins, which fix the frequency patches (default {NUM_MEL_BINS})",
    ),
    Option(
      "max_length",
      "input frames (default: time patches x patch size, 1024 for the AudioSet models)",
    ),
  ),
)
convert_to = CONVERTER.convert_to
main = CONVERTER.main
