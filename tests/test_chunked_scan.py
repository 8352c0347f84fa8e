"""The chunked scan's own pieces: reverse scans, the SS2D route, chunking, memory.

Its golden parity (PyTorch fixtures, N = 1 and 4, values and 7 gradients) and N = 16 are in
test_scan_reference.py. Comparisons here are max|got - ref| / max|ref| against the sequential
`lax.scan` reference on the same float32 inputs; 1e-5 is the float32 tolerance used for every
scan implementation (measured: <= 1e-6, summation order only).
"""

import functools

import jax
import jax.numpy as jnp
import pytest
from jaxpr_sizes import largest_intermediate
from numerics import max_rel_err, value_and_grads

from pallas_kernels import chunked_scan, reference, ss2d_chunked, ss2d_core
from pallas_kernels.random_inputs import SCAN_ARGS, SS2D_ARGS, scan_inputs, ss2d_inputs

TOL = 1e-5
DT_RANGE = (0.05, 1.0)  # strong decay along the sequence


def _channels_last_inputs(key, batch, groups, length, d, n):
  """(u, dt, A, B, C) in the chunked scan's own layouts."""
  ks = jax.random.split(key, 5)
  return (
    jax.random.normal(ks[0], (batch, groups, length, d)),
    jnp.exp(jax.random.uniform(ks[1], (batch, groups, length, d), minval=-3.0, maxval=0.0)),
    -jnp.exp(0.5 * jax.random.normal(ks[2], (groups, n, d))),
    jax.random.normal(ks[3], (batch, groups, length, n)),
    jax.random.normal(ks[4], (batch, groups, length, n)),
  )


def _sequential_channels_last(u, dt, A, B, C):
  """The reference scan (no softplus, no D) on channels-last layouts."""
  batch, groups, length, d = u.shape

  def channels_first(x):  # (batch, G, L, X) -> (batch, G, X, L)
    return jnp.swapaxes(x, -1, -2)

  y = reference.selective_scan_sequential(
    channels_first(u).reshape(batch, groups * d, length),
    channels_first(dt).reshape(batch, groups * d, length),
    jnp.swapaxes(A, 1, 2).reshape(groups * d, -1),
    channels_first(B),
    channels_first(C),
    delta_softplus=False,
  )
  return channels_first(y.reshape(batch, groups, d, length))


@pytest.mark.parametrize("n,length,chunk", [(1, 37, 8), (3, 40, 16)], ids=["n1-padded", "n3"])
def test_reverse_scan_is_the_forward_scan_of_the_flipped_sequence(n, length, chunk):
  args = _channels_last_inputs(jax.random.PRNGKey(length), 2, 2, length, 5, n)
  weight = jax.random.normal(jax.random.PRNGKey(1), args[0].shape)
  flip = lambda x: jnp.flip(x, axis=2) if x.ndim == 4 else x
  reverse = functools.partial(chunked_scan.scan_channels_last, reverse=True, chunk_size=chunk)
  y, grads = value_and_grads(reverse, args, weight)
  y_ref, grads_ref = value_and_grads(
    lambda *a: flip(_sequential_channels_last(*map(flip, a))), args, weight
  )
  assert max_rel_err(y, y_ref) < TOL
  for name, g, g_ref in zip(["u", "dt", "A", "B", "C"], grads, grads_ref):
    assert max_rel_err(g, g_ref) < TOL, name


@pytest.mark.parametrize(
  "batch,height,width,d,n,chunk",
  [(2, 3, 7, 6, 1, 4), (1, 5, 4, 5, 3, None)],
  ids=["n1-3x7-chunk4", "n3-5x4"],
)
def test_ss2d_route_matches_unfused_sequential(batch, height, width, d, n, chunk):
  """Non-square maps (a row/column mix-up fails), padding (21 tokens in chunks of 4)."""
  args = ss2d_inputs(
    jax.random.PRNGKey(height * width), batch, height, width, d, n, dt_range=DT_RANGE
  )
  weight = jax.random.normal(jax.random.PRNGKey(1), args[0].shape)
  chunked = functools.partial(ss2d_chunked.ss2d_scan_chunked, chunk_size=chunk)
  y, grads = value_and_grads(chunked, args, weight)
  y_ref, grads_ref = value_and_grads(
    functools.partial(ss2d_core.ss2d_scan, impl="sequential"), args, weight
  )
  assert y.shape == args[0].shape
  assert max_rel_err(y, y_ref) < TOL
  for name, g, g_ref in zip(SS2D_ARGS, grads, grads_ref):
    assert g.shape == g_ref.shape, name
    assert max_rel_err(g, g_ref) < TOL, name


def test_ss2d_core_takes_the_chunked_route_by_default():
  """The chunked route holds two copies of the map at most (one per token order), the
  unfused route the four routes' copies."""
  args = ss2d_inputs(jax.random.PRNGKey(0), 1, 4, 6, 8, 1)
  map_size = args[0].size
  route = functools.partial(ss2d_core.ss2d_scan, impl="chunked")
  unfused = functools.partial(ss2d_core.ss2d_scan, impl="chunked", fused=False)
  assert largest_intermediate(route, *args) == 2 * map_size
  assert largest_intermediate(unfused, *args) == 4 * map_size
  with pytest.raises(ValueError, match="fused=True needs impl 'pallas' or 'chunked'"):
    ss2d_core.ss2d_scan(*args, impl="associative", fused=True)


def test_bf16_map_gives_bf16_output_of_the_fp32_math():
  args = ss2d_inputs(jax.random.PRNGKey(2), 1, 4, 8, 16, 1, dtype=jnp.bfloat16)
  y = jax.jit(ss2d_core.ss2d_scan)(*args)
  y32 = jax.jit(ss2d_core.ss2d_scan)(args[0].astype(jnp.float32), *args[1:])
  assert y.dtype == jnp.bfloat16
  assert max_rel_err(y.astype(jnp.float32), y32) < 2**-8  # one bf16 rounding of the output


def test_inference_never_materialises_states_times_n():
  """With N = 4 the forward holds nothing larger than u; the associative scan holds 4 u."""
  args = scan_inputs(jax.random.PRNGKey(0), 2, 2, 16, 4, 64)
  u_size = args[0].size
  chunked = functools.partial(chunked_scan.selective_scan_chunked, chunk_size=8)
  assert largest_intermediate(chunked, *args) <= u_size
  assert largest_intermediate(reference.selective_scan_associative, *args) >= 4 * u_size


def test_gradients_of_every_input_have_its_shape_and_dtype():
  args = scan_inputs(jax.random.PRNGKey(4), 1, 2, 3, 2, 11, jnp.bfloat16)
  grads = jax.jit(
    jax.grad(
      lambda *a: jnp.sum(chunked_scan.selective_scan_chunked(*a).astype(jnp.float32)),
      argnums=tuple(range(len(SCAN_ARGS))),
    )
  )(*args)
  for name, g, x in zip(SCAN_ARGS, grads, args):
    assert g.shape == x.shape and g.dtype == x.dtype, name
    assert bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))), name


def test_chunk_length():
  assert chunked_scan.chunk_length(8192) == 64  # sqrt(8192 / 2)
  assert chunked_scan.chunk_length(2048) == 32
  assert chunked_scan.chunk_length(128) == 8
  assert chunked_scan.chunk_length(5) == 5  # never longer than the sequence
  assert chunked_scan.chunk_length(1 << 24) == chunked_scan.MAX_CHUNK
  assert chunked_scan.chunk_length(100, 7) == 7
  with pytest.raises(ValueError, match="chunk_size must be positive"):
    chunked_scan.chunk_length(100, 0)


def test_softplus_matches_torch_threshold_softplus():
  x = jnp.concatenate([jnp.linspace(-40.0, 40.0, 4001), jnp.array([-1e-3, 0.0, 1e-3, 19.9, 20.1])])
  assert max_rel_err(ss2d_chunked.softplus(x), reference.softplus(x)) <= 3e-7


@pytest.mark.parametrize("batch, length, rank, d", [(2, 13, 3, 8), (1, 40, 6, 16), (1, 24, 16, 8)])
def test_step_sizes_gradients_match_autodiff_of_the_plain_formula(batch, length, rank, d):
  """The custom VJP (slope from the saved dt, two products) against autodiff of
  softplus(low_rank @ weight + bias). 1e-5: float32, only the summation order and the slope's
  1 - exp(-dt) against sigmoid(pre) differ (measured <= 1e-6)."""
  ks = jax.random.split(jax.random.PRNGKey(7), 4)
  low_rank = jax.random.normal(ks[0], (batch, 2, length, rank))
  weight = jax.random.normal(ks[1], (2, rank, d))
  bias = 2.0 * jax.random.normal(ks[2], (2, 1, d))  # softplus on both sides of 0
  cotangent = jax.random.normal(ks[3], (batch, 2, length, d))

  def plain(low_rank, weight, bias):
    return reference.softplus(jnp.einsum("bolr,ord->bold", low_rank, weight) + bias)

  got = value_and_grads(ss2d_chunked.step_sizes, (low_rank, weight, bias), cotangent)
  ref = value_and_grads(plain, (low_rank, weight, bias), cotangent)
  assert max_rel_err(got[0], ref[0]) <= TOL
  for name, g, r in zip(("low_rank", "weight", "bias"), got[1], ref[1]):
    assert g.shape == r.shape, name
    assert max_rel_err(g, r) <= TOL, name
