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

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.chunked_scan import scan_channels_last
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.xla_cpu import group_column_sums, materialize

ORDERS = 2  # row-major and column-major tokens
ROUTES = (K_DIRECTIONS // ORDERS, ORDERS)  # route k = 2 * r + o as the index (r, o)
# Terms of the atanh series of `softplus`: the truncation error is below (1/9)^7 / 15 < 2e-8
# relative at worst (x = 0), under float32's rounding.
SOFTPLUS_TERMS = 7
# dt_rank from which `step_sizes` forms its rank-R product as a matrix product (measured on CPU).
MIN_DOT_RANK = 16


def softplus(x):
  """`reference.softplus` (torch's, threshold 20) in float32, in three times less CPU time.

  softplus(x) = max(x, 0) + log1p(t) with t = exp(-|x|) in (0, 1], and log1p(t) =
  2 atanh(s) = 2 (s + s^3 / 3 + s^5 / 5 + ...) with s = t / (2 + t) <= 1/3: one exp, one
  division and a short polynomial, where XLA:CPU's log1p(exp(x)) costs an exp, a log and a
  select-guarded series. Within 3e-7 relative of torch's float32 softplus (the same as
  `reference.softplus`), for every x: above the threshold log1p(t) < 2.1e-9 vanishes in the
  rounding of x, as torch returns x there. Not differentiated: `step_sizes` has the gradient.
  """
  t = jnp.exp(-jnp.abs(x))
  s = t / (2.0 + t)
  s2 = s * s
  series = jnp.asarray(1.0 / (2 * SOFTPLUS_TERMS - 1), x.dtype)
  for k in range(SOFTPLUS_TERMS - 2, -1, -1):
    series = series * s2 + 1.0 / (2 * k + 1)
  return jnp.maximum(x, 0.0) + 2.0 * s * series


@jax.custom_vjp
def step_sizes(low_rank, weight, bias):
  """dt = softplus(low_rank @ weight + bias): (b, o, L, R), (o, R, d), (o, 1, d) -> (b, o, L, d).

  Forward: below rank MIN_DOT_RANK, the rank-R product as R multiply-adds in one elementwise
  pass with the bias and the softplus, writing dt token-major (as a dot, XLA:CPU produced it
  channel-major, a rank-R contraction being too thin for a matrix kernel, and transposed it in
  the softplus pass); from that rank on, a matrix product. Under differentiation the product
  and dt are each written once (`xla_cpu.materialize`): XLA:CPU split the softplus after its
  division and redid the R multiply-adds in the second half, and fused dt's producer into each
  of its 4-5 consumers in the scan's backward (DASS-small training step 1.10x faster). Not in
  inference, where the two extra map-sized buffers would raise long inputs' peak memory (XLA's
  temporaries 3.4 -> 4.5 MiB per second of audio). At R = 6 the multiply-adds stay faster than
  a product, 76 ms against 103 ms.
  Backward (custom VJP): the slope sigmoid(pre) = 1 - exp(-dt) from the saved dt (which the
  scan saves anyway), then two matrix products; autodiff of the R multiply-adds would make 2R
  passes over the map.
  """
  return _softplus_of_product(low_rank, weight, bias, write_product=False)


def _softplus_of_product(low_rank, weight, bias, write_product: bool):
  rank = weight.shape[-2]
  if rank >= MIN_DOT_RANK:
    pre = jnp.einsum("bolr,ord->bold", low_rank, weight)
  else:
    pre = low_rank[..., 0:1] * weight[:, None, 0]
    for j in range(1, rank):
      pre = pre + low_rank[..., j : j + 1] * weight[:, None, j]
    if write_product:
      pre = materialize(pre)
  return softplus(pre + bias)


def _step_sizes_fwd(low_rank, weight, bias):
  dt = materialize(_softplus_of_product(low_rank, weight, bias, write_product=True))
  return dt, (low_rank, weight, dt)


def _step_sizes_bwd(res, g):
  low_rank, weight, dt = res
  # d softplus / d pre = sigmoid(pre) = 1 - exp(-softplus(pre)); g_pre feeds three products,
  # each of which would otherwise recompute it and g's chain (`xla_cpu.materialize`).
  g_pre = materialize(g * -jnp.expm1(-dt))
  d_low = jnp.einsum("bold,ord->bolr", g_pre, weight)
  d_weight = jnp.einsum("bolr,bold->ord", low_rank, g_pre)
  d_bias = group_column_sums(g_pre)
  return d_low, d_weight, d_bias[:, None]


step_sizes.defvjp(_step_sizes_fwd, _step_sizes_bwd)


@jax.custom_vjp
def skip_term(orders, skip):
  """The D * u term of the two routes of each order: (batch, o, L, d) * (o, 1, d) -> like orders.

  Its own VJP only to form d skip with `xla_cpu.group_column_sums` (per order): autodiff's
  reduce over (batch, L) took 12 ms per DASS-small stage-1 block on CPU.
  """
  return orders * skip


def _skip_term_fwd(orders, skip):
  return orders * skip, (orders, skip)


def _skip_term_bwd(res, g):
  orders, skip = res
  d_skip = group_column_sums(g * orders)
  return g * skip, d_skip[:, None]


skip_term.defvjp(_skip_term_fwd, _skip_term_bwd)


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
  width_dbl = rank + 2 * n
  f32 = jnp.float32

  def column_major(t):  # (batch, L, X) row-major tokens -> column-major
    t = t.reshape(t.shape[0], height, width, t.shape[-1])
    return jnp.swapaxes(t, 1, 2).reshape(t.shape[0], length, t.shape[-1])

  # The map once in memory: XLA:CPU would otherwise fuse its producer (the model's depthwise
  # conv and SiLU) into each consumer below and compute it four times.
  rows = lax.optimization_barrier(x.astype(f32).reshape(batch, length, d))
  orders = jnp.stack([rows, column_major(rows)], axis=1)  # (batch, order, L, d)
  # Projections are per token, so all four routes' come from the row-major tokens in one
  # (L, d) x (d, K (R + 2N)) product, token-major; only the column routes' (R + 2N)-wide
  # results are then permuted.
  x_proj = x_proj_weight.astype(f32).reshape(K_DIRECTIONS * width_dbl, d)
  x_dbl = jnp.dot(rows, x_proj.T).reshape(batch, length, *ROUTES, width_dbl)  # (b, L, r, o, c)
  by_order = [x_dbl[:, :, :, 0], column_major(x_dbl[:, :, :, 1].reshape(batch, length, -1))]
  x_dbl = jnp.stack([t.reshape(batch, length, ROUTES[0], width_dbl) for t in by_order], axis=1)
  dt_low = x_dbl[..., :rank]  # (batch, order, L, r, R)
  b_ssm, c_ssm = x_dbl[..., rank : rank + n], x_dbl[..., rank + n :]  # (batch, order, L, r, N)
  dt_proj = jnp.swapaxes(dt_projs_weight.astype(f32).reshape(*ROUTES, d, rank), -1, -2)
  dt_bias = dt_projs_bias.astype(f32).reshape(*ROUTES, 1, d)
  rates = jnp.swapaxes(-jnp.exp(A_logs.astype(f32)).reshape(*ROUTES, d, n), -1, -2)

  def scan(rev, low_rank):  # the routes k = 2 * rev and 2 * rev + 1, one per token order
    return scan_channels_last(
      orders,
      step_sizes(low_rank, dt_proj[rev], dt_bias[rev]),
      rates[rev],
      b_ssm[:, :, :, rev],
      c_ssm[:, :, :, rev],
      reverse=bool(rev),
      chunk_size=chunk_size,
    )

  forward = scan(0, dt_low[:, :, :, 0])
  # The reversed routes' dt (two map-sized arrays) only once the forward routes are done, so
  # that the two scans' buffers are not live together (the peak memory of long inputs).
  forward, low_rank = lax.optimization_barrier((forward, dt_low[:, :, :, 1]))
  skip = Ds.astype(f32).reshape(*ROUTES, d).sum(axis=0)[:, None]
  y = forward + scan(1, low_rank) + skip_term(orders, skip)
  merged = y[:, 0] + column_major_inverse(y[:, 1], height, width)
  return merged.reshape(batch, height, width, d).astype(out_dtype or x.dtype)


def column_major_inverse(t, height: int, width: int):
  """(batch, L, X) column-major tokens -> row-major."""
  batch, length, ch = t.shape
  return jnp.swapaxes(t.reshape(batch, width, height, ch), 1, 2).reshape(batch, length, ch)
