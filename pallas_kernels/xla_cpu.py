"""Two ways around XLA:CPU's fusion choices that cost the chunked scan's gradient most.

`column_sum(x)`: the sum of x (..., C) over every axis but the last, (C,), as the product
ones(M) @ x.reshape(M, C). XLA:CPU hands a reduce over non-minor axes to YNNPACK, whose
reduction of a DASS-small stage-1 map (2 x 8192 tokens x 96 channels, the product of two
arrays) takes 12.9 ms against 0.25-0.5 ms as a product with a vector; a `jnp.einsum` that keeps
a minor axis as a batch axis (e.g. "bold,bold->od") is fast alone but inside a gradient makes
XLA transpose both operands, their producers recomputed in the transposing copies. Gradients of
per-channel parameters (biases, scales, skip weights, decay rates) are such sums over tokens.

`materialize(x)`: x, computed once into its own buffer. XLA:CPU fuses an elementwise producer
into each of its consumers, so a chain with exponentials that feeds four products in a
backward is evaluated four times; `lax.optimization_barrier` does not stop that (XLA removes
barriers before fusion), while the result of a conditional is a buffer that its consumers
read (on CPU; other backends get x unchanged). The conditional's two branches return x itself
(its predicate, x's first element equal to itself, only decides which): the value is x's, bit
for bit.

Figures: 2026-12-06, the 2-core development CPU, jax 0.10.2 (BENCHMARKS.md, "DASS-small vs the
original PyTorch code").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def column_sum(x: jax.Array, kept_axes: int = 1) -> jax.Array:
  """Sum of x over every axis but its last `kept_axes`: x.shape[-kept_axes:], in x's dtype.

  A `jnp.sum` for an explicitly sharded x, whose rows cannot be merged into one axis.
  """
  kept = x.shape[x.ndim - kept_axes :]
  if _explicitly_sharded(x):
    return jnp.sum(x, axis=tuple(range(x.ndim - kept_axes)))
  rows = x.reshape(-1, math.prod(kept))
  return (jnp.ones((rows.shape[0],), rows.dtype) @ rows).reshape(kept)


def group_column_sums(x: jax.Array, kept_axes: int = 1) -> jax.Array:
  """`column_sum` of each group x[:, g] of x (batch, G, ..., *kept): (G, *kept), x's dtype.

  For parameters held per group (scan group, token order), summed over batch and tokens.
  """
  return jnp.stack([column_sum(x[:, g], kept_axes) for g in range(x.shape[1])])


def materialize(x: jax.Array) -> jax.Array:
  """x, written once to memory for all its consumers (module docstring); on CPU only.

  Resolved for the platform the program is lowered for (`lax.platform_dependent`): elsewhere
  x as it is, since a GPU conditional reads its predicate on the host.
  """

  if _explicitly_sharded(x):
    return x  # its first element is one device's (a global slice is refused); left to XLA

  def in_a_buffer(t):
    first = t.reshape(-1)[0]
    return lax.cond(first == first, lambda v: v, lambda v: v + 0, t)

  return lax.platform_dependent(x, cpu=in_a_buffer, default=lambda t: t)


def _explicitly_sharded(x: jax.Array) -> bool:
  """Whether x's type carries a sharding over mesh axes (`jax.sharding.AxisType.Explicit`)."""
  spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
  return spec is not None and any(axis is not None for axis in spec)
