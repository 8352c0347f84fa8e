"""The Pallas kernels on a real GPU at DASS-small's shapes, against the associative reference.

Stage i (1-4) at 1024 frames: L = 8192 / 4^(i-1), K*D = 384 * 2^(i-1), N = 1; batch 2
(and the benchmark's batch 12 at stage 1). Both implementations get identical inputs, so
fp32 differences are summation order only and bf16 differences are output rounding only.
Errors are max |kernel - reference| / max |reference| per array.

tests/conftest.py defaults JAX_PLATFORMS to cpu, so on a GPU machine run
  JAX_PLATFORMS=cuda python -m pytest -q tests/test_pallas_gpu.py
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import max_rel_err, value_and_grads

import pallas_kernels
from pallas_kernels import dispatch
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.random_inputs import SCAN_ARGS, SS2D_ARGS, scan_inputs, ss2d_inputs

pytestmark = [
  pytest.mark.gpu,
  pytest.mark.skipif(
    jax.default_backend() != "gpu",
    reason="needs an NVIDIA GPU; the interpret-mode twins in tests/test_pallas_scan.py cover CPU",
  ),
]

K = K_DIRECTIONS
STAGES = {f"stage{i + 1}": (8192 // 4**i, 96 * 2**i) for i in range(4)}  # (L, d)
FRAMES_HW = {f"stage{i + 1}": (32 >> i, 256 >> i) for i in range(4)}  # (H, W)
# fp32: same math in another summation order. bf16: the outputs and gradients are rounded
# to bf16 (2^-8 relative) after fp32 math. The SS2D bf16 case differs more: the unfused
# route rounds delta to bf16, the fused kernel forms it in fp32. Measured in interpret mode
# on CPU (batch 1, stages 1, 3, 4): fp32 <= 1.3e-6 everywhere; bf16 scan <= 1.9e-3 (values)
# and 5.4e-3 (grads); bf16 SS2D fused <= 7.1e-3 (values) and 9.0e-3 (grads).
TOL = {
  ("scan", jnp.float32, "value"): 1e-5,
  ("scan", jnp.float32, "grad"): 5e-5,
  ("scan", jnp.bfloat16, "value"): 1e-2,
  ("scan", jnp.bfloat16, "grad"): 2e-2,
  ("ss2d", jnp.float32, "value"): 1e-5,
  ("ss2d", jnp.float32, "grad"): 5e-5,
  ("ss2d", jnp.bfloat16, "value"): 3e-2,
  ("ss2d", jnp.bfloat16, "grad"): 3e-2,
}


def _scan_inputs(batch, length, d, dtype, n=1):
  args = scan_inputs(jax.random.PRNGKey(length + d + batch), batch, K, d, n, length, dtype)
  return args, jax.random.normal(jax.random.PRNGKey(7), args[0].shape)


def _ss2d_inputs(batch, height, width, d, dtype, n=1):
  args = ss2d_inputs(
    jax.random.PRNGKey(height * width + d), batch, height, width, d, n, dtype=dtype
  )
  return args, jax.random.normal(jax.random.PRNGKey(6), args[0].shape)


def _assert_matches(kernel_fn, ref_fn, args, weight, names, dtype, path="scan"):
  y, grads = value_and_grads(kernel_fn, args, weight)
  y_ref, grads_ref = value_and_grads(ref_fn, args, weight)
  assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
  assert bool(jnp.all(jnp.isfinite(y)))
  assert max_rel_err(y, y_ref) < TOL[path, dtype, "value"]
  for name, g, g_ref in zip(names, grads, grads_ref):
    assert g.dtype == g_ref.dtype and g.shape == g_ref.shape, name
    assert bool(jnp.all(jnp.isfinite(g))), name
    assert max_rel_err(g, g_ref) < TOL[path, dtype, "grad"], (name, max_rel_err(g, g_ref))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_kernel_matches_reference_at_dass_shapes(stage, dtype):
  length, d = STAGES[stage]
  args, weight = _scan_inputs(2, length, d, dtype)
  kernel = functools.partial(pallas_kernels.selective_scan, impl="pallas")
  ref = functools.partial(pallas_kernels.selective_scan, impl="associative")
  _assert_matches(kernel, ref, args, weight, SCAN_ARGS, dtype)


def test_kernel_bf16_inputs_fp32_output():
  length, d = STAGES["stage2"]
  args, weight = _scan_inputs(2, length, d, jnp.bfloat16)
  kernel = functools.partial(pallas_kernels.selective_scan, impl="pallas", out_dtype=jnp.float32)
  ref = functools.partial(pallas_kernels.selective_scan, impl="associative", out_dtype=jnp.float32)
  y = jax.jit(kernel)(*args)
  assert y.dtype == jnp.float32
  # Same bf16 inputs, fp32 math and output on both sides: fp32 tolerance on the values.
  assert max_rel_err(y, jax.jit(ref)(*args)) < TOL["scan", jnp.float32, "value"]
  _assert_matches(kernel, ref, args, weight, SCAN_ARGS, jnp.bfloat16)


def test_kernel_matches_reference_at_benchmark_batch():
  length, d = STAGES["stage1"]
  args, weight = _scan_inputs(12, length, d, jnp.float32)
  kernel = functools.partial(pallas_kernels.selective_scan, impl="pallas")
  ref = functools.partial(pallas_kernels.selective_scan, impl="associative")
  _assert_matches(kernel, ref, args, weight, SCAN_ARGS, jnp.float32)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_ss2d_core_matches_reference(stage, dtype, fused):
  height, width = FRAMES_HW[stage]
  args, weight = _ss2d_inputs(2, height, width, STAGES[stage][1], dtype)
  kernel = functools.partial(pallas_kernels.ss2d_scan, impl="pallas", fused=fused)
  ref = functools.partial(pallas_kernels.ss2d_scan, impl="associative")
  _assert_matches(kernel, ref, args, weight, SS2D_ARGS, dtype, path="ss2d")


def test_auto_dispatch_picks_pallas_on_gpu():
  assert dispatch.pallas_supported()
  assert pallas_kernels.resolve_impl("auto") is pallas_kernels.ScanImpl.PALLAS
  args, _ = _scan_inputs(1, 64, 8, jnp.float32)
  text = jax.jit(pallas_kernels.selective_scan).lower(*args).as_text()
  assert "custom_call" in text and ("triton" in text or "mosaic" in text)
  auto = jax.jit(pallas_kernels.selective_scan)(*args)
  pallas = jax.jit(functools.partial(pallas_kernels.selective_scan, impl="pallas"))(*args)
  np.testing.assert_array_equal(auto, pallas)
