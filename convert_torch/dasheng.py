"""Converts Dasheng checkpoints (encoders and the AudioSet classifier) into a dass_jax checkpoint.

    python -m convert_torch dasheng IN OUT_DIR [--num-heads N]
    python -m convert_torch dasheng dasheng-audioset-49.7 OUT_DIR       # a published name

IN may also be an hf:// hub id, an https:// URL or a published name (`python -m convert_torch
--list`): `convert_torch.sources` fetches it into the user's cache and verifies it first.

IN is one of three layouts, recognised by their keys (read by `convert_torch.io.load_state_dict`,
i.e. `torch.load(weights_only=True)` or safetensors):
  encoder     a released encoder file (`dasheng_base.pt`, `dasheng_06b.pt`, `dasheng_12b.pt`):
              `{"model": state_dict, "config": {...}}`; the state dict is read, the training config
              beside it is not needed (the architecture comes from the shapes)
  hf          a Hugging Face folder (`model.safetensors`, `config.json`) or its `model.safetensors`:
              the encoder keys under `encoder.`, without the front-end buffers (a head saved as
              `outputlayer.*` beside them is taken too)
  classifier  the AudioSet classifier (`dasheng_audioset_mAP497.pt`): a flat state dict of the
              encoder keys plus `outputlayer.0.*` (LayerNorm) and `outputlayer.1.*` (Linear)
Every key is consumed or the file is refused with the list of missing, unexpected and mis-shaped
keys.

Mapping (`param_table`, a `convert_torch.mapping` table; torch key -> Flax path in
dass_jax/models/dasheng.py; D = embed_dim, K = chunk_tokens):

| torch key (hf: `encoder.` + key)      | Flax path                 | transform             |
|---------------------------------------|---------------------------|-----------------------|
| init_bn.1.running_mean, running_var   | init_bn/mean, init_bn/var | copy                  |
| init_bn.1.weight, bias                | init_bn/scale, bias       | copy                  |
| init_bn.1.num_batches_tracked         | -                         | dropped (a counter)   |
| patch_embed.proj (D, 1, 64, 4)        | patch_embed               | conv OIHW -> HWIO     |
| time_pos_embed (1, D, 1, K)           | time_pos_embed (K, D)     | [0, :, 0, :].T        |
| freq_pos_embed (1, D, 1, 1)           | freq_pos_embed (D,)       | [0, :, 0, 0]          |
| blocks.{i}.norm1, norm2               | blocks_i/norm1, norm2     | weight -> scale       |
| blocks.{i}.attn.qkv (3D, D)           | blocks_i/attn/qkv         | linear, rows [q;k;v]  |
| blocks.{i}.attn.proj                  | blocks_i/attn/out         | linear                |
| blocks.{i}.mlp.fc1, fc2               | blocks_i/mlp/fc1, fc2     | linear                |
| norm                                  | norm                      | weight -> scale       |
| outputlayer.0 (classifier)            | head_norm                 | weight -> scale       |
| outputlayer.1 (classifier)            | head                      | linear                |

The front-end buffers `front_end.0.spectrogram.window` (512,) and `front_end.0.mel_scale.fb`
(257, 64) hold no weights: they are compared with dass_jax's own window and filterbank
(`dass_jax.frontends.dasheng_mel.check_buffers`) and a mismatch is refused.

Architecture from the shapes: D, mlp_dim, depth, chunk_tokens (from time_pos_embed) and classes
(0 without `outputlayer`, i.e. an encoder that gives embeddings, not labels). Heads are not in the
shapes: `--num-heads`, else a Hugging Face config.json's model name, else the published sizes
(D 768 -> 12 heads, 1280 -> 16, 1536 -> 24); another D needs `--num-heads`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert_torch import mapping
from convert_torch.converter import Conversion, Converter, Option
from convert_torch.io import ConversionError, read_weights
from convert_torch.mapping import Rule, conv_rules, dense_rules, norm_rules, rule
from dass_jax.frontends import dasheng_mel
from dass_jax.models import DashengConfig
from dass_jax.models.dasheng import PATCH_FRAMES

ENCODER, HF, CLASSIFIER = "encoder", "hf", "classifier"
LAYOUTS = (ENCODER, HF, CLASSIFIER)
HF_PREFIX = "encoder."
HEAD_PREFIX = "outputlayer."
WINDOW_KEY = "front_end.0.spectrogram.window"
FB_KEY = "front_end.0.mel_scale.fb"
BN_COUNTER_KEY = "init_bn.1.num_batches_tracked"
# Heads of the published sizes, by embed_dim (the HF config names them; the shapes cannot).
HEADS_BY_DIM = {768: 12, 1280: 16, 1536: 24}
HEADS_BY_HF_NAME = {"dasheng-base": 12, "dasheng-0.6B": 16, "dasheng-1.2B": 24}


def detect_layout(sd: dict[str, np.ndarray]) -> str:
  """Which of LAYOUTS the keys of `sd` follow."""
  if any(k.startswith(HF_PREFIX) for k in sd):
    return HF
  if any(k.startswith(HEAD_PREFIX) for k in sd):
    return CLASSIFIER
  if "patch_embed.proj.weight" in sd:
    return ENCODER
  sample = ", ".join(sorted(sd)[:5])
  raise ConversionError(
    f"not a Dasheng checkpoint: no 'patch_embed.proj.weight', '{HF_PREFIX}*' or "
    f"'{HEAD_PREFIX}*' key; first keys: {sample}"
  )


def canonical(sd: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
  """The state dict with the encoder keys unprefixed (hf: `encoder.` removed)."""
  if layout != HF:
    return dict(sd)
  return {k[len(HF_PREFIX) :] if k.startswith(HF_PREFIX) else k: v for k, v in sd.items()}


def _time_pos(table: np.ndarray) -> np.ndarray:
  """time_pos_embed (1, D, 1, K) -> (K, D)."""
  return table[0, :, 0, :].T


def _freq_pos(table: np.ndarray) -> np.ndarray:
  """freq_pos_embed (1, D, 1, 1) -> (D,)."""
  return table[0, :, 0, 0]


def param_table(config: DashengConfig, front_end: bool, bn_counter: bool) -> list[Rule]:
  """Every key of a canonical Dasheng state dict for `config`: Flax path, shape and transform
  (a `convert_torch.mapping` table; the front-end buffers and BatchNorm's counter give no param).

  Args:
    config: the architecture.
    front_end: include the two front-end buffers (encoder and classifier files hold them).
    bn_counter: include BatchNorm's `num_batches_tracked` counter.
  """
  d, m, mel = config.embed_dim, config.mlp_dim, dasheng_mel.N_MELS
  table = []
  if front_end:
    table.append(rule(None, WINDOW_KEY, (dasheng_mel.WIN_LENGTH,)))
    table.append(rule(None, FB_KEY, (dasheng_mel.N_FFT // 2 + 1, mel)))
  table += [
    rule("init_bn/mean", "init_bn.1.running_mean", (mel,)),
    rule("init_bn/var", "init_bn.1.running_var", (mel,)),
    rule("init_bn/scale", "init_bn.1.weight", (mel,)),
    rule("init_bn/bias", "init_bn.1.bias", (mel,)),
  ]
  if bn_counter:
    table.append(rule(None, BN_COUNTER_KEY, ()))
  table += conv_rules("patch_embed", "patch_embed.proj", (d, 1, mel, PATCH_FRAMES))
  table.append(rule("time_pos_embed", "time_pos_embed", (1, d, 1, config.chunk_tokens), _time_pos))
  table.append(rule("freq_pos_embed", "freq_pos_embed", (1, d, 1, 1), _freq_pos))
  for i in range(config.depth):
    block, path = f"blocks.{i}.", f"blocks_{i}/"
    table += norm_rules(path + "norm1", block + "norm1", d)
    table += dense_rules(path + "attn/qkv", block + "attn.qkv", 3 * d, d)
    table += dense_rules(path + "attn/out", block + "attn.proj", d, d)
    table += norm_rules(path + "norm2", block + "norm2", d)
    table += dense_rules(path + "mlp/fc1", block + "mlp.fc1", m, d)
    table += dense_rules(path + "mlp/fc2", block + "mlp.fc2", d, m)
  table += norm_rules("norm", "norm", d)
  if config.num_classes:
    table += norm_rules("head_norm", HEAD_PREFIX + "0", d)
    table += dense_rules("head", HEAD_PREFIX + "1", config.num_classes, d)
  return table


def expected_shapes(
  config: DashengConfig, front_end: bool, bn_counter: bool
) -> dict[str, tuple[int, ...]]:
  """Every key of a canonical Dasheng state dict for `config`, with its torch shape."""
  return mapping.expected_shapes(param_table(config, front_end, bn_counter))


def infer_config(
  sd: dict[str, np.ndarray], num_heads: int | None = None, hf_config: dict | None = None
) -> DashengConfig:
  """The architecture of a canonical state dict from its shapes (heads: see the module doc)."""

  shape = lambda key: mapping.shape_of(sd, key, None, "Dasheng")
  patch = shape("patch_embed.proj.weight")
  if len(patch) != 4 or patch[1:] != (1, dasheng_mel.N_MELS, PATCH_FRAMES):
    raise ConversionError(
      f"patch_embed.proj.weight has shape {patch}; Dasheng's patch conv is "
      f"(D, 1, {dasheng_mel.N_MELS}, {PATCH_FRAMES})"
    )
  dim = patch[0]
  depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
  time_pos = shape("time_pos_embed")
  if len(time_pos) != 4:
    raise ConversionError(f"time_pos_embed has shape {time_pos}, expected (1, D, 1, tokens)")
  mlp_dim = shape("blocks.0.mlp.fc1.weight")[0] if depth else 4 * dim
  num_classes = shape(HEAD_PREFIX + "1.weight")[0] if HEAD_PREFIX + "1.weight" in sd else 0
  if num_heads is None:
    name = (hf_config or {}).get("name")
    num_heads = HEADS_BY_HF_NAME.get(name) or HEADS_BY_DIM.get(dim)
    if num_heads is None:
      raise ConversionError(
        f"embed_dim {dim} is not a published Dasheng size ({sorted(HEADS_BY_DIM)}): give the "
        "number of attention heads with --num-heads"
      )
  try:
    return DashengConfig(
      num_classes=num_classes,
      embed_dim=dim,
      depth=depth,
      num_heads=num_heads,
      mlp_dim=mlp_dim,
      chunk_tokens=time_pos[-1],
    )
  except ValueError as e:
    raise ConversionError(f"inconsistent architecture: {e}") from e


def convert_state_dict(sd: dict[str, np.ndarray], config: DashengConfig, layout: str) -> dict:
  """Maps a Dasheng state dict (numpy values, any layout) onto the `Dasheng(config)` params tree.

  Raises:
    ConversionError: missing, unexpected or mis-shaped keys (all listed), or front-end buffers
      that differ from dass_jax's window / mel filterbank.
  """
  sd = canonical(sd, layout)
  table = param_table(config, FB_KEY in sd or WINDOW_KEY in sd, BN_COUNTER_KEY in sd)
  params = mapping.params_from_table(table, sd, config, f"Dasheng ({layout} layout)")
  problems = dasheng_mel.check_buffers(sd.get(WINDOW_KEY), sd.get(FB_KEY))
  if problems:
    raise ConversionError("Dasheng front end does not match:\n  " + "\n  ".join(problems))
  return params


def convert(path: str | Path, num_heads: int | None = None) -> tuple[DashengConfig, dict, str]:
  """Reads and converts IN; returns (config, params, layout)."""
  sd, hf = read_weights(path)
  layout = detect_layout(sd)
  config = infer_config(canonical(sd, layout), num_heads, hf)
  return config, convert_state_dict(sd, config, layout), layout


def read(path: str | Path, num_heads: int | None = None) -> Conversion:
  """Converts a local Dasheng weight file or Hugging Face folder."""
  config, params, layout = convert(path, num_heads=num_heads)
  head = f"{config.num_classes} classes" if config.num_classes else "encoder only (no classifier)"
  return Conversion(
    config,
    params,
    source_format=f"dasheng/{layout}",
    layout=f"{layout} layout",
    details=f"embed {config.embed_dim}, {config.depth} blocks, {config.num_heads} heads, "
    f"mlp {config.mlp_dim}, {config.chunk_tokens}-token chunks; {head}",
  )


CONVERTER = Converter(
  name="dasheng",
  version=1,
  read=read,
  description="Convert a Dasheng encoder (.pt), Hugging Face folder (model.safetensors) or the "
  "AudioSet classifier state dict into a dass_jax checkpoint folder.",
  input_help="weight file (.pt / .safetensors) or Hugging Face folder, "
  "hf://OWNER/NAME[@REVISION], an https:// URL, or a published name "
  "(python -m convert_torch --list)",
  options=(
    Option(
      "num_heads",
      "attention heads (default: the published size of the embed dim, 768 -> 12, "
      "1280 -> 16, 1536 -> 24)",
    ),
  ),
)
convert_to = CONVERTER.convert_to
main = CONVERTER.main
