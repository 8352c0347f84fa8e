"""VSS block of VMamba/DASS: pre-norm SS2D and MLP residual branches with stochastic depth.

Channels-last throughout: (batch, H, W, d) -> (batch, H, W, d).

  x = x + drop_path(op(norm(x)))          op = SS2D
  x = x + drop_path(mlp(norm2(x)))        mlp = fc1 (d -> 4d) -> GELU (exact erf) -> fc2

Parameters: norm/{scale,bias}, op/..., norm2/{scale,bias}, mlp/fc1/{kernel,bias},
mlp/fc2/{kernel,bias}; kernels are torch's (out, in) Linear2d weights transposed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax

from dass_jax.layers import DropPath, Mlp, compute_dtype, layer_norm
from dass_jax.models.ss2d import SS2D

if TYPE_CHECKING:
  from dass_jax.models.dass import DassConfig


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
    y = SS2D(self.config, self.dt_rank, name="op")(layer_norm("norm")(x))
    x = x + drop_path(y, train)
    y = Mlp(
      int(self.config.mlp_ratio * d),
      compute_dtype(self.config.dtype),
      token_chunk=0 if train else self.config.mlp_token_chunk,
      name="mlp",
    )(layer_norm("norm2")(x))
    x = x + drop_path(y, train)
    self.sow("intermediates", "output", x)
    return x
