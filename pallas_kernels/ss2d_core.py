"""SS2D core: cross-scan -> per-direction projections -> selective scan -> cross-merge.

This is everything of SS2D (`forward_type='v05_noz'`) between the SiLU after the depthwise
conv and the output LayerNorm. Keeping it in one function lets a fused kernel replace the
whole route without the model changing.

Shapes (K = 4 directions, d channels, R = dt_rank, N = d_state, L = H*W):
  x                (batch, H, W, d)  channels-last feature map (after conv + SiLU)
  x_proj_weight    (K, R + 2N, d)    split order [R, N, N] -> dt_low, B, C
  dt_projs_weight  (K, d, R)
  dt_projs_bias    (K, d)
  A_logs           (K*d, N)          A = -exp(A_logs), k-major rows
  Ds               (K*d,)
Returns the merged output (batch, H, W, d) in `out_dtype` (default x.dtype).

`fused` picks the route: True runs the implementation's own SS2D route without the 4x
expanded copies of the map, `pallas_ss2d_fused` (cross-scan, scan and merge in one Pallas
kernel family) for `pallas` and `ss2d_chunked` (reversed routes scanned in reverse, no
flips or merges of four copies) for `chunked`; False runs the separate ops of
`ss2d_scan_unfused` with any implementation; None (default) is True for those two. For
Pallas that default is reasoned, not measured (no GPU was available): at DASS stage 1 the
fused route is estimated to move ~0.42 GB per forward against ~1.16 GB for the separate ops
(`pallas_ss2d_fused` docstring).
For the chunked scan it is measured on CPU (BENCHMARKS.md).

Precision: the projections (x_proj; in the unfused route also the rank-R dt projection) are
matmuls at JAX's matmul precision, whose default runs float32 matmuls as TF32 on Ampere and
newer GPUs (bf16 passes on TPU); the fused Pallas kernel forms the dt projection in fp32
in-kernel whatever that setting. Comparisons of the routes therefore set it explicitly
(`jax.default_matmul_precision`: tests/kernel_parity.py, `kernel_check`, the benchmark).
"""

from __future__ import annotations

import jax.numpy as jnp

from pallas_kernels import kernel_check, pallas_ss2d_fused, ss2d_chunked
from pallas_kernels.cross_scan import (
  K_DIRECTIONS,
  cross_merge_channels_last,
  cross_scan_channels_last,
)
from pallas_kernels.dispatch import ScanImpl, resolve_impl, selective_scan


def ss2d_scan(
  x,
  x_proj_weight,
  dt_projs_weight,
  dt_projs_bias,
  A_logs,
  Ds,
  *,
  impl: ScanImpl | str = ScanImpl.AUTO,
  out_dtype=None,
  interpret=False,
  fused: bool | None = None,
):
  # auto's kernel self-check is for the kernel this call would run: the fused one unless the
  # caller asked for the separate ops.
  family = kernel_check.Family.of("scan" if fused is False else "ss2d", x, A_logs.shape[1])
  impl = resolve_impl(impl, family)
  has_own_route = impl in (ScanImpl.PALLAS, ScanImpl.CHUNKED)
  if fused is None:
    fused = has_own_route
  params = (x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
  if fused and impl is ScanImpl.PALLAS:
    return pallas_ss2d_fused.ss2d_scan_fused(x, *params, out_dtype=out_dtype, interpret=interpret)
  if fused and impl is ScanImpl.CHUNKED:
    return ss2d_chunked.ss2d_scan_chunked(x, *params, out_dtype=out_dtype)
  if fused:
    raise ValueError(f"fused=True needs impl 'pallas' or 'chunked' (got {impl.value!r})")
  return ss2d_scan_unfused(x, *params, impl=impl, out_dtype=out_dtype, interpret=interpret)


def ss2d_scan_unfused(
  x,
  x_proj_weight,
  dt_projs_weight,
  dt_projs_bias,
  A_logs,
  Ds,
  *,
  impl: ScanImpl | str = ScanImpl.AUTO,
  out_dtype=None,
  interpret=False,
  with_intermediates: bool = False,
):
  """The SS2D core as separate ops: cross-scan, projections, selective scan, cross-merge.

  Arguments and result as `ss2d_scan`. With `with_intermediates`, returns (merged, values)
  where values holds the per-route tensors in torch's scan layout, as the original code's
  `forward_corev2` has them: dts (b, K, d, L) before bias and softplus, Bs and Cs (b, K, N, L),
  ys (b, K, d, L) each route's scan output (with the D * u term) in its own order.
  """
  batch, height, width, d = x.shape
  n = A_logs.shape[1]
  rank = dt_projs_weight.shape[2]
  length = height * width
  xs = cross_scan_channels_last(x)  # (b,K,d,L)
  x_dbl = jnp.einsum("bkdl,kcd->bkcl", xs, x_proj_weight.astype(xs.dtype))
  dt_low, b_ssm, c_ssm = jnp.split(x_dbl, [rank, rank + n], axis=2)
  dts = jnp.einsum("bkrl,kdr->bkdl", dt_low, dt_projs_weight.astype(xs.dtype))
  A = -jnp.exp(A_logs.astype(jnp.float32))
  y = selective_scan(
    xs.reshape(batch, K_DIRECTIONS * d, length),
    dts.reshape(batch, K_DIRECTIONS * d, length),
    A,
    b_ssm,
    c_ssm,
    Ds.astype(jnp.float32),
    dt_projs_bias.reshape(-1).astype(jnp.float32),
    delta_softplus=True,
    out_dtype=out_dtype or x.dtype,
    impl=impl,
    interpret=interpret,
  ).reshape(batch, K_DIRECTIONS, d, length)
  merged = cross_merge_channels_last(y, height, width)
  if with_intermediates:
    return merged, dict(dts=dts, Bs=b_ssm, Cs=c_ssm, ys=y)
  return merged
