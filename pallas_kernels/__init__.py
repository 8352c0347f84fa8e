"""Selective-scan kernels for DASS: Pallas GPU kernel, JAX references, one dispatching entry."""

from pallas_kernels.cross_scan import cross_merge, cross_scan
from pallas_kernels.dispatch import ScanImpl, resolve_impl, selective_scan
from pallas_kernels.reference import selective_scan_associative, selective_scan_sequential
from pallas_kernels.ss2d_core import ss2d_scan

__all__ = [
  "ScanImpl",
  "cross_merge",
  "cross_scan",
  "resolve_impl",
  "selective_scan",
  "selective_scan_associative",
  "selective_scan_sequential",
  "ss2d_scan",
]
