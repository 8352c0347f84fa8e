"""The one entry point for the selective scan: picks an implementation by name or by backend.

`impl` is a `ScanImpl` or its string value:

  auto         the Pallas kernel on NVIDIA GPUs it supports, once it has passed its self-check
               for the call's shape family (`kernel_check`: compiled and compared with the
               chunked scan on a small input, once per process; on failure the chunked scan,
               with one warning); the chunked scan on CPU; the associative reference
               elsewhere (TPU, other GPUs: not measured yet). The environment variable
               DASS_SCAN_IMPL (any name below) replaces what `auto` picks, with no check.
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
import os

import jax

from pallas_kernels import chunked_scan, kernel_check, loop_scan, pallas_scan, reference

log = logging.getLogger(__name__)
IMPL_ENV = "DASS_SCAN_IMPL"


class ScanImpl(enum.StrEnum):
  AUTO = "auto"
  PALLAS = "pallas"
  CHUNKED = "chunked"
  ASSOCIATIVE = "associative"
  SEQUENTIAL = "sequential"
  LOOP = "loop"


def _backend() -> str:
  """The backend `auto` resolves for (a function, so that tests can stand in a GPU)."""
  return jax.default_backend()


def _forced_impl() -> ScanImpl | None:
  """The implementation named by DASS_SCAN_IMPL, or None when it is unset or 'auto'."""
  name = os.environ.get(IMPL_ENV, "").strip().lower()
  if name in ("", ScanImpl.AUTO.value):
    return None
  try:
    return ScanImpl(name)
  except ValueError:
    choices = ", ".join(impl.value for impl in ScanImpl)
    raise ValueError(f"{IMPL_ENV}={name!r} is not a scan implementation ({choices})") from None


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


def resolve_impl(
  impl: ScanImpl | str = ScanImpl.AUTO, family: kernel_check.Family | None = None
) -> ScanImpl:
  """Turns `impl` (enum or string) into a concrete implementation for the default backend.

  `auto` becomes DASS_SCAN_IMPL when that is set; otherwise the backend's choice, where a
  Pallas choice for a call of `family` (see `kernel_check.Family`) stands only once the
  family's kernel passed its self-check, and is the chunked scan if it failed. Without a
  family (a caller asking what `auto` means here) no check runs.
  """
  impl = ScanImpl(impl)
  if impl is not ScanImpl.AUTO:
    return impl
  forced = _forced_impl()
  if forced is not None:
    return forced
  choice = _resolve_auto(_backend())
  if choice is ScanImpl.PALLAS and family is not None and not kernel_check.verify(family).ok:
    return ScanImpl.CHUNKED
  return choice


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
  impl = resolve_impl(impl, kernel_check.Family.of("scan", u, A.shape[1]))
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
