"""The pure-JAX selective scans (two references, the chunked scan) and the cross-scan
permutations against PyTorch.

Golden files (../shared/fixtures/dass_torch, float64, from the original DASS/VMamba code):
`selective_scan_golden.npz` (cases n1_ and n4_: batch 2, K=4, D=8, L=64) and
`cross_scan_golden.npz` (B, C, H, W = 2, 3, 5, 7). The implementations compute in float32, so
they are fed float32 inputs and compared with a float32 tolerance. The chunked scan runs with
chunks of 8 steps here, so that the golden L = 64 crosses seven chunk boundaries.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import max_rel_err, record, value_and_grads

import pallas_kernels
from pallas_kernels import chunked_scan, reference
from pallas_kernels.cross_scan import (
  cross_merge,
  cross_merge_channels_last,
  cross_scan,
  cross_scan_channels_last,
)
from pallas_kernels.random_inputs import SCAN_ARGS, scan_inputs

IMPLS = {
  "sequential": reference.selective_scan_sequential,
  "associative": reference.selective_scan_associative,
  "chunked": functools.partial(chunked_scan.selective_scan_chunked, chunk_size=8),
}

# fp32 references vs the fp64 golden: measured 1.2e-7 (values) and 2.4e-7 (grads), relative to
# each array's max |golden|. 1e-5 is the fp32 tolerance the notes quote, with wide margin.
GOLDEN_RTOL = 1e-5


# dt = softplus(delta + bias) from [0.05, 1], the fixture's range: strong decay along L.
TEST_DT_RANGE = (0.05, 1.0)


def _random_scan_inputs(key, batch, groups, d, n, length, dtype=jnp.float32):
  """The shared random inputs as a dict keyed by SCAN_ARGS."""
  args = scan_inputs(key, batch, groups, d, n, length, dtype, dt_range=TEST_DT_RANGE)
  return dict(zip(SCAN_ARGS, args))


def _loss_and_grads(fn, inputs, weight):
  """Value and gradients (all seven inputs, keyed by name) of sum(fn(...) * weight)."""
  out, grads = value_and_grads(fn, [inputs[name] for name in SCAN_ARGS], weight)
  return out, dict(zip(SCAN_ARGS, grads))


@pytest.fixture(scope="module")
def scan_golden(shared_fixtures):
  return dict(np.load(shared_fixtures / "selective_scan_golden.npz"))


@pytest.fixture(scope="module")
def cross_golden(shared_fixtures):
  return dict(np.load(shared_fixtures / "cross_scan_golden.npz"))


@pytest.mark.parametrize("case", ["n1", "n4"])
@pytest.mark.parametrize("name", sorted(IMPLS))
def test_matches_torch_golden(scan_golden, case, name):
  golden = {k[len(case) + 1 :]: v for k, v in scan_golden.items() if k.startswith(case + "_")}
  inputs = {k: jnp.asarray(golden[k], jnp.float32) for k in SCAN_ARGS}
  weight = jnp.asarray(golden["Wout"], jnp.float32)
  out, grads = _loss_and_grads(IMPLS[name], inputs, weight)
  assert out.dtype == jnp.float32 and out.shape == golden["out"].shape
  assert max_rel_err(out, golden["out"]) < GOLDEN_RTOL
  errors = [max_rel_err(out, golden["out"])]
  for arg in SCAN_ARGS:
    assert grads[arg].shape == golden["grad_" + arg].shape, arg
    assert max_rel_err(grads[arg], golden["grad_" + arg]) < GOLDEN_RTOL, arg
    errors.append(max_rel_err(grads[arg], golden["grad_" + arg]))
  record(
    f"selective scan ({name}) vs the original's selective_scan_ref: output and "
    f"{len(SCAN_ARGS)} gradients (d_state 1 and 4; worst)",
    max(errors),
    GOLDEN_RTOL,
    "max_rel_err",
  )


def test_dispatch_impls_match_torch_golden(scan_golden):
  inputs = {k: jnp.asarray(scan_golden["n4_" + k], jnp.float32) for k in SCAN_ARGS}
  for impl in ("sequential", "associative", "chunked", pallas_kernels.ScanImpl.CHUNKED, "auto"):
    scan = jax.jit(functools.partial(pallas_kernels.selective_scan, impl=impl))
    out = scan(*(inputs[k] for k in SCAN_ARGS))
    assert max_rel_err(out, scan_golden["n4_out"]) < GOLDEN_RTOL, impl


def test_cross_scan_matches_torch_golden(cross_golden):
  x = jnp.asarray(cross_golden["x"], jnp.float32)
  out, vjp = jax.vjp(cross_scan, x)
  np.testing.assert_allclose(out, cross_golden["scan_out"], rtol=1e-6, atol=1e-6)
  (grad_x,) = vjp(jnp.asarray(cross_golden["scan_cotangent"], jnp.float32))
  np.testing.assert_allclose(grad_x, cross_golden["scan_grad_x"], rtol=1e-6, atol=1e-6)


def test_cross_scan_arange_permutation_is_exact(cross_golden):
  x = jnp.asarray(cross_golden["x_arange"], jnp.int32)
  np.testing.assert_array_equal(cross_scan(x), cross_golden["scan_out_arange"])


def test_cross_merge_matches_torch_golden(cross_golden):
  ys = jnp.asarray(cross_golden["ys"], jnp.float32)
  out, vjp = jax.vjp(cross_merge, ys)
  np.testing.assert_allclose(out, cross_golden["merge_out"], rtol=1e-6, atol=1e-6)
  (grad_ys,) = vjp(jnp.asarray(cross_golden["merge_cotangent"], jnp.float32))
  np.testing.assert_allclose(grad_ys, cross_golden["merge_grad_ys"], rtol=1e-6, atol=1e-6)


def test_channels_last_wrappers_match_channels_first(cross_golden):
  x = jnp.asarray(cross_golden["x"], jnp.float32)  # (B, C, H, W)
  batch, ch, h, w = x.shape
  xs = cross_scan_channels_last(jnp.moveaxis(x, 1, -1))
  np.testing.assert_array_equal(xs, cross_scan(x))
  merged = cross_merge_channels_last(xs, h, w)  # (B, H, W, C)
  # Every route visits each pixel once, so merge(scan(x)) = 4 x.
  np.testing.assert_allclose(jnp.moveaxis(merged, -1, 1), 4 * x, rtol=1e-6)
  assert merged.shape == (batch, h, w, ch)


# (batch, K, D, N, L): L=1, odd L, N=1 and N=4, a single group.
RANDOM_SHAPES = [(1, 1, 1, 1, 1), (2, 4, 3, 1, 17), (2, 2, 5, 4, 33), (3, 1, 4, 2, 64)]


@pytest.mark.parametrize("shape", RANDOM_SHAPES, ids=lambda s: "b{}k{}d{}n{}l{}".format(*s))
def test_impls_agree_on_random_shapes(shape):
  """Odd L with chunks of 8 also exercises the chunked scan's zero padding."""
  inputs = _random_scan_inputs(jax.random.PRNGKey(sum(shape)), *shape)
  batch, groups, d, _, length = shape
  weight = jax.random.normal(jax.random.PRNGKey(1), (batch, groups * d, length))
  out_s, grads_s = _loss_and_grads(IMPLS["sequential"], inputs, weight)
  assert out_s.shape == (batch, groups * d, length)
  for name in ("associative", "chunked"):
    out, grads = _loss_and_grads(IMPLS[name], inputs, weight)
    assert max_rel_err(out, out_s) < 1e-5, name
    for arg in SCAN_ARGS:
      assert max_rel_err(grads[arg], grads_s[arg]) < 1e-5, (name, arg)


def test_chunked_state_size_16_matches_sequential():
  """d_state 16 (AuM's), the chunked scan's general path (states recomputed in the backward)."""
  inputs = _random_scan_inputs(jax.random.PRNGKey(16), 2, 2, 6, 16, 45)
  weight = jax.random.normal(jax.random.PRNGKey(1), inputs["u"].shape)
  out_s, grads_s = _loss_and_grads(IMPLS["sequential"], inputs, weight)
  out, grads = _loss_and_grads(IMPLS["chunked"], inputs, weight)
  assert max_rel_err(out, out_s) < 1e-5
  for arg in SCAN_ARGS:
    assert grads[arg].shape == inputs[arg].shape, arg
    assert max_rel_err(grads[arg], grads_s[arg]) < 1e-5, arg


@pytest.mark.parametrize("name", sorted(IMPLS))
@pytest.mark.parametrize("out_dtype", [None, jnp.float32])
def test_bf16_inputs_compute_in_fp32(name, out_dtype):
  """bf16 inputs give the fp32 result on the same (rounded) values, cast to out_dtype."""
  fn = IMPLS[name]
  inputs = _random_scan_inputs(jax.random.PRNGKey(3), 2, 4, 3, 2, 19, dtype=jnp.bfloat16)
  args = [inputs[k] for k in SCAN_ARGS]
  out = jax.jit(fn, static_argnames="out_dtype")(*args, out_dtype=out_dtype)
  expected = jax.jit(fn)(*(a.astype(jnp.float32) for a in args))
  assert out.dtype == (out_dtype or jnp.bfloat16)
  # bf16 output: one rounding (relative 2^-8); fp32 output: same fp32 math.
  tol = 1e-6 if out_dtype == jnp.float32 else 2**-8
  np.testing.assert_allclose(
    np.asarray(out, np.float32), expected, rtol=tol, atol=tol * float(jnp.max(jnp.abs(expected)))
  )
  grads = jax.jit(
    jax.grad(
      lambda u, b: jnp.sum(
        fn(u, args[1], args[2], b, *args[4:], out_dtype=out_dtype).astype(jnp.float32)
      ),
      argnums=(0, 1),
    )
  )(args[0], args[3])
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def _numpy_scan(u, delta, A, B, C):
  """Float64 loop over time, no softplus, no D, no bias: the bare recurrence."""
  batch, ch, length = u.shape
  groups, n = B.shape[1], A.shape[1]
  d = ch // groups
  y = np.zeros((batch, ch, length))
  for b in range(batch):
    for c in range(ch):
      h = np.zeros(n)
      for t in range(length):
        h = np.exp(delta[b, c, t] * A[c]) * h + delta[b, c, t] * B[b, c // d, :, t] * u[b, c, t]
        y[b, c, t] = h @ C[b, c // d, :, t]
  return y


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_optional_terms_off_matches_numpy_loop(name):
  inputs = _random_scan_inputs(jax.random.PRNGKey(5), 2, 2, 3, 2, 9)
  delta = jnp.abs(inputs["delta"])  # used as dt directly (delta_softplus=False)
  args = (inputs["u"], delta, inputs["A"], inputs["B"], inputs["C"])
  out = jax.jit(functools.partial(IMPLS[name], delta_softplus=False))(*args)
  expected = _numpy_scan(*(np.asarray(a, np.float64) for a in args))
  assert max_rel_err(out, expected) < 1e-6


SOFTPLUS_POINTS = np.array([-50.0, -5.0, -1.0, 0.0, 1.0, 19.5, 20.001, 25.0, 80.0, 1e4], np.float32)


def _torch_softplus_grad(x):
  """d/dx of torch softplus (threshold 20): 1 above the threshold, sigmoid(x) at or below."""
  return np.where(x > 20.0, 1.0, 1.0 / (1.0 + np.exp(-np.minimum(x.astype(np.float64), 20.0))))


def test_softplus_matches_torch_threshold_rule():
  x = SOFTPLUS_POINTS
  expected = np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x.astype(np.float64), 20.0))))
  np.testing.assert_allclose(reference.softplus(jnp.asarray(x)), expected, rtol=1e-6)
  # Above the threshold softplus is the identity, bit for bit.
  assert np.array_equal(np.asarray(reference.softplus(jnp.asarray(x[x > 20]))), x[x > 20])
  grads = jax.vmap(jax.grad(reference.softplus))(jnp.asarray(x))
  np.testing.assert_allclose(grads, _torch_softplus_grad(x), rtol=1e-6)


def test_softplus_grad_at_exactly_the_threshold():
  """torch takes the log1p(exp(x)) branch at x == 20, so the slope is sigmoid(20), not 1/2."""
  grad = jax.grad(reference.softplus)(jnp.float32(20.0))
  np.testing.assert_allclose(grad, _torch_softplus_grad(np.float32(20.0)), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_scan_grads_finite_past_softplus_threshold(name):
  """delta + bias far beyond 20 (and 1e4) takes the identity branch with finite gradients."""
  inputs = _random_scan_inputs(jax.random.PRNGKey(7), 1, 2, 2, 1, 8)
  inputs["delta"] = inputs["delta"].at[:, :, ::2].set(30.0).at[:, 0, 1].set(1e4)
  weight = jnp.ones(inputs["u"].shape)
  out, grads = _loss_and_grads(IMPLS[name], inputs, weight)
  assert bool(jnp.all(jnp.isfinite(out)))
  for arg in SCAN_ARGS:
    assert bool(jnp.all(jnp.isfinite(grads[arg]))), arg
  # With dt = 30 and A <= -exp(-1.5), exp(dt*A) < 1e-2: the state nearly resets at those steps.
  assert float(jnp.max(jnp.abs(grads["delta"]))) > 0.0


def test_resolve_impl_on_cpu_is_chunked():
  assert jax.default_backend() == "cpu"
  assert pallas_kernels.resolve_impl() is pallas_kernels.ScanImpl.CHUNKED
  assert pallas_kernels.resolve_impl("auto") is pallas_kernels.ScanImpl.CHUNKED
  assert pallas_kernels.resolve_impl("associative") is pallas_kernels.ScanImpl.ASSOCIATIVE
  assert pallas_kernels.resolve_impl("sequential") is pallas_kernels.ScanImpl.SEQUENTIAL
  assert pallas_kernels.resolve_impl("pallas") is pallas_kernels.ScanImpl.PALLAS


@pytest.mark.parametrize("bad", ["cuda", "Associative", "", "triton"])
def test_bad_impl_name_raises_value_error(bad):
  with pytest.raises(ValueError):
    pallas_kernels.resolve_impl(bad)
  inputs = _random_scan_inputs(jax.random.PRNGKey(0), 1, 1, 1, 1, 3)
  with pytest.raises(ValueError):
    pallas_kernels.selective_scan(*(inputs[k] for k in SCAN_ARGS), impl=bad)
