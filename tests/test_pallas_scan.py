"""CPU (interpret-mode) tests of the Pallas selective-scan kernel and its custom VJP.

Every comparison is `max|got - ref| <= tol * max|ref|`, per output and per gradient, against
`reference.selective_scan_sequential` run in fp32 on the same (possibly bf16) inputs, or
against the float64 PyTorch golden.

| comparison                                  | values | the 7 gradients |
|---------------------------------------------|--------|-----------------|
| fp32 inputs, fp32 out vs fp32 reference     | 1e-5   | 1e-5            |
| bf16 inputs, bf16 out vs fp32 reference     | 1e-2   | 2e-2            |
| bf16 inputs, fp32 out vs fp32 reference     | 1e-5   | 2e-2            |
| fp32 kernel vs float64 PyTorch golden (L=64)| 1e-5   | 1e-5            |

bf16 gradient tolerances cover the bf16 rounding of the cotangent and of du, ddelta, dB, dC;
state and accumulation stay fp32, so fp32 outputs of bf16 inputs match to fp32 accuracy.
Shapes are small (interpret mode compiles one loop per kernel); the CUDA lowering of the same
kernels is checked by exporting for the "cuda" platform from this CPU-only machine.
"""

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from jaxpr_sizes import largest_intermediate
from numerics import value_and_grads

from pallas_kernels import dispatch, pallas_scan, reference
from pallas_kernels.random_inputs import SCAN_ARGS, scan_inputs


def make_inputs(seed, batch, groups, d, n, length, dtype=jnp.float32):
  """The shared random inputs, dt from [0.05, 1] so the decay varies strongly along L."""
  return scan_inputs(
    jax.random.PRNGKey(seed), batch, groups, d, n, length, dtype, dt_range=(0.05, 1.0)
  )


def assert_close(got, want, tol, name):
  """max|got - want| <= tol * max|want| (numerics.max_rel_err), shapes equal."""
  numerics.assert_close(got, want, tol=tol, measure=numerics.max_rel_err, name=name)


CASES = [
  # batch, K, D, N, L, chunk_size, dtype, out_dtype, tol_values, tol_grads
  pytest.param(1, 2, 5, 1, 1, None, jnp.float32, None, 1e-5, 1e-5, id="L1-n1"),
  pytest.param(3, 2, 3, 4, 7, 4, jnp.float32, None, 1e-5, 1e-5, id="L7-n4-chunk4"),
  pytest.param(2, 2, 5, 1, 33, 8, jnp.float32, None, 1e-5, 1e-5, id="L33-n1-chunk8"),
  pytest.param(2, 2, 40, 4, 257, 64, jnp.float32, None, 1e-5, 1e-5, id="L257-n4-D40"),
  pytest.param(2, 2, 6, 4, 33, 16, jnp.bfloat16, None, 1e-2, 2e-2, id="bf16-n4"),
  pytest.param(1, 2, 7, 1, 33, 32, jnp.bfloat16, jnp.float32, 1e-5, 2e-2, id="bf16-n1-f32out"),
]


@pytest.mark.parametrize("batch,groups,d,n,length,chunk,dtype,out_dtype,tol_y,tol_g", CASES)
def test_matches_sequential_reference(
  batch, groups, d, n, length, chunk, dtype, out_dtype, tol_y, tol_g
):
  args = make_inputs(batch * 100 + length, batch, groups, d, n, length, dtype)
  cot = jax.random.normal(jax.random.PRNGKey(7), args[0].shape)
  kw = dict(out_dtype=out_dtype)
  y, grads = value_and_grads(
    lambda *a: pallas_scan.selective_scan(*a, interpret=True, chunk_size=chunk, **kw), args, cot
  )
  y_ref, grads_ref = value_and_grads(
    lambda *a: reference.selective_scan_sequential(*a, **kw), args, cot
  )
  assert y.dtype == jnp.dtype(out_dtype or dtype)
  assert_close(y, y_ref, tol_y, "y")
  for name, g, g_ref, x in zip(SCAN_ARGS, grads, grads_ref, args):
    assert g.shape == x.shape and g.dtype == x.dtype, name
    assert_close(g, g_ref, tol_g, f"grad {name}")


@pytest.mark.parametrize("prefix", ["n1", "n4"])
def test_matches_torch_golden(shared_fixtures, prefix):
  z = np.load(shared_fixtures / "selective_scan_golden.npz")
  f32 = lambda key: jnp.asarray(z[f"{prefix}_{key}"], jnp.float32)
  args = [f32(k) for k in SCAN_ARGS]
  y, grads = value_and_grads(
    lambda *a: pallas_scan.selective_scan(*a, interpret=True, chunk_size=16), args, f32("Wout")
  )
  assert_close(y, z[f"{prefix}_out"], 1e-5, "y")
  for name, g in zip(SCAN_ARGS, grads):
    assert_close(g, z[f"{prefix}_grad_{name}"], 1e-5, f"grad {name}")


def test_vmap_and_no_softplus_without_skip_terms():
  """vmap over an extra leading axis of y and of grad u; D=None, delta_bias=None, no softplus."""
  u, delta, A, B, C, _, _ = make_inputs(3, 2, 2, 3, 4, 19)
  delta = jnp.abs(delta)  # a valid dt without softplus

  def loss(fn, u, delta, B, C):
    return jnp.sum(jnp.sin(fn(u[None], delta[None], A, B[None], C[None], delta_softplus=False)))

  def kernel(*a, **k):
    return pallas_scan.selective_scan(*a, interpret=True, chunk_size=8, **k)

  got = jax.jit(jax.vmap(jax.value_and_grad(lambda *a: loss(kernel, *a))))(u, delta, B, C)
  want = jax.vmap(jax.value_and_grad(lambda *a: loss(reference.selective_scan_sequential, *a)))(
    u, delta, B, C
  )
  for name, g, w in zip(("loss", "grad u"), got, want):
    assert_close(g, w, 1e-5, name)


def test_dispatch_routes_to_kernel_and_cpu_is_not_supported():
  args = make_inputs(5, 1, 2, 3, 1, 9)
  assert not pallas_scan.supported_on_default_backend()
  assert dispatch.resolve_impl("auto") is dispatch.ScanImpl.CHUNKED
  got = dispatch.selective_scan(*args, impl="pallas", interpret=True)
  assert_close(got, reference.selective_scan_sequential(*args), 1e-5, "y")


@pytest.mark.parametrize("n,dtype", [(1, jnp.float32), (4, jnp.bfloat16)])
def test_lowers_for_cuda_with_triton(n, dtype):
  """Cross-platform export: every kernel (forward and backward) lowers to a Triton call."""
  u, delta, A, B, C, D, bias = make_inputs(0, 2, 2, 40, n, 70, dtype)

  def loss(*a):
    return jnp.sum(pallas_scan.selective_scan(*a, chunk_size=32).astype(jnp.float32))

  exported = jax.export.export(
    jax.jit(jax.value_and_grad(loss, argnums=tuple(range(7)))),
    platforms=["cuda"],
    disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
  )(u, delta, A, B, C, D, bias)
  text = exported.mlir_module()
  assert text.count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 4
  for kernel in (
    "selective_scan_fwd_chunk_states",
    "selective_scan_fwd",
    "selective_scan_bwd_chunk_carries",
    "selective_scan_bwd",
  ):
    assert f'name = "{kernel}' in text, kernel


def test_backward_never_materialises_the_state_sequence():
  """Forward + backward hold nothing larger than u; the state sequence is N = 4 times that."""
  args = make_inputs(0, 2, 2, 32, 4, 64)

  def grads(scan_fn):
    return jax.grad(lambda *a: jnp.sum(scan_fn(*a)), argnums=tuple(range(7)))

  u_size = args[0].size
  kernel = lambda *a: pallas_scan.selective_scan(*a, chunk_size=16)
  assert largest_intermediate(grads(kernel), *args) == u_size
  assert largest_intermediate(grads(reference.selective_scan_sequential), *args) >= 4 * u_size
