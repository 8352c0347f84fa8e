"""CPU interpret-mode twins of the GPU-only tests in test_pallas_gpu.py (its docstring maps them).

Same comparisons, same precision rows and tolerances (tests/kernel_parity.py), on shapes small
enough for interpret mode: channel counts that leave a padded lane block (40 per group: 32 + 8),
lengths and maps that no chunk length divides (padded tokens), several chunks, batch > 1. The
bf16 rows are the point: fp32 twins of most GPU tests are in test_pallas_scan.py and
test_pallas_fused.py (vs the sequential reference, tolerance 1e-5).
"""

import functools

import jax
import jax.numpy as jnp
import pytest
from kernel_parity import BF16, assert_matches, scan_case, ss2d_case
from numerics import max_rel_err

import pallas_kernels
from pallas_kernels import pallas_plumbing, pallas_scan, pallas_ss2d_fused
from pallas_kernels.random_inputs import SCAN_ARGS, SS2D_ARGS

CHUNK = 24  # target steps per program: several chunks on the small shapes


def _scan(impl, **kw):
  return functools.partial(pallas_kernels.selective_scan, impl=impl, **kw)


def _kernel(**kw):
  return functools.partial(pallas_scan.selective_scan, interpret=True, chunk_size=CHUNK, **kw)


@pytest.mark.parametrize(
  "row,out_dtype,batch,n",
  [(BF16, None, 3, 1), (BF16, jnp.float32, 2, 1), (BF16, None, 2, 16)],
  ids=["bf16", "bf16-f32", "bf16-n16"],
)
def test_scan_twin(row, out_dtype, batch, n):
  """Twin of the scan tests at DASS shapes (and at 1028 frames), at AuM's d_state 16, with
  fp32 output, and at a batch > 2: 65 steps in 3 chunks of 24 (7 padded steps)."""
  assert pallas_plumbing.choose_chunk(65, CHUNK) == 24
  args, weight = scan_case(batch, 2, 65, 40, row.dtype, n=n)
  kernel, ref = _kernel(out_dtype=out_dtype), _scan("associative", out_dtype=out_dtype)
  assert_matches(kernel, ref, args, weight, SCAN_ARGS, row)
  if out_dtype is not None:  # bf16 in, fp32 math and output on both sides
    assert max_rel_err(jax.jit(kernel)(*args), jax.jit(ref)(*args)) < 1e-5


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_ss2d_twin(fused):
  """Twin of test_ss2d_core_matches_reference, of the TF32 test and of the awkward-length test
  (bf16 rows): a 5 x 13 map, 65 tokens in 3 chunks of 24 (7 padded tokens)."""
  args, weight = ss2d_case(2, 5, 13, 40, jnp.bfloat16)
  if fused:
    kernel = functools.partial(pallas_ss2d_fused.ss2d_scan_fused, interpret=True, chunk_size=CHUNK)
  else:
    kernel = functools.partial(pallas_kernels.ss2d_scan, impl="pallas", interpret=True, fused=False)
  ref = functools.partial(pallas_kernels.ss2d_scan, impl="associative")
  assert_matches(kernel, ref, args, weight, SS2D_ARGS, BF16, path="ss2d")


def test_chunked_scan_twin():
  """Twin of test_chunked_scan_on_gpu (bf16 row; the chunked scan is plain JAX)."""
  args, weight = scan_case(2, 2, 65, 40, jnp.bfloat16)
  assert_matches(_scan("chunked"), _scan("associative"), args, weight, SCAN_ARGS, BF16)
  args, weight = ss2d_case(2, 5, 13, 40, jnp.bfloat16)
  chunked = functools.partial(pallas_kernels.ss2d_scan, impl="chunked")
  ref = functools.partial(pallas_kernels.ss2d_scan, impl="associative")
  assert_matches(chunked, ref, args, weight, SS2D_ARGS, BF16, path="ss2d")
