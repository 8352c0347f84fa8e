"""The export scan (`pallas_kernels.loop_scan`, impl 'loop') against the sequential reference.

Checked: N = 1 (DASS) and N > 1 (AuM) with lengths the chunk does not divide and an explicit
chunk; one `jax.export` with a symbolic length run at three lengths (the --dynamic StableHLO
graph); the whole SS2D core through the dispatcher. Tolerance 1e-5 relative: float32 sums in
another order than the reference's (measured ~1e-7 to 1e-6).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import rel_err

from pallas_kernels import selective_scan, ss2d_scan
from pallas_kernels.loop_scan import SYMBOLIC_CHUNK, loop_chunk_length, selective_scan_loop
from pallas_kernels.random_inputs import scan_inputs, ss2d_inputs

REL_TOL = 1e-5


@pytest.mark.parametrize(
  "n,length,chunk", [(1, 37, None), (1, 256, None), (4, 100, 8), (2, 5, None)]
)
def test_matches_sequential(n, length, chunk):
  args = scan_inputs(jax.random.PRNGKey(length), 2, 4, 6, n, length)
  ref = selective_scan(*args, impl="sequential")
  out = selective_scan_loop(*args, chunk_size=chunk)
  assert out.shape == ref.shape and out.dtype == ref.dtype
  assert rel_err(out, ref) < REL_TOL


def test_one_export_with_a_symbolic_length_runs_any_length():
  (length,) = jax.export.symbolic_shape("l")
  example = scan_inputs(jax.random.PRNGKey(0), 2, 4, 6, 1, 8)
  specs = [
    jax.ShapeDtypeStruct(a.shape[:-1] + (length,) if a.ndim >= 3 else a.shape, a.dtype)
    for a in example
  ]
  exported = jax.export.export(jax.jit(selective_scan_loop))(*specs)
  assert loop_chunk_length(length) == SYMBOLIC_CHUNK
  for steps in (3, 77, 130):
    args = scan_inputs(jax.random.PRNGKey(steps), 2, 4, 6, 1, steps)
    assert rel_err(exported.call(*args), selective_scan(*args, impl="sequential")) < REL_TOL


def test_ss2d_core_with_the_loop_scan():
  args = ss2d_inputs(jax.random.PRNGKey(3), 1, 5, 7, 8, 1)
  ref = ss2d_scan(*args, impl="sequential", fused=False)
  out = ss2d_scan(*args, impl="loop")
  assert rel_err(out, ref) < REL_TOL
  assert np.isfinite(np.asarray(out)).all() and out.dtype == jnp.float32
