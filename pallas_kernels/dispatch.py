"""The one entry point for the selective scan: picks an implementation by name or by backend.

`impl` is a `ScanImpl` or its string value:

  auto         the Pallas GPU kernel where it is supported, else the associative reference
  pallas       the Pallas kernel (`interpret=True` runs it on CPU, for tests)
  associative  `lax.associative_scan` reference (fast on CPU/TPU for moderate lengths)
  sequential   `lax.scan` reference (O(state) memory, the plainest statement of the math)
"""

from __future__ import annotations

import enum
import functools
import logging

import jax

from pallas_kernels import reference

log = logging.getLogger(__name__)


class ScanImpl(enum.StrEnum):
  AUTO = "auto"
  PALLAS = "pallas"
  ASSOCIATIVE = "associative"
  SEQUENTIAL = "sequential"


def pallas_supported() -> bool:
  """True when the default backend can run the Pallas GPU kernel."""
  try:
    from pallas_kernels import pallas_scan
  except ImportError:
    return False
  return pallas_scan.supported_on_default_backend()


@functools.cache
def _resolve_auto(backend: str) -> ScanImpl:
  choice = ScanImpl.PALLAS if pallas_supported() else ScanImpl.ASSOCIATIVE
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
  kwargs = dict(delta_softplus=delta_softplus, out_dtype=out_dtype)
  if impl is ScanImpl.SEQUENTIAL:
    return reference.selective_scan_sequential(u, delta, A, B, C, D, delta_bias, **kwargs)
  if impl is ScanImpl.ASSOCIATIVE:
    return reference.selective_scan_associative(u, delta, A, B, C, D, delta_bias, **kwargs)
  from pallas_kernels import pallas_scan

  return pallas_scan.selective_scan(u, delta, A, B, C, D, delta_bias, interpret=interpret, **kwargs)
