"""Audio Spectrogram Transformer (AST, Gong et al. 2021) in Flax Linen: the DASS teacher.

    model = AST(AstConfig())                                  # AudioSet: 128 mel x 1024 frames
    logits = model.apply({"params": params}, fbank)           # fbank: (batch, frames, 128)

Computation, as the original `ASTModel.forward` and `transformers.ASTForAudioClassification`:
  (batch, frames, mel) -> NHWC (batch, mel, frames, 1) [torch: NCHW (batch, 1, mel, frames)]
  -> patch conv (patch_size^2 kernel, strides (frequency_stride, time_stride), no padding)
  -> (batch, F*T, D) tokens in row-major (freq, time) order, F x T = `config.grid`
  -> prepend [cls, dist] -> + pos_embed (1, F*T + 2, D) -> dropout
  -> num_layers pre-norm blocks: x += attn(LN(x)); x += mlp(LN(x)), exact GELU
  -> LN (`norm`) -> mean of the cls and dist tokens -> LN (`head_norm`) -> Dense (`head`).
The position embeddings fix the input size: frames must give `config.grid[1]` time patches
(`max_length`, or up to time_stride - 1 more frames, whose tail the conv ignores). The published
models pad or crop features to `max_length`; `with_max_length` resizes the position embeddings for
another length instead.

Params tree (D = hidden_size, M = mlp_dim, P = patch_size, C = num_classes, i = block index):
  patch_embed/{kernel (P, P, 1, D), bias (D,)}
  cls_token (1, 1, D), dist_token (1, 1, D), pos_embed (1, F*T + 2, D)
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
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dass_jax.config import AstConfig

NUM_EXTRA_TOKENS = 2  # cls and distillation tokens
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _init():
  return nn.initializers.truncated_normal(stddev=0.02)


def _compute_dtype(name: str):
  if name not in _DTYPES:
    raise ValueError(f"AstConfig.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
  return _DTYPES[name]


def _layer_norm(eps: float, dtype, name: str) -> nn.LayerNorm:
  # Two-pass variance, as torch computes it.
  return nn.LayerNorm(
    epsilon=eps, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, name=name
  )


def _dense(features: int, dtype, name: str, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=_init(),
    name=name,
  )


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection. (batch, N, D) -> (batch, N, D)."""

  num_heads: int
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, length, dim = x.shape
    head_dim = dim // self.num_heads
    qkv = _dense(3 * dim, self.dtype, "qkv", use_bias=self.qkv_bias)(x)
    qkv = qkv.reshape(batch, length, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    y = jax.nn.dot_product_attention(q, k, v)  # (batch, N, heads, head_dim); scale head_dim^-0.5
    return _dense(dim, self.dtype, "out")(y.reshape(batch, length, dim))


class Mlp(nn.Module):
  """fc1 -> exact GELU -> fc2. (batch, N, D) -> (batch, N, D)."""

  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.gelu(_dense(self.mlp_dim, self.dtype, "fc1")(x), approximate=False)
    return _dense(x.shape[-1], self.dtype, "fc2")(h)


class Block(nn.Module):
  """Pre-norm transformer block. (batch, N, D) -> (batch, N, D)."""

  num_heads: int
  mlp_dim: int
  qkv_bias: bool
  eps: float
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    y = _layer_norm(self.eps, self.dtype, "norm1")(x)
    y = Attention(self.num_heads, self.qkv_bias, self.dtype, name="attn")(y)
    x = x + drop(y)
    y = _layer_norm(self.eps, self.dtype, "norm2")(x)
    y = Mlp(self.mlp_dim, self.dtype, name="mlp")(y)
    return x + drop(y)


class AST(nn.Module):
  """AST classifier: (batch, frames, num_mel_bins) fbank -> (batch, num_classes) fp32 logits.

  `train=True` enables dropout (rng stream 'dropout') when `config.dropout_rate > 0`.
  """

  config: AstConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    dtype = _compute_dtype(cfg.dtype)
    _check_input(cfg, x.shape)
    batch, dim = x.shape[0], cfg.hidden_size
    # (B, T, M) -> torch NCHW (B, 1, M, T) -> NHWC (B, M, T, 1): H is frequency, W is time.
    x = jnp.swapaxes(x, 1, 2)[..., None].astype(dtype)
    p = cfg.patch_size
    x = nn.Conv(
      dim,
      (p, p),
      strides=(cfg.frequency_stride, cfg.time_stride),
      padding="VALID",
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=_init(),
      name="patch_embed",
    )(x)
    x = x.reshape(batch, -1, dim)  # (B, F*T, D), index f * T + t as torch flatten(2)
    cls = self.param("cls_token", _init(), (1, 1, dim), jnp.float32)
    dist = self.param("dist_token", _init(), (1, 1, dim), jnp.float32)
    pos = self.param(
      "pos_embed", _init(), (1, cfg.num_patches + NUM_EXTRA_TOKENS, dim), jnp.float32
    )
    tokens = jnp.broadcast_to(jnp.concatenate([cls, dist], axis=1), (batch, 2, dim))
    x = jnp.concatenate([tokens.astype(dtype), x], axis=1) + pos.astype(dtype)
    x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)
    self.sow("intermediates", "hidden_states", x)
    for i in range(cfg.num_layers):
      x = Block(
        cfg.num_heads,
        cfg.mlp_dim,
        cfg.qkv_bias,
        cfg.layer_norm_eps,
        cfg.dropout_rate,
        dtype,
        name=f"blocks_{i}",
      )(x, train)
      self.sow("intermediates", "hidden_states", x)
    x = _layer_norm(cfg.layer_norm_eps, dtype, "norm")(x)
    self.sow("intermediates", "last_hidden_state", x)
    pooled = (x[:, 0] + x[:, 1]) / 2
    self.sow("intermediates", "pooled", pooled)
    pooled = _layer_norm(cfg.head_layer_norm_eps, dtype, "head_norm")(pooled)
    return _dense(cfg.num_classes, dtype, "head")(pooled).astype(jnp.float32)


def _check_input(cfg: AstConfig, shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `shape` is (batch, frames, num_mel_bins) giving `cfg.grid`."""
  if len(shape) != 3 or shape[-1] != cfg.num_mel_bins:
    raise ValueError(
      f"AST expects (batch, frames, {cfg.num_mel_bins}) fbank features, got shape {tuple(shape)}"
    )
  time_patches = cfg.grid[1]
  got = (shape[1] - cfg.patch_size) // cfg.time_stride + 1 if shape[1] >= cfg.patch_size else 0
  if got != time_patches:
    lo = (time_patches - 1) * cfg.time_stride + cfg.patch_size
    raise ValueError(
      f"AST position embeddings are sized for {time_patches} time patches "
      f"(max_length={cfg.max_length}: inputs of {lo}..{lo + cfg.time_stride - 1} frames), got "
      f"{shape[1]} frames ({got} patches); pad or crop the features to max_length, or resize "
      f"the position embeddings with dass_jax.ast.with_max_length"
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
  pos_embed = jnp.asarray(pos_embed)
  freq, time = grid
  if pos_embed.ndim != 3 or pos_embed.shape[1] != freq * time + NUM_EXTRA_TOKENS:
    raise ValueError(
      f"pos_embed of shape {tuple(pos_embed.shape)} does not hold a {freq} x {time} "
      f"grid plus {NUM_EXTRA_TOKENS} tokens"
    )
  if tuple(new_grid) == tuple(grid):
    return pos_embed
  dim = pos_embed.shape[-1]
  extra, patches = pos_embed[:, :NUM_EXTRA_TOKENS], pos_embed[:, NUM_EXTRA_TOKENS:]
  patches = patches.reshape(1, freq, time, dim).astype(jnp.float32)
  patches = jax.image.resize(patches, (1, *new_grid, dim), method="linear", antialias=False)
  patches = patches.reshape(1, -1, dim).astype(pos_embed.dtype)
  return jnp.concatenate([extra, patches], axis=1)


def with_max_length(params: Any, config: AstConfig, max_length: int) -> tuple[dict, AstConfig]:
  """Adapts AST params to inputs of `max_length` frames by interpolating the position embeddings.

  Returns `(params, config)`: a shallow copy of the params dict with a new `pos_embed` and the
  config with `max_length` replaced. Every other param is shared, so a frozen teacher can be run on
  longer or shorter clips without retraining (accuracy away from the trained length is an
  empirical question).
  """
  new_config = dataclasses.replace(config, max_length=max_length)
  new_params = dict(params)
  new_params["pos_embed"] = interpolate_pos_embed(params["pos_embed"], config.grid, new_config.grid)
  return new_params, new_config


__all__ = [
  "AST",
  "NUM_EXTRA_TOKENS",
  "Attention",
  "Block",
  "Mlp",
  "interpolate_pos_embed",
  "with_max_length",
]
