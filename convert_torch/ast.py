"""Converts AST checkpoints (transformers or original YuanGongND/ast) into a dass_jax checkpoint.

    python -m convert_torch ast IN OUT_DIR [--num-heads N] [--max-length T] ...
    python -m convert_torch ast hf://MIT/ast-finetuned-audioset-10-10-0.4593 OUT_DIR

IN is a transformers folder (`config.json` + `model.safetensors` or `pytorch_model.bin`) or a
single weight file (`.safetensors`, `.bin`, `.pth`, ...) whose architecture is inferred from the
shapes; or a hub id, an https:// URL or a published name for one of them (`convert_torch.sources`:
fetched into the user's cache and verified first). OUT_DIR receives `config.json` + `params/` for
`dass_jax.load_model`.

Three key layouts are accepted (a leading `module.` from DataParallel is removed first):
  transformers         transformers 5.x in-memory `state_dict()`
  transformers_legacy  hub files and `save_pretrained` output (all transformers versions)
  original             `ASTModel` of YuanGongND/ast (timm ViT `v.*` + `mlp_head`); timm's unused
                       ImageNet heads `v.head.*` and `v.head_dist.*` are accepted and dropped.

Mapping (`param_table`, a `convert_torch.mapping` table; T = `audio_spectrogram_transformer.`;
Flax paths as in dass_jax/models/ast.py):

| Flax path   | transformers, transformers_legacy           | original           |
|-------------|---------------------------------------------|--------------------|
| patch_embed | T embeddings.patch_embeddings.projection    | v.patch_embed.proj |
| cls_token   | T embeddings.cls_token                      | v.cls_token        |
| dist_token  | T embeddings.distillation_token             | v.dist_token       |
| pos_embed   | T embeddings.position_embeddings            | v.pos_embed        |
| norm        | T layernorm                                 | v.norm             |
| head_norm   | classifier.layernorm                        | mlp_head.0         |
| head        | classifier.dense                            | mlp_head.1         |

Block i, `blocks_i/` in Flax; prefixes `T layers.i.` (transformers), `T encoder.layer.i.`
(transformers_legacy), `v.blocks.i.` (original):

| Flax path | transformers           | transformers_legacy                   | original  |
|-----------|------------------------|---------------------------------------|-----------|
| norm1     | layernorm_before       | layernorm_before                      | norm1     |
| attn/qkv  | attention.{q,k,v}_proj | attention.attention.{query,key,value} | attn.qkv  |
| attn/out  | attention.o_proj       | attention.output.dense                | attn.proj |
| norm2     | layernorm_after        | layernorm_after                       | norm2     |
| mlp/fc1   | mlp.fc1                | intermediate.dense                    | mlp.fc1   |
| mlp/fc2   | mlp.fc2                | output.dense                          | mlp.fc2   |

Position embeddings: a (1, N, D) `pos_embed` converts to the learned `pos_embed` param. The
original code's `pos_emb_type='sine'` stores `v.pos_embed` as a fixed (N, D) `get_sin_pos` table
(2-D): such a checkpoint converts to `pos_embed_type="sine"`, which has no param (the sinusoid is
recomputed for each input), after checking that the table is that sinusoid (within the float32
rounding of `dass_jax.models.ast.sinusoid_error_bound`, doubled for the two implementations).

Transforms: conv weight OIHW -> HWIO; Linear weight (out, in) -> kernel (in, out); LayerNorm
weight -> scale; separate q, k, v are stacked along the output axis into one (D, 3D) kernel
[q | k | v], which is exactly the layout of timm's fused qkv; tokens and embeddings copy.

Architecture: read from `config.json` when IN is a transformers folder. Otherwise it comes from the
shapes: hidden size, layers, MLP width, patch size, classes and qkv bias directly; heads from
`--num-heads` (default hidden / 64, the DeiT/AST convention); the patch grid from the pos-embed
count with `--num-mel-bins` (128) and `--frequency-stride`/`--time-stride` (10); max_length from
`--max-length`, else 1024 when it gives that grid, else the shortest length that does. LayerNorm
eps: transformers 1e-12 everywhere; original 1e-6 in the ViT and 1e-5 in `mlp_head`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from convert_torch import mapping
from convert_torch.converter import DEFAULT_HEAD_DIM, Conversion, Converter, Option, heads_option
from convert_torch.io import ConversionError, read_weights, split_module_prefix
from convert_torch.mapping import Rule, conv_rules, dense_rules, norm_rules, rule
from dass_jax.models import AstConfig
from dass_jax.models.ast import sinusoid_error_bound, sinusoid_positions

TRANSFORMERS, LEGACY, ORIGINAL = "transformers", "transformers_legacy", "original"
LAYOUTS = (TRANSFORMERS, LEGACY, ORIGINAL)
HF_MODEL_TYPE = "audio-spectrogram-transformer"
ORIGINAL_UNUSED = ("v.head.", "v.head_dist.")
AUDIOSET_MAX_LENGTH = 1024

_T = "audio_spectrogram_transformer."
_HF_TOP = {
  "patch": _T + "embeddings.patch_embeddings.projection",
  "cls": _T + "embeddings.cls_token",
  "dist": _T + "embeddings.distillation_token",
  "pos": _T + "embeddings.position_embeddings",
  "norm": _T + "layernorm",
  "head_norm": "classifier.layernorm",
  "head": "classifier.dense",
}
_TOP = {
  TRANSFORMERS: _HF_TOP,
  LEGACY: _HF_TOP,
  ORIGINAL: {
    "patch": "v.patch_embed.proj",
    "cls": "v.cls_token",
    "dist": "v.dist_token",
    "pos": "v.pos_embed",
    "norm": "v.norm",
    "head_norm": "mlp_head.0",
    "head": "mlp_head.1",
  },
}
_BLOCK_PREFIX = {
  TRANSFORMERS: _T + "layers.{i}.",
  LEGACY: _T + "encoder.layer.{i}.",
  ORIGINAL: "v.blocks.{i}.",
}
_BLOCK = {
  TRANSFORMERS: {
    "norm1": "layernorm_before",
    "q": "attention.q_proj",
    "k": "attention.k_proj",
    "v": "attention.v_proj",
    "out": "attention.o_proj",
    "norm2": "layernorm_after",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
  },
  LEGACY: {
    "norm1": "layernorm_before",
    "q": "attention.attention.query",
    "k": "attention.attention.key",
    "v": "attention.attention.value",
    "out": "attention.output.dense",
    "norm2": "layernorm_after",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
  },
  ORIGINAL: {
    "norm1": "norm1",
    "qkv": "attn.qkv",
    "out": "attn.proj",
    "norm2": "norm2",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
  },
}


def detect_layout(sd: dict[str, np.ndarray]) -> str:
  """Which of LAYOUTS the keys of `sd` (without `module.`) follow."""
  if any(k.startswith(("v.", "mlp_head.")) for k in sd):
    return ORIGINAL
  if any(k.startswith(_T + "encoder.layer.") for k in sd):
    return LEGACY
  if any(k.startswith(_T) for k in sd):
    return TRANSFORMERS
  sample = ", ".join(sorted(sd)[:5])
  raise ConversionError(
    f"not an AST classifier checkpoint: no key starts with 'v.', 'mlp_head.' (original AST) or "
    f"'{_T}' (transformers ASTForAudioClassification); first keys: {sample}"
  )


def strip_module_prefix(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops the `module.` prefix that DataParallel puts on every key."""
  return split_module_prefix(sd)[0]


def _module_key(layout: str, name: str, block: int | None = None) -> str:
  if block is None:
    return _TOP[layout][name]
  return _BLOCK_PREFIX[layout].format(i=block) + _BLOCK[layout][name]


def _stack_kernels(*weights: np.ndarray) -> np.ndarray:
  """torch q, k, v weights (D, D) each -> one (D, 3D) kernel [q | k | v] (timm's fused layout)."""
  return np.concatenate([w.T for w in weights], axis=-1)


def _stack_biases(*biases: np.ndarray) -> np.ndarray:
  return np.concatenate(biases)


def _qkv_rules(target: str, keys: list[str], dim: int, bias: bool) -> list[Rule]:
  """Separate q, k, v Linear layers -> one fused `target/{kernel, bias}`."""
  weights = tuple(k + ".weight" for k in keys)
  rows = [Rule(f"{target}/kernel", weights, ((dim, dim),) * 3, _stack_kernels)]
  if bias:
    biases = tuple(k + ".bias" for k in keys)
    rows.append(Rule(f"{target}/bias", biases, ((dim,),) * 3, _stack_biases))
  return rows


def param_table(config: AstConfig, layout: str) -> list[Rule]:
  """Every key of a `layout` state dict (without `module.`) for `config`: Flax path, shape and
  transform (a `convert_torch.mapping` table). A sine-position checkpoint's fixed table is read
  (and checked by `convert_state_dict`) but gives no param."""
  d, m, p, c = config.hidden_size, config.mlp_dim, config.patch_size, config.num_classes
  top = _TOP[layout]
  table = [
    *conv_rules("patch_embed", top["patch"], (d, 1, p, p)),
    rule("cls_token", top["cls"], (1, 1, d)),
    rule("dist_token", top["dist"], (1, 1, d)),
  ]
  if config.pos_embed_type == "sine":
    if layout != ORIGINAL:
      raise ConversionError(f"the {layout} layout has learned positions only, not 'sine'")
    table.append(rule(None, top["pos"], (config.num_patches + 2, d)))
  else:
    table.append(rule("pos_embed", top["pos"], (1, config.num_patches + 2, d)))
  for i in range(config.num_layers):
    key = lambda name, i=i: _module_key(layout, name, i)
    path = f"blocks_{i}"
    table += norm_rules(f"{path}/norm1", key("norm1"), d)
    if layout == ORIGINAL:
      table += dense_rules(f"{path}/attn/qkv", key("qkv"), 3 * d, d, config.qkv_bias)
    else:
      table += _qkv_rules(f"{path}/attn/qkv", [key(n) for n in ("q", "k", "v")], d, config.qkv_bias)
    table += dense_rules(f"{path}/attn/out", key("out"), d, d)
    table += norm_rules(f"{path}/norm2", key("norm2"), d)
    table += dense_rules(f"{path}/mlp/fc1", key("fc1"), m, d)
    table += dense_rules(f"{path}/mlp/fc2", key("fc2"), d, m)
  table += norm_rules("norm", top["norm"], d)
  table += norm_rules("head_norm", top["head_norm"], d)
  table += dense_rules("head", top["head"], c, d)
  return table


def expected_shapes(config: AstConfig, layout: str) -> dict[str, tuple[int, ...]]:
  """Every key of a `layout` state dict for `config`, with its torch shape."""
  return mapping.expected_shapes(param_table(config, layout))


def convert_state_dict(
  sd: dict[str, np.ndarray], config: AstConfig, layout: str | None = None
) -> dict:
  """Maps a torch AST state dict (numpy values) onto the dass_jax `AST(config)` params tree.

  Raises ConversionError naming every missing, unexpected or mis-shaped key.
  """
  sd = strip_module_prefix(sd)
  layout = layout or detect_layout(sd)
  dropped = ORIGINAL_UNUSED if layout == ORIGINAL else ()
  what = f"AST ({layout} layout)"
  params = mapping.params_from_table(param_table(config, layout), sd, config, what, dropped=dropped)
  if config.pos_embed_type == "sine":
    pos = _TOP[layout]["pos"]
    _check_sinusoid(np.asarray(sd[pos], np.float32), pos)
  return params


def _check_sinusoid(table: np.ndarray, key: str) -> None:
  """Raises ConversionError unless the (N, D) `table` is the sine positions' sinusoid."""
  n, d = table.shape
  ours = np.asarray(sinusoid_positions(n, d), np.float64)
  excess = np.abs(table - ours) - 2 * sinusoid_error_bound(n, d)
  if excess.max() > 0:
    row, col = np.unravel_index(int(np.argmax(excess)), excess.shape)
    raise ConversionError(
      f"{key} is a fixed (N, D) table, as the original's pos_emb_type='sine' stores it, but not "
      f"its sinusoid: entry ({row}, {col}) is {table[row, col]:.6g}, the sinusoid "
      f"{ours[row, col]:.6g}"
    )


def config_from_transformers(hf: dict) -> AstConfig:
  """AstConfig from a transformers `ASTConfig` dict (`config.json`)."""
  if hf.get("model_type") != HF_MODEL_TYPE:
    raise ConversionError(
      f"config.json has model_type {hf.get('model_type')!r}, expected {HF_MODEL_TYPE!r}"
    )
  if hf.get("hidden_act", "gelu") != "gelu":
    raise ConversionError(
      f"hidden_act {hf['hidden_act']!r} is not supported (AST uses exact 'gelu')"
    )
  patch = hf.get("patch_size", 16)
  if not isinstance(patch, int):
    raise ConversionError(f"patch_size {patch!r} is not supported: transformers' AST needs an int")
  num_labels = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 2)
  eps = hf.get("layer_norm_eps", 1e-12)
  return AstConfig(
    num_classes=num_labels,
    hidden_size=hf.get("hidden_size", 768),
    num_layers=hf.get("num_hidden_layers", 12),
    num_heads=hf.get("num_attention_heads", 12),
    mlp_dim=hf.get("intermediate_size", 3072),
    patch_size=patch,
    frequency_stride=hf.get("frequency_stride", 10),
    time_stride=hf.get("time_stride", 10),
    num_mel_bins=hf.get("num_mel_bins", 128),
    max_length=hf.get("max_length", 1024),
    qkv_bias=hf.get("qkv_bias", True),
    layer_norm_eps=eps,
    head_layer_norm_eps=eps,
    dropout_rate=hf.get("hidden_dropout_prob", 0.0),
  )


def infer_config(
  sd: dict[str, np.ndarray],
  layout: str,
  num_heads: int | None = None,
  num_mel_bins: int = 128,
  frequency_stride: int = 10,
  time_stride: int = 10,
  max_length: int | None = None,
) -> AstConfig:
  """Architecture of a state dict (without `module.`) from its shapes and the given hints."""
  top = _TOP[layout]
  shape = lambda key: mapping.shape_of(sd, key, None, "AST")
  dim = shape(top["cls"])[-1]
  patch_shape = shape(top["patch"] + ".weight")
  if len(patch_shape) != 4 or patch_shape[-1] != patch_shape[-2]:
    raise ConversionError(
      f"{top['patch']}.weight has shape {patch_shape}, expected a square (D, 1, P, P) patch conv"
    )
  patch = patch_shape[-1]
  prefix = _BLOCK_PREFIX[layout].split("{i}")[0]
  num_layers = len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})
  mlp_dim = shape(_module_key(layout, "fc1", 0) + ".weight")[0] if num_layers else 4 * dim
  qkv_name = "qkv" if layout == ORIGINAL else "q"
  qkv_bias = _module_key(layout, qkv_name, 0) + ".bias" in sd
  if num_heads is None:
    if dim % DEFAULT_HEAD_DIM:
      raise ConversionError(
        f"hidden size {dim} is not a multiple of {DEFAULT_HEAD_DIM}: "
        "give the number of heads (--num-heads)"
      )
    num_heads = dim // DEFAULT_HEAD_DIM
  freq = (num_mel_bins - patch) // frequency_stride + 1
  pos_shape = shape(top["pos"])
  pos_embed_type = "sine" if len(pos_shape) == 2 and layout == ORIGINAL else "learned"
  num_patches = pos_shape[0 if pos_embed_type == "sine" else 1] - 2
  if freq < 1 or num_patches % freq:
    raise ConversionError(
      f"{top['pos']} holds {num_patches} patches, not a multiple of the {freq} frequency "
      f"patches of num_mel_bins={num_mel_bins}, frequency_stride={frequency_stride}: give "
      "the right --num-mel-bins / --frequency-stride"
    )
  time = num_patches // freq
  shortest = (time - 1) * time_stride + patch
  if max_length is None:
    fits = (AUDIOSET_MAX_LENGTH - patch) // time_stride + 1 == time
    max_length = AUDIOSET_MAX_LENGTH if fits else shortest
  base = AstConfig.original_repo if layout == ORIGINAL else AstConfig
  config = base(
    num_classes=shape(top["head"] + ".weight")[0],
    hidden_size=dim,
    num_layers=num_layers,
    num_heads=num_heads,
    mlp_dim=mlp_dim,
    patch_size=patch,
    frequency_stride=frequency_stride,
    time_stride=time_stride,
    num_mel_bins=num_mel_bins,
    max_length=max_length,
    qkv_bias=qkv_bias,
    pos_embed_type=pos_embed_type,
  )
  if config.grid != (freq, time):
    raise ConversionError(
      f"max_length={max_length} gives {config.grid[1]} time patches but {top['pos']} holds "
      f"{time} ({freq} x {time} grid): use --max-length {shortest} (or up to "
      f"{shortest + time_stride - 1}) or the right --time-stride"
    )
  return config


def convert(
  path: str | Path,
  num_heads: int | None = None,
  num_mel_bins: int | None = None,
  frequency_stride: int | None = None,
  time_stride: int | None = None,
  max_length: int | None = None,
) -> tuple[AstConfig, dict, str]:
  """Reads and converts IN; returns (config, params, layout).

  With a `config.json` (transformers folder) the architecture comes from it and any hint given
  here overrides its field; otherwise the hints guide `infer_config`.
  """
  sd, hf = read_weights(path)
  sd = strip_module_prefix(sd)
  layout = detect_layout(sd)
  hints = {
    "num_heads": num_heads,
    "num_mel_bins": num_mel_bins,
    "frequency_stride": frequency_stride,
    "time_stride": time_stride,
    "max_length": max_length,
  }
  given = {k: v for k, v in hints.items() if v is not None}
  try:
    if hf is not None:
      config = dataclasses.replace(config_from_transformers(hf), **given)
    else:
      config = infer_config(sd, layout, **given)
  except ConversionError:
    raise
  except ValueError as e:  # AstConfig validation
    raise ConversionError(f"{path}: inconsistent architecture: {e}") from e
  return config, convert_state_dict(sd, config, layout), layout


def read(path: str | Path, **hints) -> Conversion:
  """Converts a local AST folder or weight file (`convert`'s hints as keywords)."""
  config, params, layout = convert(path, **hints)
  freq, time = config.grid
  return Conversion(
    config,
    params,
    source_format=f"ast/{layout}",
    layout=f"{layout} layout",
    details=f"hidden {config.hidden_size}, {config.num_layers} layers, {config.num_heads} heads, "
    f"{config.num_classes} classes; {freq} x {time} patches for {config.num_mel_bins} mel x "
    f"{config.max_length} frames",
  )


CONVERTER = Converter(
  name="ast",
  version=1,
  read=read,
  description="Convert an AST checkpoint (transformers folder or weight file, or the original "
  "YuanGongND/ast .pth) into a dass_jax checkpoint folder.",
  input_help="transformers folder (config.json + weights) or weight file, "
  "hf://OWNER/NAME[@REVISION], an https:// URL, or a published name "
  "(python -m convert_torch --list)",
  options=(
    heads_option(),
    Option("num_mel_bins", "input mel bins (default 128)"),
    Option("frequency_stride", "patch stride over mel (default 10)"),
    Option("time_stride", "patch stride over frames (default 10)"),
    Option(
      "max_length",
      "input frames (default: config.json, else 1024 when it fits the pos-embed grid, else the "
      "shortest length that does)",
    ),
  ),
)
convert_to = CONVERTER.convert_to
main = CONVERTER.main
