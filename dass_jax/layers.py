"""Layers and helpers that every model of the package shares (Flax Linen).

Conventions, the same in every model:
  * params are float32 (`param_dtype`); `dtype` is the compute dtype named by the model config
    ('float32' or 'bfloat16', see `compute_dtype`);
  * LayerNorm computes its variance in two passes, as PyTorch does (`use_fast_variance=False`);
    RMSNorm (Mamba's, no bias) computes its statistics in float32 whatever the compute dtype;
  * Dense kernels are torch Linear weights transposed, (in, out); GELU is the exact (erf) form
    that `torch.nn.GELU()` computes (Flax's default is the tanh approximation).

Initialisers (used when a model is trained from scratch; converted checkpoints overwrite them):
  torch_default_init   PyTorch's default Conv/Linear weight init, kaiming_uniform(a=sqrt(5)):
                       U(+-1/sqrt(fan_in))
  trunc_normal_init    trunc_normal(std=0.02), the ViT / VMamba Linear weight init
  uniform_init(bound)  U(-bound, bound), e.g. PyTorch's bias init with bound 1/sqrt(fan_in)
  dt_bias_init         Mamba's dt_proj bias: softplus^-1 of dt log-uniform in [1e-3, 1e-1]
  a_log_init           Mamba's S4D-real A_log: log(n + 1) for state n, the same for every channel
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dass_jax.attention import attention
from pallas_kernels.xla_cpu import column_sum

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
trunc_normal_init = nn.initializers.truncated_normal(0.02)


def uniform_init(bound: float):
  """U(-bound, bound)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# Mamba's dt initialisation range and floor.
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4


def dt_bias_init(key, shape, dtype=jnp.float32):
  """Mamba's dt_init: dt log-uniform in [DT_MIN, DT_MAX] (floored), bias = softplus^-1(dt)."""
  log_dt = jax.random.uniform(key, shape, dtype, math.log(DT_MIN), math.log(DT_MAX))
  dt = jnp.maximum(jnp.exp(log_dt), DT_INIT_FLOOR)
  return dt + jnp.log(-jnp.expm1(-dt))


def a_log_init(key, shape, dtype=jnp.float32):
  """A_log[c, n] = log(n + 1) for shape (channels, N): S4D-real, the same for every channel."""
  del key
  return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[1] + 1, dtype=dtype)), shape)


def compute_dtype(name: str):
  """The jnp dtype named by a config's `dtype` field ('float32' or 'bfloat16')."""
  if name not in DTYPES:
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x) (torch `nn.GELU()`): `jax.nn.gelu(x, approximate=False)`, same bits.

  Its own VJP: the forward also writes the slope Phi(x) + x * phi(x) (saved in place of x), the
  backward is g * slope. The slope's Phi is (1 + erf(x / sqrt 2)) / 2, not the forward's
  erfc(-x / sqrt 2) / 2: XLA:CPU merged the two erfc's and then wrote the expansion's shared
  pieces (exp(-x^2 / 2), 1 / x^2, 1 / |x|) to memory as three map-sized arrays, tripling the
  forward's cost in a DASS-small training step (43 ms of 1.08 s); erf's expansion is separate
  and its slope is within 2e-7 of the exact one for every float32 x (erfc's: 1.4e-7).
  """
  return jax.nn.gelu(x, approximate=False)


def _gelu_fwd(x):
  cdf = 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))
  pdf = jnp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
  return gelu(x), cdf + x * pdf


def _gelu_bwd(slope, g):
  return (g * slope,)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


class LayerNorm(nn.Module):
  """torch LayerNorm over the last axis: (..., C) -> (..., C) in `dtype`, params scale and bias
  (C,) in float32 (torch `weight`, `bias`), statistics in float32 whatever the input's dtype.

  Forward: Flax's `nn.LayerNorm(use_fast_variance=False)` op for op (mean, then the mean of the
  squared deviations; (x - mean) * (rsqrt(var + eps) * scale) + bias), so outputs are the same
  bits. Backward: `layer_norm_affine`'s own VJP.
  """

  eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
    return layer_norm_affine(x, scale, bias, self.eps).astype(self.dtype)


def layer_norm(name: str, eps: float = 1e-5, dtype: Any = jnp.float32) -> LayerNorm:
  """The `LayerNorm` module named `name` (the one way every model builds one)."""
  return LayerNorm(eps, dtype, name=name)


def _layer_norm_stats(x32, eps):
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  return mean, jax.lax.rsqrt(var + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm_affine(x, scale, bias, eps):
  """(x - mean) * rsqrt(var + eps) * scale + bias over the last axis, in float32.

  x (..., C) in any float dtype; scale, bias (C,) float32; returns (..., C) float32.

  The backward is written out (custom VJP) from the saved x and the per-row mean and
  1/std (two (..., 1) vectors): with x_hat = (x - mean) / std and g_hat = g * scale,
    dx = (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)) / std,
    d scale = sum over rows of g * x_hat,  d bias = sum over rows of g.
  Autodiff of the forward made XLA:CPU broadcast the statistics to the map's size and fuse
  the chains of residual cotangents into each consumer: a LayerNorm's gradient of a DASS-small
  stage-1 map (8192 x 96) took 8.8 ms against 2.3 ms here (benchmarks in BENCHMARKS.md).
  """
  return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
  x32 = x.astype(jnp.float32)
  mean, rstd = _layer_norm_stats(x32, eps)
  return (x32 - mean) * (rstd * scale) + bias, (x, mean, rstd, scale)


def _layer_norm_bwd(eps, res, g):
  del eps
  x, mean, rstd, scale = res
  x_hat = (x.astype(jnp.float32) - mean) * rstd
  g = g.astype(jnp.float32)
  g_hat = g * scale
  dx = rstd * (
    g_hat
    - jnp.mean(g_hat, axis=-1, keepdims=True)
    - x_hat * jnp.mean(g_hat * x_hat, axis=-1, keepdims=True)
  )
  return dx.astype(x.dtype), column_sum(g * x_hat), column_sum(g)


layer_norm_affine.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def rms_norm(name: str, eps: float = 1e-5, dtype: Any = jnp.float32) -> nn.RMSNorm:
  """Mamba's RMSNorm over the last axis, no bias: x / sqrt(mean(x^2) + eps) * scale.

  Statistics in float32, fp32 `scale` (torch `weight`), output in `dtype`.
  """
  return nn.RMSNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32, name=name)


def dense(
  features: int,
  name: str,
  dtype: Any = jnp.float32,
  use_bias: bool = True,
  kernel_init=trunc_normal_init,
) -> nn.Dense:
  """torch Linear: kernel (in, features) = weight.T, fp32 params, computed in `dtype`."""
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=kernel_init,
    name=name,
  )


def patch_conv(
  features: int,
  patch: tuple[int, int],
  strides: tuple[int, int],
  name: str,
  dtype: Any = jnp.float32,
  kernel_init=trunc_normal_init,
) -> nn.Conv:
  """torch Conv2d patch embedding (no padding): kernel (*patch, in, features) = weight in HWIO,
  fp32 params, computed in `dtype`; on NHWC inputs."""
  return nn.Conv(
    features,
    patch,
    strides=strides,
    padding="VALID",
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=kernel_init,
    name=name,
  )


def resize_pos_embed_grid(
  pos_embed: jax.Array,
  grid: tuple[int, int],
  new_grid: tuple[int, int],
  *,
  prefix_tokens: int,
  antialias: bool,
) -> jax.Array:
  """Resizes the patch rows of position embeddings to another (frequency, time) patch grid.

  `pos_embed` (1, prefix_tokens + F*T, D) holds `prefix_tokens` rows of special tokens (kept as
  they are), then the patch rows in frequency-major order, viewed as an (F, T) grid of D-vectors
  and resized bilinearly with half-pixel centres (torch `F.interpolate(mode="bilinear",
  align_corners=False)`, with `antialias` as given), in float32. The same grid returns
  `pos_embed` unchanged. Returns (1, prefix_tokens + F'*T', D) in the dtype of `pos_embed`.
  """
  pos_embed = jnp.asarray(pos_embed)
  freq, time = grid
  if pos_embed.ndim != 3 or pos_embed.shape[1] != prefix_tokens + freq * time:
    raise ValueError(
      f"pos_embed of shape {tuple(pos_embed.shape)} does not hold a {freq} x {time} grid plus "
      f"{prefix_tokens} token row(s)"
    )
  if tuple(new_grid) == tuple(grid):
    return pos_embed
  dim = pos_embed.shape[-1]
  prefix, patches = pos_embed[:, :prefix_tokens], pos_embed[:, prefix_tokens:]
  patches = patches.reshape(1, freq, time, dim).astype(jnp.float32)
  patches = jax.image.resize(patches, (1, *new_grid, dim), method="linear", antialias=antialias)
  patches = patches.reshape(1, -1, dim).astype(pos_embed.dtype)
  return jnp.concatenate([prefix, patches], axis=1)


class Mlp(nn.Module):
  """fc1 (d -> hidden, bias) -> exact GELU -> fc2 (hidden -> d, bias), over the last axis.

  Params: fc1/{kernel (d, hidden), bias}, fc2/{kernel (hidden, d), bias}.

  Attributes:
    hidden: width of the hidden layer.
    dtype: compute dtype.
    token_chunk: > 0 (inference on long inputs): with more tokens than this (all leading axes
      together), the MLP runs over chunks of `token_chunk` tokens one after another
      (`lax.map`), so that the (tokens, hidden) activations, the largest of a long input, exist
      for one chunk at a time. Every token gets the same operations as unchunked (equal up to
      the float rounding of differently shaped matrix products).
  """

  hidden: int
  dtype: Any = jnp.float32
  token_chunk: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fc1 = dense(self.hidden, "fc1", self.dtype)
    fc2 = dense(x.shape[-1], "fc2", self.dtype)
    tokens = math.prod(x.shape[:-1])
    if self.token_chunk <= 0 or tokens <= self.token_chunk or self.is_initializing():
      return fc2(gelu(fc1(x)))
    # The same Dense layers, applied unbound to each chunk with this module's params (a bound
    # Flax module cannot be called inside a plain JAX loop).
    params = self.variables["params"]
    unbound = lambda features: nn.Dense(features, dtype=self.dtype, parent=None)

    def mlp(chunk):
      h = unbound(self.hidden).apply({"params": params["fc1"]}, chunk)
      return unbound(x.shape[-1]).apply({"params": params["fc2"]}, gelu(h))

    # Chunk i covers tokens [start, start + token_chunk), start = min(i * token_chunk, tokens -
    # token_chunk): the last chunk overlaps the one before it and rewrites equal values, so
    # nothing is padded and the only full-size buffer is the output, updated in place.
    flat = x.reshape(tokens, x.shape[-1])
    size = self.token_chunk

    def body(i, out):
      start = jnp.minimum(i * size, tokens - size)
      chunk = jax.lax.dynamic_slice_in_dim(flat, start, size)
      return jax.lax.dynamic_update_slice_in_dim(out, mlp(chunk).astype(out.dtype), start, 0)

    # The output buffer is computed from x, not a constant, so that XLA does not allocate it at
    # the start of the program (every block's would then be live at once).
    out = jnp.broadcast_to((flat[:1, :1] * 0).astype(self.dtype), flat.shape)
    out = jax.lax.fori_loop(0, -(-tokens // size), body, out)
    return out.reshape(*x.shape[:-1], -1)


class DropPath(nn.Module):
  """Stochastic depth (timm `drop_path`, scale_by_keep=True) over whole samples.

  In train mode with rate > 0, each sample of the batch (axis 0) is zeroed with probability
  `rate` and the kept ones are divided by 1 - rate; the mask comes from the 'dropout' rng stream.
  Identity in eval mode or with rate 0.
  """

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f"drop path rate must be in [0, 1], got {self.rate}")
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    if keep == 0.0:
      return jnp.zeros_like(x)
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, mask_shape)
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection. (batch, N, D) -> (batch, N, D).

  Params: qkv/{kernel (D, 3D), bias (3D,)} with output columns [q | k | v], each head-major
  (heads, head_dim), i.e. torch's `qkv.weight.T`; out/{kernel (D, D), bias}. Scores are scaled by
  head_dim^-0.5 (`jax.nn.dot_product_attention`'s default).

  Attributes:
    num_heads: attention heads.
    qkv_bias: whether the qkv projection has a bias.
    dtype: compute dtype.
    implementation: how the attention itself runs, `dass_jax.attention.attention`'s
      `implementation` ('auto': the fastest for the backend the call is traced for).
  """

  num_heads: int
  qkv_bias: bool = True
  dtype: Any = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, length, dim = x.shape
    head_dim = dim // self.num_heads
    qkv = dense(3 * dim, "qkv", self.dtype, use_bias=self.qkv_bias)(x)
    qkv = qkv.reshape(batch, length, 3, self.num_heads, head_dim)
    y = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], self.implementation)
    return dense(dim, "out", self.dtype)(y.reshape(batch, length, dim))


class TransformerBlock(nn.Module):
  """Pre-norm ViT block: x += attn(LN(x)); x += mlp(LN(x)). (batch, N, D) -> (batch, N, D).

  With `post_norm` the norms act after the residual sums instead (data2vec 2.0 / EAT / SSLAM,
  their `AltBlock` with layer_norm_first=False): x = LN1(x + attn(x)); x = LN2(x + mlp(x)).
  Params either way: norm1, attn (`Attention`), norm2, mlp (`Mlp`). Dropout after the attention
  output and the MLP (train only, rng stream 'dropout') when `dropout_rate > 0`.
  `attention_impl` is the attention's `implementation`.
  """

  num_heads: int
  mlp_dim: int
  eps: float
  qkv_bias: bool = True
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  post_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    attention = Attention(
      self.num_heads, self.qkv_bias, self.dtype, self.attention_impl, name="attn"
    )
    if self.post_norm:
      y = attention(x)
      x = layer_norm("norm1", self.eps, self.dtype)(x + drop(y))
      y = Mlp(self.mlp_dim, self.dtype, name="mlp")(x)
      return layer_norm("norm2", self.eps, self.dtype)(x + drop(y))
    y = layer_norm("norm1", self.eps, self.dtype)(x)
    x = x + drop(attention(y))
    y = layer_norm("norm2", self.eps, self.dtype)(x)
    return x + drop(Mlp(self.mlp_dim, self.dtype, name="mlp")(y))
