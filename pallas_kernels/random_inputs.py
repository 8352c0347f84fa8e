"""Random inputs for the selective scan and the SS2D core, shared by the tests and the benchmark.

Both builders give float32 parameters and inputs in `dtype`, in the layouts of
`pallas_kernels.reference` and `pallas_kernels.ss2d_core`. The step size
dt = softplus(delta + delta_bias) starts log-uniform in `dt_range` as Mamba's dt_init draws
it ((1e-3, 1e-1), the benchmark's default); tests pass a wider range, e.g. (0.05, 1), so that
the decay exp(dt * A) varies strongly along the sequence.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from pallas_kernels.cross_scan import K_DIRECTIONS

SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "delta_bias")
SS2D_ARGS = ("x", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")
MAMBA_DT_RANGE = (1e-3, 1e-1)


def dt_bias(key, shape, dt_range=MAMBA_DT_RANGE) -> jax.Array:
  """softplus^-1 of dt drawn log-uniform in dt_range."""
  low, high = dt_range
  dt = jnp.exp(jax.random.uniform(key, shape, minval=math.log(low), maxval=math.log(high)))
  return dt + jnp.log(-jnp.expm1(-dt))


def scan_inputs(key, batch, groups, d, n, length, dtype=jnp.float32, dt_range=MAMBA_DT_RANGE):
  """(u, delta, A, B, C, D, delta_bias), in SCAN_ARGS order.

  u, delta (batch, groups * d, length) and B, C (batch, groups, n, length) in `dtype`;
  A (groups * d, n) = -exp(0.5 * normal), D (groups * d,) and delta_bias in float32.
  """
  ks = jax.random.split(key, 7)
  ch = groups * d
  return (
    jax.random.normal(ks[0], (batch, ch, length)).astype(dtype),
    (0.5 * jax.random.normal(ks[1], (batch, ch, length))).astype(dtype),
    -jnp.exp(0.5 * jax.random.normal(ks[2], (ch, n))),
    jax.random.normal(ks[3], (batch, groups, n, length)).astype(dtype),
    jax.random.normal(ks[4], (batch, groups, n, length)).astype(dtype),
    jax.random.normal(ks[5], (ch,)),
    dt_bias(ks[6], (ch,), dt_range),
  )


def ss2d_inputs(
  key, batch, height, width, d, n, rank=None, dtype=jnp.float32, dt_range=MAMBA_DT_RANGE
):
  """(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds), in SS2D_ARGS order.

  x (batch, height, width, d) in `dtype`; the weights float32, scaled so that the scan term
  matters next to the D skip: x_proj ~ 1/sqrt(d), dt_proj ~ 1/sqrt(R), Ds ~ 1 + 0.1 normal.
  rank defaults to ceil(d / 16), the DASS dt_rank.
  """
  ks = jax.random.split(key, 6)
  rank = rank or -(-d // 16)
  return (
    jax.random.normal(ks[0], (batch, height, width, d)).astype(dtype),
    jax.random.normal(ks[1], (K_DIRECTIONS, rank + 2 * n, d)) / math.sqrt(d),
    jax.random.normal(ks[2], (K_DIRECTIONS, d, rank)) / math.sqrt(rank),
    dt_bias(ks[3], (K_DIRECTIONS, d), dt_range),
    0.5 * jax.random.normal(ks[4], (K_DIRECTIONS * d, n)),
    1.0 + 0.1 * jax.random.normal(ks[5], (K_DIRECTIONS * d,)),
  )
