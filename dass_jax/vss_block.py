"""VSS block of VMamba/DASS: pre-norm SS2D and MLP residual branches with stochastic depth.

Channels-last throughout: (batch, H, W, d) -> (batch, H, W, d).

  x = x + drop_path(op(norm(x)))          op = SS2D
  x = x + drop_path(mlp(norm2(x)))        mlp = fc1 (d -> 4d) -> GELU (exact erf) -> fc2

Parameters: norm/{scale,bias}, op/..., norm2/{scale,bias}, mlp/fc1/{kernel,bias},
mlp/fc2/{kernel,bias}; kernels are torch's (out, in) Linear2d weights transposed.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dass_jax.config import DassConfig
from dass_jax.ss2d import SS2D, channel_norm, compute_dtype, linear_init


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
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, mask_shape)
    if keep == 0.0:
      return jnp.zeros_like(x)
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class MLP(nn.Module):
  """fc1 (d -> hidden, bias) -> exact GELU -> fc2 (hidden -> d, bias), over the last axis."""

  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    x = nn.Dense(
      self.hidden, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=linear_init, name="fc1"
    )(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(
      d, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=linear_init, name="fc2"
    )(x)


class VSSBlock(nn.Module):
  """One VSS block; sows its output as 'output'.

  Attributes:
    config: model config.
    dt_rank: R of the SS2D of this stage.
    drop_path_rate: stochastic-depth rate of both residual branches.
  """

  config: DassConfig
  dt_rank: int
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x (batch, H, W, d) -> (batch, H, W, d); an fp32 residual stream stays fp32."""
    d = x.shape[-1]
    drop_path = DropPath(self.drop_path_rate)
    y = SS2D(self.config, self.dt_rank, name="op")(channel_norm("norm")(x))
    x = x + drop_path(y, train)
    y = MLP(int(self.config.mlp_ratio * d), compute_dtype(self.config), name="mlp")(
      channel_norm("norm2")(x)
    )
    x = x + drop_path(y, train)
    self.sow("intermediates", "output", x)
    return x
