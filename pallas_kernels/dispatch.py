"""The one entry point for the selective scan: picks an implementation by name or by backend.

`impl` is a `ScanImpl` or its string value:

  auto         the Pallas kernel on NVIDIA GPUs it supports, the chunked scan on CPU, the
               associative reference elsewhere (TPU, other GPUs: not measured yet)
  pallas       the Pallas kernel (`interpret=True` runs it on CPU, for tests)
  chunked      chunked loops in plain JAX (`chunked_scan`): the fast one on CPU
  associative  `lax.associative_scan` reference (the plain parallel statement of the math)
  sequential   `lax.scan` reference (O(state) memory, the plainest statement of the math)
  loop         the chunked scan's forward as `lax.scan` loops (`loop_scan`), inference only:
               what `dass_jax.export` selects, since ONNX and StableHLO take it in any length

On the 2-core CPU dev machine, DASS-small with the chunked scan runs its forward 2.0-2.9x and
its training step 1.4x faster than with the associative one (BENCHMARKS.md, "DASS-small vs the
original PyTorch code"); `python -m pallas_kernels.bench --impl chunked` times the scan alone.
"""

from __future__ import annotations

import enum
import functools
import logging

import jax

from pallas_kernels import chunked_scan, loop_scan, pallas_scan, reference

log = logging.getLogger(__name__)


class ScanImpl(enum.StrEnum):
  AUTO = "auto"
  PALLAS = "pallas"
  CHUNKED = "chunked"
  ASSOCIATIVE = "associative"
  SEQUENTIAL = "sequential"
  LOOP = "loop"


@functools.cache
def _resolve_auto(backend: str) -> ScanImpl:
  if backend == "gpu" and pallas_scan.supported_on_default_backend():
    choice = ScanImpl.PALLAS
  elif backend == "cpu":
    choice = ScanImpl.CHUNKED
  else:
    choice = ScanImpl.ASSOCIATIVE
  log.info("selective scan: impl=auto on backend %r -> %s", backend, choice.value)
  return choice


def resolve_impl(impl: ScanImpl | str = ScanImpl.AUTO) -> ScanImpl:
  """Turns `impl` (enum or string) into a concrete implementation for the default backend."""
  impl = ScanImpl(impl)
  if impl is ScanImpl.AUTO:
    return _resolve_auto(jax.default_backend())
  return impl


def selective_scan(
  u,
  delta,
  A,
  B,
  C,
  D=None,
  delta_bias=None,
  *,
  delta_softplus=True,
  out_dtype=None,
  impl: ScanImpl | str = ScanImpl.AUTO,
  interpret: bool = False,
):
  """Selective scan; see `pallas_kernels.reference` for layouts and math.

  Args:
    u, delta: (batch, K*D, L), fp32 or bf16.
    A: (K*D, N) negative decay rates. B, C: (batch, K, N, L).
    D, delta_bias: (K*D,) or None.
    delta_softplus: apply softplus to delta + delta_bias.
    out_dtype: output dtype (default: u.dtype). State is always fp32.
    impl: which implementation (see module docstring).
    interpret: run the Pallas kernel in interpret mode (CPU tests); ignored otherwise.
  Returns:
    y: (batch, K*D, L).
  """
  impl = resolve_impl(impl)
  args = (u, delta, A, B, C, D, delta_bias)
  kwargs = dict(delta_softplus=delta_softplus, out_dtype=out_dtype)
  if impl is ScanImpl.PALLAS:
    return pallas_scan.selective_scan(*args, interpret=interpret, **kwargs)
  scan = {
    ScanImpl.CHUNKED: chunked_scan.selective_scan_chunked,
    ScanImpl.ASSOCIATIVE: reference.selective_scan_associative,
    ScanImpl.SEQUENTIAL: reference.selective_scan_sequential,
    ScanImpl.LOOP: loop_scan.selective_scan_loop,
  }[impl]
  return scan(*args, **kwargs)
