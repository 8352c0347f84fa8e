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

This file also holds the small helpers every DASS module shares: the compute dtype, the channel
LayerNorm and PyTorch/VMamba-style initialisers.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dass_jax.config import DassConfig
from pallas_kernels.cross_scan import cross_scan_channels_last
from pallas_kernels.dispatch import ScanImpl, selective_scan
from pallas_kernels.ss2d_core import K_DIRECTIONS, ss2d_scan

LAYER_NORM_EPS = 1e-5
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# PyTorch's default Conv2d/Linear weight init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# VMamba's trunc_normal(std=0.02) for Linear / Linear2d weights (biases zero).
linear_init = nn.initializers.truncated_normal(0.02)


def compute_dtype(config: DassConfig):
  """The jnp dtype named by config.dtype ('float32' or 'bfloat16')."""
  if config.dtype not in _DTYPES:
    raise ValueError(f"DassConfig.dtype must be one of {sorted(_DTYPES)}, got {config.dtype!r}")
  return _DTYPES[config.dtype]


def check_scan_impl(config: DassConfig) -> None:
  """Raises a ValueError naming the valid choices when config.scan_impl is unknown."""
  valid = [impl.value for impl in ScanImpl]
  if config.scan_impl not in valid:
    raise ValueError(f"DassConfig.scan_impl must be one of {valid}, got {config.scan_impl!r}")


def channel_norm(name: str) -> nn.LayerNorm:
  """torch LayerNorm over the channel (last) axis: eps 1e-5, two-pass variance, float32 out."""
  return nn.LayerNorm(
    epsilon=LAYER_NORM_EPS,
    use_fast_variance=False,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    name=name,
  )


def uniform_init(bound: float):
  """U(-bound, bound), e.g. PyTorch's conv/linear bias init with bound 1/sqrt(fan_in)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _dt_bias_init(key, shape, dtype=jnp.float32):
  """Mamba's dt_init: dt log-uniform in [DT_MIN, DT_MAX] (floored), bias = softplus^-1(dt)."""
  log_dt = jax.random.uniform(key, shape, dtype, math.log(DT_MIN), math.log(DT_MAX))
  dt = jnp.maximum(jnp.exp(log_dt), DT_INIT_FLOOR)
  return dt + jnp.log(-jnp.expm1(-dt))


def _a_logs_init(key, shape, dtype=jnp.float32):
  """A_logs[c, n] = log(n + 1): S4D-real init, the same for every channel."""
  del key
  return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[1] + 1, dtype=dtype)), shape)


def scan_diagnostics(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, impl):
  """The per-direction values inside `ss2d_scan`, in torch's scan layout, for inspection.

  Returns dts (b,K,d,L) before bias/softplus, Bs and Cs (b,K,N,L), ys (b,K,d,L) per-direction scan
  output (with the D*u term) in each direction's own order. Only run when intermediates are sown:
  `ss2d_scan` stays one opaque call so that a fused kernel can replace it.
  """
  batch, height, width, d = u.shape
  n, rank = A_logs.shape[1], dt_projs_weight.shape[2]
  length = height * width
  xs = cross_scan_channels_last(u)
  x_dbl = jnp.einsum("bkdl,kcd->bkcl", xs, x_proj_weight.astype(xs.dtype))
  dt_low, b_ssm, c_ssm = jnp.split(x_dbl, [rank, rank + n], axis=2)
  dts = jnp.einsum("bkrl,kdr->bkdl", dt_low, dt_projs_weight.astype(xs.dtype))
  ys = selective_scan(
    xs.reshape(batch, K_DIRECTIONS * d, length),
    dts.reshape(batch, K_DIRECTIONS * d, length),
    -jnp.exp(A_logs.astype(jnp.float32)),
    b_ssm,
    c_ssm,
    Ds.astype(jnp.float32),
    dt_projs_bias.reshape(-1).astype(jnp.float32),
    delta_softplus=True,
    impl=impl,
  )
  return dts, b_ssm, c_ssm, ys.reshape(batch, K_DIRECTIONS, d, length)


class SS2D(nn.Module):
  """SS2D mixer (v05_noz: no z gate, no output activation, no dropout).

  Sown intermediates (names end in `_out` where a submodule has the same name): in, in_proj_out,
  conv2d_out (before SiLU), y_merged, out_norm_out, out (all NHWC); with them dts, Bs, Cs, ys in
  the torch scan layout, see `scan_diagnostics`.

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
    dtype = compute_dtype(cfg)
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
    dt_projs_bias = self.param("dt_projs_bias", _dt_bias_init, (K_DIRECTIONS, d_inner))
    a_logs = self.param("A_logs", _a_logs_init, (K_DIRECTIONS * d_inner, n))
    ds = self.param("Ds", nn.initializers.ones, (K_DIRECTIONS * d_inner,))

    u = nn.Dense(
      d_inner,
      use_bias=False,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=linear_init,
      name="in_proj",
    )(x)
    self.sow("intermediates", "in_proj_out", u)
    u = nn.Conv(
      d_inner,
      (3, 3),
      padding=((1, 1), (1, 1)),
      feature_group_count=d_inner,
      use_bias=False,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=torch_conv_init,
      name="conv2d",
    )(u)
    self.sow("intermediates", "conv2d_out", u)
    u = nn.silu(u)

    scan_params = (x_proj_weight, dt_projs_weight, dt_projs_bias, a_logs, ds)
    y = ss2d_scan(u, *scan_params, impl=cfg.scan_impl)
    if self.is_mutable_collection("intermediates"):
      dts, b_ssm, c_ssm, ys = scan_diagnostics(u, *scan_params, impl=cfg.scan_impl)
      for name, value in (("dts", dts), ("Bs", b_ssm), ("Cs", c_ssm), ("ys", ys)):
        self.sow("intermediates", name, value)
    self.sow("intermediates", "y_merged", y)

    y = channel_norm("out_norm")(y)
    self.sow("intermediates", "out_norm_out", y)
    out = nn.Dense(
      d_model,
      use_bias=False,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=linear_init,
      name="out_proj",
    )(y)
    self.sow("intermediates", "out", out)
    return out
