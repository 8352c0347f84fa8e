"""SS2D, the 2-D selective-scan mixer of VMamba (`forward_type='v05_noz'`), channels-last.

(batch, H, W, d) -> (batch, H, W, d), with d_inner = int(ssm_ratio * d) (= d in DASS):

  u0 = in_proj(x)                         Dense d -> d_inner, no bias (torch 1x1 Linear2d)
  u  = SiLU(conv2d(u0))                   depthwise 3x3, padding (1, 1), no bias
  y  = ss2d_scan(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
                                          cross-scan (K=4 routes) -> projections ->
                                          selective scan -> cross-merge
  out = out_proj(out_norm(y))             LayerNorm over channels (eps 1e-5), Dense no bias

Parameters (names and layouts are torch's, so checkpoints map 1:1; see `dass_jax.dass`):
  in_proj/kernel   (d, d_inner)           torch weight.T
  conv2d/kernel    (3, 3, 1, d_inner)     torch (d_inner, 1, 3, 3).transpose(2, 3, 1, 0)
  x_proj_weight    (K, R + 2N, d_inner)   split [R, N, N] -> dt_low, B, C
  dt_projs_weight  (K, d_inner, R)
  dt_projs_bias    (K, d_inner)
  A_logs           (K*d_inner, N)         A = -exp(A_logs), row k*d_inner + e
  Ds               (K*d_inner,)
  out_norm/{scale, bias} (d_inner,)
  out_proj/kernel  (d_inner, d)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dass_jax.layers import (
  a_log_init,
  compute_dtype,
  dt_bias_init,
  layer_norm,
  torch_default_init,
  trunc_normal_init,
  uniform_init,
)
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.sharding import sharded_ss2d_scan
from pallas_kernels.ss2d_core import ss2d_scan_unfused
from pallas_kernels.xla_cpu import column_sum, materialize

if TYPE_CHECKING:
  from dass_jax.models.dass import DassConfig


class DepthwiseConv3x3(nn.Module):
  """torch's depthwise Conv2d(C, C, 3, padding=1, groups=C, bias=False), channels-last.

  (batch, H, W, C) -> (batch, H, W, C) in float32 (`depthwise_conv3x3`), cast to `dtype`. Param
  `kernel` (3, 3, 1, C) is `nn.Conv`'s layout, torch's (C, 1, 3, 3).transpose(2, 3, 1, 0), with
  PyTorch's default init.
  """

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", torch_default_init, (3, 3, 1, x.shape[-1]))
    return depthwise_conv3x3(x.astype(jnp.float32), kernel[:, :, 0]).astype(self.dtype)


@jax.custom_vjp
def depthwise_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Depthwise 3x3 correlation with zero padding 1: (batch, H, W, C), (3, 3, C) -> like x.

  Nine shifted multiply-adds over the zero-padded map, one elementwise fusion: on CPU XLA runs a
  grouped convolution with one channel per group 100x slower (DASS-small stage 1: 70 ms against
  0.5 ms), and its filter gradient 10x slower. The backward (custom VJP) keeps only x and the
  kernel: dx is the same nine-tap sum over the padded cotangent with the kernel flipped, and
  d kernel[i, j] the sum of g times x shifted by (i, j); autodiff of the forward kept the eight
  shifted copies of x instead (one map each).
  """
  return _taps(_pad1(x), kernel, x.shape[1], x.shape[2])


def _pad1(x):
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _taps(padded, kernel, height, width):
  return sum(
    padded[:, i : i + height, j : j + width, :] * kernel[i, j] for i in range(3) for j in range(3)
  )


def _depthwise_fwd(x, kernel):
  return depthwise_conv3x3(x, kernel), (x, kernel)


def _depthwise_bwd(res, g):
  x, kernel = res
  # g once in memory for its 18 readers, the kernel's sums as products with a vector
  # (`pallas_kernels.xla_cpu`).
  g = materialize(g)
  height, width = x.shape[1:3]
  dx = _taps(_pad1(g), kernel[::-1, ::-1], height, width)
  padded = _pad1(x)
  dkernel = jnp.stack(
    [
      jnp.stack([column_sum(padded[:, i : i + height, j : j + width, :] * g) for j in range(3)])
      for i in range(3)
    ]
  )
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


depthwise_conv3x3.defvjp(_depthwise_fwd, _depthwise_bwd)


class SS2D(nn.Module):
  """SS2D mixer (v05_noz: no z gate, no output activation, no dropout).

  Sown intermediates (names end in `_out` where a submodule has the same name): in, in_proj_out,
  conv2d_out (before SiLU), y_merged, out_norm_out, out (all NHWC); with them dts, Bs, Cs, ys in
  the torch scan layout (`ss2d_core.ss2d_scan_unfused(..., with_intermediates=True)`).

  Attributes:
    config: model config (d_state, ssm_ratio, scan_impl, dtype).
    dt_rank: R of this stage.
  """

  config: DassConfig
  dt_rank: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x (batch, H, W, d) channels-last -> (batch, H, W, d) in the compute dtype."""
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    d_model = x.shape[-1]
    d_inner = int(cfg.ssm_ratio * d_model)
    n, rank = cfg.d_state, self.dt_rank
    self.sow("intermediates", "in", x)

    x_proj_weight = self.param(
      "x_proj_weight", uniform_init(d_inner**-0.5), (K_DIRECTIONS, rank + 2 * n, d_inner)
    )
    dt_projs_weight = self.param(
      "dt_projs_weight", uniform_init(rank**-0.5), (K_DIRECTIONS, d_inner, rank)
    )
    dt_projs_bias = self.param("dt_projs_bias", dt_bias_init, (K_DIRECTIONS, d_inner))
    a_logs = self.param("A_logs", a_log_init, (K_DIRECTIONS * d_inner, n))
    ds = self.param("Ds", nn.initializers.ones, (K_DIRECTIONS * d_inner,))

    u = nn.Dense(
      d_inner,
      use_bias=False,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=trunc_normal_init,
      name="in_proj",
    )(x)
    self.sow("intermediates", "in_proj_out", u)
    u = DepthwiseConv3x3(dtype, name="conv2d")(u)
    self.sow("intermediates", "conv2d_out", u)
    u = nn.silu(u)

    scan_params = (x_proj_weight, dt_projs_weight, dt_projs_bias, a_logs, ds)
    scan_options = dict(impl=cfg.scan_impl, interpret=cfg.scan_interpret)
    # Split over the batch axes of the mesh set by `jax.set_mesh` (the plain call without one).
    y = sharded_ss2d_scan(u, *scan_params, **scan_options)
    if self.is_mutable_collection("intermediates"):
      _, values = ss2d_scan_unfused(u, *scan_params, **scan_options, with_intermediates=True)
      for name, value in values.items():
        self.sow("intermediates", name, value)
    self.sow("intermediates", "y_merged", y)

    y = layer_norm("out_norm")(y)
    self.sow("intermediates", "out_norm_out", y)
    out = nn.Dense(
      d_model,
      use_bias=False,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=trunc_normal_init,
      name="out_proj",
    )(y)
    self.sow("intermediates", "out", out)
    return out
