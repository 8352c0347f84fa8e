"""CPU (interpret-mode) tests of the fused four-route SS2D kernel against the unfused core.

The reference is `ss2d_core.ss2d_scan(..., impl="sequential", fused=False)` (cross-scan,
projections, `lax.scan` selective scan, cross-merge as separate ops). Comparisons are
`max|got - ref| <= tol * max|ref|` for the output and for the gradients of sum(y * W) with
respect to the map and all five SS2D parameters, in fp32:

| comparison                     | values | gradients |
|--------------------------------|--------|-----------|
| fp32 fused vs fp32 unfused     | 1e-5   | 1e-5      |

Shapes are non-square (H != W, so a row/column mix-up fails), with channel counts that are
not a multiple of the lane block, several chunks, and N = 1 and N = 3 (padded to 4).
"""

import jax
import jax.numpy as jnp
import numerics
import pytest
from jaxpr_sizes import largest_intermediate
from numerics import value_and_grads

from pallas_kernels import pallas_plumbing, pallas_ss2d_fused, ss2d_core
from pallas_kernels.random_inputs import SS2D_ARGS, ss2d_inputs


def make_ss2d_inputs(seed, batch, height, width, d, n, rank):
  """The shared SS2D inputs, dt from [0.05, 1] so the scan term matters."""
  return ss2d_inputs(
    jax.random.PRNGKey(seed), batch, height, width, d, n, rank, dt_range=(0.05, 1.0)
  )


def assert_close(got, want, tol, name):
  """max|got - want| <= tol * max|want| (numerics.max_rel_err), shapes equal."""
  numerics.assert_close(got, want, tol=tol, measure=numerics.max_rel_err, name=name)


def unfused(*args):
  return ss2d_core.ss2d_scan(*args, impl="sequential", fused=False)


@pytest.mark.parametrize(
  "batch,height,width,d,n,rank,chunk",
  [
    pytest.param(2, 3, 5, 6, 1, 2, 5, id="n1-3x5-chunk5"),
    pytest.param(1, 4, 6, 5, 3, 3, 8, id="n3-4x6-chunk8"),
  ],
)
def test_fused_matches_unfused(batch, height, width, d, n, rank, chunk):
  args = make_ss2d_inputs(height * width, batch, height, width, d, n, rank)
  cot = jax.random.normal(jax.random.PRNGKey(1), args[0].shape)
  y, grads = value_and_grads(
    lambda *a: pallas_ss2d_fused.ss2d_scan_fused(*a, interpret=True, chunk_size=chunk), args, cot
  )
  y_ref, grads_ref = value_and_grads(unfused, args, cot)
  assert_close(y, y_ref, 1e-5, "y")
  for name, g, g_ref in zip(SS2D_ARGS, grads, grads_ref):
    assert_close(g, g_ref, 1e-5, f"grad {name}")


def test_ss2d_core_defaults_to_fused_for_pallas():
  args = make_ss2d_inputs(0, 1, 2, 3, 4, 1, 1)
  got = ss2d_core.ss2d_scan(*args, impl="pallas", interpret=True)
  assert_close(got, unfused(*args), 1e-5, "y")
  with pytest.raises(ValueError, match="fused=True needs impl 'pallas' or 'chunked'"):
    ss2d_core.ss2d_scan(*args, impl="associative", fused=True)


def test_forward_never_materialises_the_four_routes():
  """No intermediate of the fused forward is larger than two copies of the map."""
  batch, height, width, d = 2, 8, 12, 32
  args = make_ss2d_inputs(0, batch, height, width, d, 1, 2)
  map_size = batch * height * width * d
  fused = lambda *a: pallas_ss2d_fused.ss2d_scan_fused(*a, chunk_size=32)
  assert largest_intermediate(fused, *args) == 2 * map_size  # two route-pair partial maps
  assert largest_intermediate(unfused, *args) == 4 * map_size  # the check can fail


def test_chunk_choice_pads_instead_of_running_the_whole_length():
  choose = pallas_plumbing.choose_chunk
  assert choose(8192, 256) == 256  # DASS stage 1 at 1024 frames: 32 chunks, no padding
  assert choose(15, 5) == 5
  assert choose(96, 64) == 48
  # Lengths without a good divisor: ~L / 256 chunks of a multiple of 8 steps, < 8 padded
  # steps per chunk, where the rule before fell back to one program over the whole length.
  for length in (257, 8224, 2 * 4099, 32 * 250, 100_003):
    chunk = choose(length, 256)
    n_chunks = -(-length // chunk)
    assert chunk % 8 == 0 and chunk <= 256 + 7, (length, chunk)
    assert n_chunks == -(-length // 256), (length, chunk)
    assert n_chunks * chunk - length < 8 * n_chunks, (length, chunk)
  assert choose(257, 256) == 136 and choose(8224, 256) == 256
  assert choose(100, 256) == 104  # short sequences: one chunk (its length a multiple of 8)


def test_padded_tokens_are_exact():
  """A 7 x 11 map (77 tokens, prime factors only) in chunks of 8: 3 padded tokens after the
  last one, visited last by the forward routes and first by the reversed ones."""
  args = make_ss2d_inputs(77, 1, 7, 11, 5, 2, 2)
  cot = jax.random.normal(jax.random.PRNGKey(2), args[0].shape)
  plan_chunk = pallas_plumbing.choose_chunk(77, 8)
  assert (plan_chunk, -(-77 // plan_chunk) * plan_chunk) == (8, 80)
  y, grads = value_and_grads(
    lambda *a: pallas_ss2d_fused.ss2d_scan_fused(*a, interpret=True, chunk_size=8), args, cot
  )
  y_ref, grads_ref = value_and_grads(unfused, args, cot)
  assert_close(y, y_ref, 1e-5, "y")
  for name, g, g_ref in zip(SS2D_ARGS, grads, grads_ref):
    assert_close(g, g_ref, 1e-5, f"grad {name}")


def test_fused_lowers_for_cuda_with_triton():
  args = make_ss2d_inputs(0, 2, 8, 12, 96, 1, 6)

  def loss(*a):
    return jnp.sum(pallas_ss2d_fused.ss2d_scan_fused(*a, chunk_size=32))

  exported = jax.export.export(
    jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6)))),
    platforms=["cuda"],
    disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
  )(*args)
  assert exported.mlir_module().count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 4
