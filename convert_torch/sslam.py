"""SSLAM (and EAT) classifier checkpoints -> (SslamConfig, Flax params): `convert_torch sslam`.

    python -m convert_torch sslam checkpoint_best.pt converted/sslam    # the authors' fairseq file
    python -m convert_torch sslam sslam-as2m-50.2 converted/sslam       # the Hugging Face copy
    model, params, config = dass_jax.load_model("converted/sslam")

IN is a local file or folder, an hf:// hub id, an https:// URL or a published name
(`convert_torch.sources`; `sslam-as2m-50.2` is hf://ta012/SSLAM_AS2M_Finetuned). Two layouts
are read, recognised by their keys:

  fairseq  the authors' fine-tuned checkpoint (`SSLAM_AS2M_Finetuned/checkpoint_best.pt` in the
           Google Drive folder their README links; a Drive folder has no direct file URL, so
           download it in a browser and pass the local file). A fairseq `torch.save` dict: the
           weights under "model" beside training state that pickles fairseq objects, so
           torch.load(weights_only=True) refuses it; it is read with
           `convert_torch.restricted_pickle` (tensors and containers rebuilt, fairseq's classes
           stubbed and never imported, code-running globals refused). Fine-tuned with fp16, its
           weights are float16 (widened exactly to float32 here).
  hf       the Hugging Face copy (`model.safetensors` and `config.json` of the remote-code
           `EATModel`, which holds the EAT encoder as `.model`), or its `model.safetensors`
           alone; keys with or without that `model.` prefix.

Mapping (`param_table`, a `convert_torch.mapping` table; E = `model.modality_encoders.IMAGE.`,
B = `model.blocks.i.` (fairseq) or `blocks.i.` (hf), hf keys after their `model.` prefix;
Flax paths as in `dass_jax.models.sslam`):

| Flax path          | fairseq                              | hf                  | transform |
|--------------------|--------------------------------------|---------------------|-----------|
| patch_embed        | E local_encoder.proj                 | local_encoder.proj  | conv      |
| cls_token          | E extra_tokens                       | extra_tokens        | copy      |
| - (computed)       | E fixed_positional_encoder.positions | (the same name)     | checked   |
| embed_norm         | E context_encoder.norm               | pre_norm            | LayerNorm |
| blocks_i/attn/qkv  | B attn.qkv                           | B attn.qkv          | linear    |
| blocks_i/attn/out  | B attn.proj                          | B attn.proj         | linear    |
| blocks_i/norm1, 2  | B norm1, norm2                       | B norm1, norm2      | LayerNorm |
| blocks_i/mlp/fc1,2 | B mlp.fc1, fc2                       | B mlp.fc1, fc2      | linear    |
| head_norm          | fc_norm                              | fc_norm             | LayerNorm |
| head               | head                                 | head                | linear    |
Every key is consumed; a fine-tuned fairseq file may also carry modules of pre-training that the
classifier never uses (`model.center`, `model.cls_proj.*`, `model.recon_proj.*`,
`model.shared_decoder.*`, `E decoder.*`), which are dropped. Anything else missing, unexpected or
mis-shaped is a ConversionError listing it all (an ALiBi `alibi_scale`, say, which this model
does not implement, is refused rather than ignored).

Positions: the checkpoint stores the fixed 2-D sin-cos table (1, rows, D) for rows / F time
patches (768 in the releases, i.e. 12288 frames). The model computes it instead
(`dass_jax.models.sslam.sincos_positions`, any length); the stored table must equal it, to 1e-6
for a float32 table (the two float32 sin/cos implementations differ by an ulp) or, for a table
stored in float16 (fp16 training halves it with the weights), to 2^-10 after rounding ours to
float16 (one float16 ulp, where the two roundings fall apart); the latter converts to
`pos_embed_dtype='float16'`, so the model adds exactly what the checkpoint holds.

Architecture from the shapes: D from `extra_tokens`, patch size from the conv (D, 1, P, P),
depth from the block indices, MLP width from fc1, classes from the head. Not in the shapes:
heads (`--num-heads`, else hf config.json's `num_heads`, else D / 64: 12 for ViT-B), mel bins
(`--num-mel-bins`, else config.json's `mel_bins`, else 128), the training clip length
(`--max-length`, default 1024) and LayerNorm eps (1e-6, config.json's `norm_eps` when given;
fc_norm 1e-6 as fairseq trained it, although the hub `EATModel` builds its fc_norm with torch's
default 1e-5). A config.json with `layer_norm_first: true` (a pre-norm EAT) is refused.

Verified: the fairseq key layout and the architecture against the SSLAM sources (ta012/SSLAM
@0a3c0ff: models/EAT_pretraining.py, images.py, modules.py, base.py,
EAT_audio_classification.py); that the released weights are float16 is inferred from its
fine-tuning config (common.fp16: true), both dtypes are read. The hub layout comes from the EAT
remote code published with the hub models (`modeling_eat.py`: EATModel wraps `eat_model.EAT`
as `.model`; EAT holds local_encoder, extra_tokens, fixed_positional_encoder, pre_norm, blocks,
fc_norm, head); the hub files of ta012/SSLAM_AS2M_Finetuned themselves could not be read here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convert_torch import mapping
from convert_torch.converter import DEFAULT_HEAD_DIM, Conversion, Converter, Option, heads_option
from convert_torch.io import ConversionError, read_weights, to_numpy
from convert_torch.mapping import Rule, conv_rules, dense_rules, norm_rules, rule
from convert_torch.restricted_pickle import load_checkpoint
from dass_jax.constants import NUM_MEL_BINS
from dass_jax.models import SslamConfig
from dass_jax.models.sslam import sincos_positions

FAIRSEQ, HF = "fairseq", "hf"
LAYOUTS = (FAIRSEQ, HF)
ENCODER = "model.modality_encoders.IMAGE."
HF_PREFIX = "model."
_NAMES = {
  FAIRSEQ: {
    "patch": ENCODER + "local_encoder.proj",
    "cls": ENCODER + "extra_tokens",
    "pos": ENCODER + "fixed_positional_encoder.positions",
    "embed_norm": ENCODER + "context_encoder.norm",
    "block": "model.blocks.{i}.",
    "head_norm": "fc_norm",
    "head": "head",
  },
  HF: {
    "patch": "local_encoder.proj",
    "cls": "extra_tokens",
    "pos": "fixed_positional_encoder.positions",
    "embed_norm": "pre_norm",
    "block": "blocks.{i}.",
    "head_norm": "fc_norm",
    "head": "head",
  },
}
# Pre-training modules a fine-tuned fairseq checkpoint may hold; the classifier never uses them.
FAIRSEQ_UNUSED = (
  "model.center",
  "model.cls_proj.",
  "model.recon_proj.",
  "model.shared_decoder.",
  ENCODER + "decoder.",
)
DEFAULT_MAX_LENGTH = 1024
FLOAT32_TABLE_TOL = 1e-6
FLOAT16_TABLE_TOL = 2.0**-10
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def detect_layout(sd: Mapping[str, np.ndarray]) -> tuple[str, str]:
  """(layout, key prefix): ('fairseq', '') or ('hf', 'model.' or '')."""
  if any(k.startswith(ENCODER) for k in sd):
    return FAIRSEQ, ""
  for prefix in (HF_PREFIX, ""):
    if prefix + _NAMES[HF]["patch"] + ".weight" in sd:
      return HF, prefix
  sample = ", ".join(sorted(sd)[:5]) or "(no tensors)"
  raise ConversionError(
    f"not an SSLAM / EAT classifier checkpoint: no '{ENCODER}*' (fairseq) or "
    f"'[model.]local_encoder.proj.weight' (Hugging Face) key; first keys: {sample}"
  )


def infer_config(
  sd: Mapping[str, np.ndarray],
  layout: str,
  prefix: str = "",
  num_heads: int | None = None,
  num_mel_bins: int | None = None,
  max_length: int | None = None,
  hf_config: dict | None = None,
) -> SslamConfig:
  """The architecture of a state dict from its shapes, the hints and a hub config.json."""
  names, hf_config = _NAMES[layout], hf_config or {}
  if hf_config.get("layer_norm_first"):
    raise ConversionError(
      "config.json has layer_norm_first: true, a pre-norm EAT; SSLAM (and this converter) is "
      "the post-norm one"
    )
  shape = lambda key: mapping.shape_of(sd, prefix + key, None, "SSLAM")
  dim = shape(names["cls"])[-1]
  patch = shape(names["patch"] + ".weight")
  if len(patch) != 4 or patch[1] != 1 or patch[2] != patch[3] or patch[0] != dim:
    raise ConversionError(
      f"{prefix}{names['patch']}.weight has shape {patch}; SSLAM's patch conv takes one fbank "
      f"channel in square patches: ({dim}, 1, P, P)"
    )
  block = prefix + names["block"]
  depth = mapping.count_indexed(sd, block + "norm1.weight")
  if not depth:
    raise ConversionError(f"no '{block.format(i=0)}*' keys: not an SSLAM / EAT encoder")
  heads = num_heads or hf_config.get("num_heads") or dim // DEFAULT_HEAD_DIM
  eps = float(hf_config.get("norm_eps", 1e-6))
  try:
    return SslamConfig(
      num_classes=shape(names["head"] + ".weight")[0],
      hidden_size=dim,
      num_layers=depth,
      num_heads=heads,
      mlp_dim=shape(names["block"].format(i=0) + "mlp.fc1.weight")[0],
      patch_size=patch[-1],
      num_mel_bins=num_mel_bins or hf_config.get("mel_bins") or NUM_MEL_BINS,
      max_length=max_length or DEFAULT_MAX_LENGTH,
      layer_norm_eps=eps,
      head_layer_norm_eps=1e-6,
    )
  except ValueError as e:
    raise ConversionError(f"inconsistent architecture: {e}") from e


def param_table(config: SslamConfig, layout: str, position_rows: int) -> list[Rule]:
  """Every key (without the hf prefix) of a `layout` checkpoint for `config`: Flax path, shape
  and transform (a `convert_torch.mapping` table; the stored positions give no param)."""
  names = _NAMES[layout]
  d, m, p, c = config.hidden_size, config.mlp_dim, config.patch_size, config.num_classes
  table = [
    *conv_rules("patch_embed", names["patch"], (d, 1, p, p)),
    rule("cls_token", names["cls"], (1, 1, d)),
    rule(None, names["pos"], (1, position_rows, d)),
    *norm_rules("embed_norm", names["embed_norm"], d),
  ]
  for i in range(config.num_layers):
    block, path = names["block"].format(i=i), f"blocks_{i}/"
    table += dense_rules(path + "attn/qkv", block + "attn.qkv", 3 * d, d)
    table += dense_rules(path + "attn/out", block + "attn.proj", d, d)
    table += norm_rules(path + "norm1", block + "norm1", d)
    table += dense_rules(path + "mlp/fc1", block + "mlp.fc1", m, d)
    table += dense_rules(path + "mlp/fc2", block + "mlp.fc2", d, m)
    table += norm_rules(path + "norm2", block + "norm2", d)
  table += norm_rules("head_norm", names["head_norm"], d)
  table += dense_rules("head", names["head"], c, d)
  return table


def positions_dtype(table: np.ndarray, freq: int, key: str) -> str:
  """'float32' or 'float16': the precision of a stored (1, rows, D) position table that is the
  model's sin-cos table; else ConversionError (see the module docstring)."""
  rows, dim = table.shape[-2:]
  if rows % freq:
    raise ConversionError(
      f"{key} holds {rows} rows, not a multiple of the {freq} frequency patches"
    )
  table = table.reshape(rows, dim)
  half = bool(np.array_equal(table.astype(np.float16).astype(np.float32), table))
  dtype = "float16" if half else "float32"
  ours = np.asarray(sincos_positions(rows // freq, freq, dim, dtype))
  error = np.abs(table - ours)
  tol = FLOAT16_TABLE_TOL if half else FLOAT32_TABLE_TOL
  if error.max() > tol:
    row, col = np.unravel_index(int(np.argmax(error)), error.shape)
    raise ConversionError(
      f"{key} is not the fixed 2-D sin-cos table SSLAM adds (computed here): entry ({row}, {col}) "
      f"is {table[row, col]:.6g}, the {dtype} sin-cos {ours[row, col]:.6g}"
    )
  return dtype


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict | None, str]:
  """(state dict, hub config.json or None, what held the weights) of a file or hub folder.

  A pickle file (.pt/.pth/.bin/.ckpt) is read with the restricted unpickler, and its "model"
  entry taken when it has one (a fairseq checkpoint); safetensors and folders as usual.
  """
  path = Path(path)
  if path.is_dir() or path.suffix == ".safetensors":
    sd, hf = read_weights(path)
    return sd, hf, f"{_dtypes(sd)} weights"
  if path.suffix not in PICKLE_SUFFIXES:
    raise ConversionError(
      f"{path}: expected a .pt/.pth checkpoint, a .safetensors file or a folder"
    )
  obj, stubbed = load_checkpoint(path)
  if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
    obj = obj["model"]
  if not isinstance(obj, Mapping):
    raise ConversionError(f"{path}: expected a state dict or a dict with 'model', found {obj!r}")
  note = f"{_dtypes(obj)} weights"
  if stubbed:
    note += f"; {len(stubbed)} training-state classes left as stubs"
  return {str(k): to_numpy(v, str(k)) for k, v in obj.items()}, None, note


def _dtypes(state_dict: Mapping) -> str:
  """'float16', 'float32/float16', ... of a state dict's values (torch or numpy)."""
  names = {
    str(getattr(v, "dtype", type(v).__name__)).removeprefix("torch.") for v in state_dict.values()
  }
  return "/".join(sorted(names))


def convert(
  path: str | os.PathLike,
  num_heads: int | None = None,
  num_mel_bins: int | None = None,
  max_length: int | None = None,
) -> tuple[SslamConfig, dict, str, str]:
  """Reads and converts IN; returns (config, params, layout, a note on the weights read)."""
  sd, hf, note = read_state_dict(path)
  layout, prefix = detect_layout(sd)
  config = infer_config(sd, layout, prefix, num_heads, num_mel_bins, max_length, hf)
  pos_key = prefix + _NAMES[layout]["pos"]
  pos_shape = mapping.shape_of(sd, pos_key, 3, "SSLAM")
  table = param_table(config, layout, pos_shape[1])
  what = f"SSLAM checkpoint ({layout} layout, keys '{prefix}…')"
  dropped = FAIRSEQ_UNUSED if layout == FAIRSEQ else ()
  params = mapping.params_from_table(table, sd, config, what, prefix, dropped)
  freq = config.num_mel_bins // config.patch_size
  dtype = positions_dtype(np.asarray(sd[pos_key], np.float32), freq, pos_key)
  config = dataclasses.replace(config, pos_embed_dtype=dtype)
  return config, params, layout, note


def read(path: str | Path, **hints) -> Conversion:
  """Converts a local SSLAM checkpoint file or hub folder (`convert`'s hints as keywords)."""
  config, params, layout, note = convert(path, **hints)
  return Conversion(
    config,
    params,
    source_format=f"sslam/{layout}",
    layout=f"{layout} layout, {note}",
    details=f"SSLAM ViT D={config.hidden_size}, {config.num_layers} post-norm blocks, "
    f"{config.num_heads} heads, mlp {config.mlp_dim}, {config.num_classes} classes; "
    f"{config.pos_embed_dtype} sin-cos positions; clips of {config.max_length} frames",
  )


CONVERTER = Converter(
  name="sslam",
  version=1,
  read=read,
  description="Convert an SSLAM (or EAT) audio classifier, the authors' fairseq checkpoint or the "
  "Hugging Face copy, into a dass_jax checkpoint folder.",
  input_help="fairseq checkpoint (.pt), Hugging Face folder or model.safetensors, "
  "hf://OWNER/NAME[@REVISION], an https:// URL, or a published name "
  "(python -m convert_torch --list)",
  options=(
    heads_option(),
    Option("num_mel_bins", f"input mel bins (default: config.json, else {NUM_MEL_BINS})"),
    Option(
      "max_length", f"frames of a clip, predict pads / crops to it (default {DEFAULT_MAX_LENGTH})"
    ),
  ),
)
convert_to = CONVERTER.convert_to
main = CONVERTER.main
