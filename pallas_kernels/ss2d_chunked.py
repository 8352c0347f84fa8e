"""SS2D core on the chunked scan: the four routes without the 4x copies of the map.

Same contract as `ss2d_core.ss2d_scan` (x (batch, H, W, d) channels-last in, merged map out).
Route k = 2 * r + o (`cross_scan`): token order o = 0 is row-major, o = 1 column-major, and
r = 1 reverses the route. A reversed route is the same recurrence run from the last
token to the first, so instead of reversed copies of its inputs and output, the chunked scan
runs with `reverse=True` on the tokens in their stored order:

  orders   (batch, o, L, d)   the map row-major and column-major (one transposed copy of x)
  x_dbl    per route, from its order's tokens: (r, batch, o, L, R + 2N)
  dt       softplus(dt_projs_weight[k] @ dt_low + bias): (batch, o, L, d) for each r
  y        scan(r = 0) + scan(r = 1, reverse=True): (batch, o, L, d), every route already at
           its order's token positions
  merged   y[row] + transpose(y[column]) + (sum_k D_k) * x

So the only arrays four times the size of the map are dt and what the scan needs inside its
backward; the cross-scan's four copies of x and the cross-merge's flips and column transposes
of the four outputs are gone. All scan math is float32; the result has `out_dtype`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from pallas_kernels.chunked_scan import scan_channels_last
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.reference import softplus

ORDERS = 2  # row-major and column-major tokens
ROUTES = (K_DIRECTIONS // ORDERS, ORDERS)  # route k = 2 * r + o as the index (r, o)


def ss2d_scan_chunked(
  x,
  x_proj_weight,
  dt_projs_weight,
  dt_projs_bias,
  A_logs,
  Ds,
  *,
  out_dtype=None,
  chunk_size: int | None = None,
):
  """SS2D core with the chunked scan; arguments and result as `ss2d_core.ss2d_scan`.

  Args:
    x: (batch, H, W, d) channels-last map after conv + SiLU.
    x_proj_weight: (K, R + 2N, d); dt_projs_weight: (K, d, R); dt_projs_bias: (K, d);
    A_logs: (K*d, N); Ds: (K*d,); K = 4 routes, k = 2 * r + o.
    out_dtype: dtype of the result (default x.dtype).
    chunk_size: steps per chunk of the scan (default: `chunked_scan.chunk_length(H * W)`).
  Returns:
    (batch, H, W, d): the sum over the four routes, in row-major order.
  """
  batch, height, width, d = x.shape
  n, rank = A_logs.shape[1], dt_projs_weight.shape[2]
  length = height * width
  f32 = jnp.float32

  def column_major(t):  # (..., L, X) row-major tokens -> column-major
    t = t.reshape(*t.shape[:-2], height, width, t.shape[-1])
    return jnp.swapaxes(t, -3, -2).reshape(*t.shape[:-3], length, t.shape[-1])

  rows = x.astype(f32).reshape(batch, length, d)
  orders = jnp.stack([rows, column_major(rows)], axis=1)  # (batch, order, L, d)
  # Projections are per token, so all four routes' come from the row-major tokens; only the
  # column routes' (R + 2N)-wide results are then permuted.
  x_proj = x_proj_weight.astype(f32).reshape(*ROUTES, rank + 2 * n, d)
  x_dbl = jnp.einsum("bld,rocd->rbolc", rows, x_proj)
  x_dbl = jnp.stack([x_dbl[:, :, 0], column_major(x_dbl[:, :, 1])], axis=2)
  dt_low, b_ssm, c_ssm = x_dbl[..., :rank], x_dbl[..., rank : rank + n], x_dbl[..., rank + n :]
  dt_proj = dt_projs_weight.astype(f32).reshape(*ROUTES, d, rank)
  dt_bias = dt_projs_bias.astype(f32).reshape(*ROUTES, 1, d)
  rates = jnp.swapaxes(-jnp.exp(A_logs.astype(f32)).reshape(*ROUTES, d, n), -1, -2)

  def scan(rev, low_rank):  # the routes k = 2 * rev and 2 * rev + 1, one per token order
    dt = softplus(jnp.einsum("bolr,odr->bold", low_rank, dt_proj[rev]) + dt_bias[rev])
    return scan_channels_last(
      orders, dt, rates[rev], b_ssm[rev], c_ssm[rev], reverse=bool(rev), chunk_size=chunk_size
    )

  forward = scan(0, dt_low[0])
  # The reversed routes' dt (two map-sized arrays) only once the forward routes are done, so
  # that the two scans' buffers are not live together (the peak memory of long inputs).
  forward, low_rank = lax.optimization_barrier((forward, dt_low[1]))
  skip = Ds.astype(f32).reshape(*ROUTES, d).sum(axis=0)[:, None]
  y = forward + scan(1, low_rank) + skip * orders
  merged = y[:, 0] + column_major_inverse(y[:, 1], height, width)
  return merged.reshape(batch, height, width, d).astype(out_dtype or x.dtype)


def column_major_inverse(t, height: int, width: int):
  """(batch, L, X) column-major tokens -> row-major."""
  batch, length, ch = t.shape
  return jnp.swapaxes(t.reshape(batch, width, height, ch), 1, 2).reshape(batch, length, ch)
