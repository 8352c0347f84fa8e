"""Four-direction cross-scan and cross-merge of SS2D (VMamba), as token permutations.

For a feature map with H rows (mel) and W columns (time), L = H*W, the four routes are

  k=0  row-major        token h*W + w      (time fastest)
  k=1  column-major     token w*H + h      (mel fastest)
  k=2  k=0 reversed
  k=3  k=1 reversed

`cross_scan` turns the map into the four sequences; `cross_merge` maps four per-route
sequences back to row-major order and sums them. Merge is the transpose (adjoint) of scan,
so JAX's autodiff of either one is the other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The four routes of SS2D (row-major, column-major and their reversals).
K_DIRECTIONS = 4


def cross_scan(x: jax.Array) -> jax.Array:
  """(batch, C, H, W) channels-first -> (batch, 4, C, H*W)."""
  batch, ch, h, w = x.shape
  rows = x.reshape(batch, ch, h * w)
  cols = jnp.swapaxes(x, 2, 3).reshape(batch, ch, h * w)
  return jnp.stack([rows, cols, rows[..., ::-1], cols[..., ::-1]], axis=1)  # K_DIRECTIONS


def cross_merge(ys: jax.Array) -> jax.Array:
  """(batch, 4, C, H, W) per-route sequences viewed as H x W -> (batch, C, H*W) row-major sum.

  `ys[:, k]` holds route k's sequence in its own scan order, reshaped to (H, W) as the
  original code's plain `.view` does.
  """
  batch, _, ch, h, w = ys.shape
  seq = ys.reshape(batch, K_DIRECTIONS, ch, h * w)
  rows = seq[:, 0] + seq[:, 2, :, ::-1]
  cols = seq[:, 1] + seq[:, 3, :, ::-1]
  cols = jnp.swapaxes(cols.reshape(batch, ch, w, h), 2, 3).reshape(batch, ch, h * w)
  return rows + cols


def cross_scan_channels_last(x: jax.Array) -> jax.Array:
  """(batch, H, W, C) channels-last -> (batch, 4, C, H*W), the scan layout."""
  return cross_scan(jnp.moveaxis(x, -1, 1))


def cross_merge_channels_last(ys: jax.Array, height: int, width: int) -> jax.Array:
  """(batch, 4, C, H*W) per-route sequences -> (batch, H, W, C) merged map."""
  batch, _, ch, _ = ys.shape
  merged = cross_merge(ys.reshape(batch, K_DIRECTIONS, ch, height, width))
  return jnp.moveaxis(merged.reshape(batch, ch, height, width), 1, -1)
