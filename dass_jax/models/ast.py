"""Audio Spectrogram Transformer (AST, Gong et al. 2021) in Flax Linen: the DASS teacher.

    model = AST(AstConfig())                                  # AudioSet: 128 mel x 1024 frames
    logits = model.apply({"params": params}, fbank)           # fbank: (batch, frames, 128)

Computation, as the original `ASTModel.forward` and `transformers.ASTForAudioClassification`:
  (batch, frames, mel) -> NHWC (batch, mel, frames, 1) [torch: NCHW (batch, 1, mel, frames)]
  -> patch conv (patch_size^2 kernel, strides (frequency_stride, time_stride), no padding)
  -> (batch, F*T, D) tokens in row-major (freq, time) order, F x T = `config.grid`
  -> prepend [cls, dist] -> + position embeddings (1, F*T + 2, D) -> dropout
  -> num_layers pre-norm blocks: x += attn(LN(x)); x += mlp(LN(x)), exact GELU
  -> LN (`norm`) -> mean of the cls and dist tokens -> LN (`head_norm`) -> Dense (`head`).
Position embeddings (`AstConfig.pos_embed_type`):
  learned  a (1, F*T + 2, D) param `pos_embed`, which fixes the input size: frames must give
           `config.grid[1]` time patches (`max_length`, or up to time_stride - 1 more frames, whose
           tail the conv ignores). The published models pad or crop features to `max_length`;
           `with_max_length` resizes the embeddings for another length instead.
  sine     no param: the DASS authors' `get_sin_pos(F*T + 2, D)` (`sinusoid_positions`), a 1-D
           sinusoid over the flattened token index (cls 0, dist 1, patch (f, t) at 2 + f*T + t),
           computed for the input's own grid, so any input of at least patch_size frames runs
           (the frequency-major index means a patch's embedding changes with T). This is the
           original's `pos_emb_type='sine'`, and what its length study substitutes into every AST
           at every length (`for_length(..., "sine")`).

Params tree (D = hidden_size, M = mlp_dim, P = patch_size, C = num_classes, i = block index):
  patch_embed/{kernel (P, P, 1, D), bias (D,)}
  cls_token (1, 1, D), dist_token (1, 1, D), pos_embed (1, F*T + 2, D) (learned only)
  blocks_i/norm1/{scale, bias}               (D,)
  blocks_i/attn/qkv/{kernel (D, 3D), bias}   output columns [q | k | v], each head-major (h, d)
  blocks_i/attn/out/{kernel (D, D), bias}
  blocks_i/norm2/{scale, bias}               (D,)
  blocks_i/mlp/fc1/{kernel (D, M), bias}, blocks_i/mlp/fc2/{kernel (M, D), bias}
  norm/{scale, bias}, head_norm/{scale, bias} (D,), head/{kernel (D, C), bias (C,)}
`convert_torch/ast.py` documents the mapping from both PyTorch formats.

Intermediates: applied with `mutable=["intermediates"]`, the model sows `hidden_states` (a tuple of
num_layers + 1 arrays (batch, F*T + 2, D): the embeddings, then each block's output, as
transformers' `output_hidden_states`), `last_hidden_state` (after `norm`) and `pooled` (batch, D).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dass_jax import attention
from dass_jax.constants import NUM_MEL_BINS
from dass_jax.layers import (
  DTYPES,
  TransformerBlock,
  compute_dtype,
  dense,
  layer_norm,
  patch_conv,
  resize_pos_embed_grid,
)
from dass_jax.layers import trunc_normal_init as init
from dass_jax.models.base import ModelConfig, check_choice, check_patch_transformer

NUM_EXTRA_TOKENS = 2  # cls and distillation tokens
POS_EMBED_TYPES = ("learned", "sine")
SINE_RATE = 1e4  # the sinusoid's longest period is 2 pi SINE_RATE tokens (get_sin_pos' default)
# How `for_length` runs a learned-position AST at another length.
LENGTH_EXTENSIONS = ("sine", "interpolate", "refuse")


@dataclasses.dataclass(frozen=True)
class AstConfig(ModelConfig):
  """Audio Spectrogram Transformer (the teacher), as `transformers.ASTForAudioClassification`.

  Defaults are the AudioSet model: 16x16 patches, strides 10/10 over 128 mel x 1024 frames
  (12 x 101 = 1212 patches, plus class and distillation tokens), with transformers' LayerNorm eps.
  `AstConfig.original_repo()` gives the eps of the original AST code (timm ViT blocks 1e-6,
  `mlp_head` LayerNorm 1e-5).

  Attributes:
    num_classes: classifier outputs (527 for AudioSet).
    hidden_size: token width D.
    num_layers: transformer blocks.
    num_heads: attention heads (head dim D / num_heads).
    mlp_dim: hidden width of the block MLP.
    patch_size: square patch side of the patch-embedding conv.
    frequency_stride: conv stride over mel bins.
    time_stride: conv stride over frames.
    num_mel_bins: input frequency bins.
    max_length: input frames of training (the size of learned position embeddings).
    qkv_bias: whether the query/key/value projections have biases.
    layer_norm_eps: eps of the block LayerNorms and the final encoder LayerNorm.
    head_layer_norm_eps: eps of the classifier head's LayerNorm.
    dropout_rate: dropout after the embeddings, the attention output and the MLP (train only).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
    pos_embed_type: 'learned' (a `pos_embed` param for the max_length grid) or 'sine' (the DASS
      authors' fixed sinusoid over the flattened token index, computed for any input length).
    attention_impl: how attention runs ('auto', 'xla', 'cudnn', 'blocked';
      `dass_jax.attention`): a choice of speed, not of the model.
  """

  model_type: ClassVar[str] = "ast"
  RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"dropout_rate", "dtype"})

  num_classes: int = 527
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 16
  frequency_stride: int = 10
  time_stride: int = 10
  num_mel_bins: int = NUM_MEL_BINS
  max_length: int = 1024
  qkv_bias: bool = True
  layer_norm_eps: float = 1e-12
  head_layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.0
  dtype: str = "float32"
  pos_embed_type: str = "learned"
  attention_impl: str = "auto"

  def __post_init__(self):
    check_choice(self.dtype, DTYPES, "AstConfig.dtype")
    check_choice(self.attention_impl, attention.IMPLEMENTATIONS, "AstConfig.attention_impl")
    check_choice(self.pos_embed_type, POS_EMBED_TYPES, "AstConfig.pos_embed_type")
    if self.pos_embed_type == "sine" and self.hidden_size % 2:
      raise ValueError(f"sine positions need an even hidden_size, got {self.hidden_size}")
    check_patch_transformer(self)

  def example_input_shape(self) -> tuple[int, ...]:
    return (1, self.max_length, self.num_mel_bins)

  @property
  def grid(self) -> tuple[int, int]:
    """(frequency patches, time patches) of the patch-embedding conv (no padding)."""
    return (
      (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1,
      (self.max_length - self.patch_size) // self.time_stride + 1,
    )

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @classmethod
  def original_repo(cls, **overrides) -> AstConfig:
    """The LayerNorm eps of YuanGongND/ast (timm ViT 1e-6, `mlp_head` torch default 1e-5)."""
    return cls(**{"layer_norm_eps": 1e-6, "head_layer_norm_eps": 1e-5, **overrides})


class AST(nn.Module):
  """AST classifier: (batch, frames, num_mel_bins) fbank -> (batch, num_classes) fp32 logits.

  `train=True` enables dropout (rng stream 'dropout') when `config.dropout_rate > 0`.
  """

  config: AstConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    _check_input(cfg, x.shape)
    batch, dim = x.shape[0], cfg.hidden_size
    # (B, T, M) -> torch NCHW (B, 1, M, T) -> NHWC (B, M, T, 1): H is frequency, W is time.
    x = jnp.swapaxes(x, 1, 2)[..., None].astype(dtype)
    p = cfg.patch_size
    strides = (cfg.frequency_stride, cfg.time_stride)
    x = patch_conv(dim, (p, p), strides, "patch_embed", dtype)(x)
    num_tokens = x.shape[1] * x.shape[2] + NUM_EXTRA_TOKENS
    x = x.reshape(batch, -1, dim)  # (B, F*T, D), index f * T + t as torch flatten(2)
    cls = self.param("cls_token", init, (1, 1, dim), jnp.float32)
    dist = self.param("dist_token", init, (1, 1, dim), jnp.float32)
    if cfg.pos_embed_type == "sine":
      pos = sinusoid_positions(num_tokens, dim)[None]
    else:
      pos = self.param("pos_embed", init, (1, num_tokens, dim), jnp.float32)
    tokens = jnp.broadcast_to(jnp.concatenate([cls, dist], axis=1), (batch, 2, dim))
    x = jnp.concatenate([tokens.astype(dtype), x], axis=1) + pos.astype(dtype)
    x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)
    self.sow("intermediates", "hidden_states", x)
    for i in range(cfg.num_layers):
      x = TransformerBlock(
        cfg.num_heads,
        cfg.mlp_dim,
        cfg.layer_norm_eps,
        cfg.qkv_bias,
        cfg.dropout_rate,
        dtype,
        cfg.attention_impl,
        name=f"blocks_{i}",
      )(x, train)
      self.sow("intermediates", "hidden_states", x)
    x = layer_norm("norm", cfg.layer_norm_eps, dtype)(x)
    self.sow("intermediates", "last_hidden_state", x)
    pooled = (x[:, 0] + x[:, 1]) / 2
    self.sow("intermediates", "pooled", pooled)
    pooled = layer_norm("head_norm", cfg.head_layer_norm_eps, dtype)(pooled)
    return dense(cfg.num_classes, "head", dtype)(pooled).astype(jnp.float32)


def hidden_states(intermediates: Any, config: AstConfig) -> jax.Array:
  """The last hidden state as a time sequence, (batch, time patches, D): the patch tokens of
  `last_hidden_state` (cls and dist dropped) on their (frequency, time) grid, averaged over
  frequency. From `apply(..., mutable=["intermediates"])`."""
  x = intermediates["last_hidden_state"][-1][:, NUM_EXTRA_TOKENS:]
  freq = config.grid[0]
  return jnp.mean(x.reshape(x.shape[0], freq, x.shape[1] // freq, x.shape[2]), axis=1)


def sinusoid_positions(num_positions: int, dim: int, rate: float = SINE_RATE) -> jax.Array:
  """The DASS authors' `get_sin_pos(num_positions, dim)`: (num_positions, dim) float32.

  Row n holds sin(n w_k) in column 2k and cos(n w_k) in column 2k + 1, w_k = exp(-2k ln(rate) /
  dim). Computed in float32 as the original computes it: the exponent 2k * (-ln(rate) / dim) is a
  float32 product, w_k its exponential rounded to float32 (correctly rounded here; torch's float32
  exp is one ulp off for a few k), the angle n w_k a float32 product. The angle's rounding then
  dominates at large n: values differ from the exact sinusoid by up to `sinusoid_error_bound`
  (about 0.2 at n = 10^6), in the original as here. Computed inside the jit (no constant of
  num_positions x dim is embedded in the program).
  """
  if dim % 2:
    raise ValueError(f"sinusoid positions need an even dim, got {dim}")
  angles = jnp.arange(num_positions, dtype=jnp.float32)[:, None] * _sinusoid_freqs(dim, rate)
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(num_positions, dim)


def _sinusoid_freqs(dim: int, rate: float) -> np.ndarray:
  """(dim // 2,) float32 w_k, as `sinusoid_positions` computes them."""
  exponent = np.arange(0, dim, 2).astype(np.float32) * np.float32(-(math.log(rate) / dim))
  return np.exp(exponent.astype(np.float64)).astype(np.float32)


def sinusoid_error_bound(num_positions: int, dim: int, rate: float = SINE_RATE) -> np.ndarray:
  """(num_positions, dim) bound on |float32 sinusoid - exact sinusoid|, element by element.

  The float32 angle n w_k carries a relative error of at most (2 |ln w_k| + 3) 2^-24 (the
  exponent's product and the rounding of ln(rate) / dim, of w_k, of the angle), i.e. an absolute
  error n w_k (2 |ln w_k| + 3) 2^-24, plus 2^-23 for sin/cos themselves.
  """
  freqs = _sinusoid_freqs(dim, rate).astype(np.float64)
  per_freq = freqs * (2 * np.abs(np.log(freqs)) + 3) * 2.0**-24
  bound = np.arange(num_positions, dtype=np.float64)[:, None] * per_freq + 2.0**-23
  return np.repeat(bound, 2, axis=1)


def _check_input(cfg: AstConfig, shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `shape` is (batch, frames, num_mel_bins) with frames the model runs
  (learned positions: giving `cfg.grid`; sine: at least one patch)."""
  if len(shape) != 3 or shape[-1] != cfg.num_mel_bins:
    raise ValueError(
      f"AST expects (batch, frames, {cfg.num_mel_bins}) fbank features, got shape {tuple(shape)}"
    )
  if cfg.pos_embed_type == "sine":
    if shape[1] < cfg.patch_size:
      raise ValueError(f"AST needs at least {cfg.patch_size} frames, got {shape[1]}")
    return
  time_patches = cfg.grid[1]
  got = (shape[1] - cfg.patch_size) // cfg.time_stride + 1 if shape[1] >= cfg.patch_size else 0
  if got != time_patches:
    lo = (time_patches - 1) * cfg.time_stride + cfg.patch_size
    raise ValueError(
      f"AST position embeddings are sized for {time_patches} time patches "
      f"(max_length={cfg.max_length}: inputs of {lo}..{lo + cfg.time_stride - 1} frames), got "
      f"{shape[1]} frames ({got} patches); pad or crop the features to max_length, or resize "
      f"the position embeddings with dass_jax.models.ast.with_max_length"
    )


def interpolate_pos_embed(
  pos_embed: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int]
) -> jax.Array:
  """Resizes AST position embeddings to another patch grid.

  The patch part of `pos_embed` is viewed as a (freq_patches, time_patches) grid of D-vectors and
  resized bilinearly with half-pixel centres and no antialiasing, i.e. torch
  `F.interpolate(mode="bilinear", align_corners=False)`, which the original AST uses to lengthen
  its embeddings (for shorter inputs the original crops the middle instead). The cls and dist
  embeddings are kept. The same grid returns the embeddings unchanged.

  Args:
    pos_embed: (1, F*T + 2, D) embeddings, patches in row-major (freq, time) order.
    grid: (F, T) of `pos_embed`.
    new_grid: (F', T') wanted.

  Returns:
    (1, F'*T' + 2, D) embeddings in the dtype of `pos_embed`.
  """
  return resize_pos_embed_grid(
    pos_embed, grid, new_grid, prefix_tokens=NUM_EXTRA_TOKENS, antialias=False
  )


def with_max_length(params: Any, config: AstConfig, max_length: int) -> tuple[dict, AstConfig]:
  """Adapts AST params to inputs of `max_length` frames by interpolating the position embeddings.

  Returns `(params, config)`: a shallow copy of the params dict with a new `pos_embed` and the
  config with `max_length` replaced. Every other param is shared, so a frozen teacher can be run on
  longer or shorter clips without retraining (accuracy away from the trained length is an
  empirical question). A `sine` AST has no embeddings to resize: its params come back unchanged.
  """
  new_config = dataclasses.replace(config, max_length=max_length)
  new_params = dict(params)
  if config.pos_embed_type == "learned":
    new_params["pos_embed"] = interpolate_pos_embed(
      params["pos_embed"], config.grid, new_config.grid
    )
  return new_params, new_config


def for_length(
  params: Any, config: AstConfig, frames: int, extension: str
) -> tuple[dict, AstConfig] | None:
  """(params, config) that run inputs of `frames` frames, or None where `extension` refuses.

  A `sine` AST runs any length as it is. For a `learned` one, `extension` says how: 'sine'
  replaces its embeddings by `sinusoid_positions` at every length, its own included (what the
  DASS authors' length study does to every AST it loads, trained with sine positions or not);
  'interpolate' keeps them on its own grid and resizes them bilinearly for another
  (`with_max_length`); 'refuse' keeps them on its own grid and returns None for another.
  """
  check_choice(extension, LENGTH_EXTENSIONS, "length extension")
  new_config = dataclasses.replace(config, max_length=frames)
  if config.pos_embed_type == "sine":
    return params, new_config
  if extension == "sine":
    kept = {k: v for k, v in params.items() if k != "pos_embed"}
    return kept, dataclasses.replace(new_config, pos_embed_type="sine")
  if new_config.grid == config.grid:
    return params, config
  if extension == "interpolate":
    return with_max_length(params, config, frames)
  return None
