"""The Pallas kernels on a real GPU at DASS-small's shapes, against the associative reference.

Stage i (1-4) at 1024 frames: L = 8192 / 4^(i-1), K*D = 384 * 2^(i-1), N = 1; batch 2
(and the benchmark's batch 12 at stage 1); stage 1 at 1028 frames (a 32 x 257 map, 8224
tokens: no chunk length divides it, so the kernels pad). Both implementations get identical
inputs, under an explicit matmul precision per row (fp32(highest), TF32, bf16: tests/
kernel_parity.py, which also gives and justifies every tolerance). Errors are
max |kernel - reference| / max |reference| per array.

tests/conftest.py defaults JAX_PLATFORMS to cpu, so on a GPU machine run
  JAX_PLATFORMS=cuda python -m pytest -v -rA tests/test_pallas_gpu.py
(`scripts/gpu_check.sh` does, as its section 1).

Every test here skips off GPU; its CPU interpret-mode twin (bf16, and fp32 where the twin
files do not already have it) runs everywhere:

| GPU test                                      | CPU twin                                       |
|-----------------------------------------------|------------------------------------------------|
| test_kernel_matches_reference_at_dass_shapes  | test_pallas_gpu_twins::test_scan_twin          |
| test_kernel_matches_reference_at_aum_shape    | test_pallas_gpu_twins::test_scan_twin[bf16-n16]|
| test_kernel_bf16_inputs_fp32_output           | test_pallas_gpu_twins::test_scan_twin[bf16-f32]|
| test_kernel_matches_reference_at_benchmark... | test_pallas_gpu_twins::test_scan_twin (batch 3)|
| test_ss2d_core_matches_reference              | test_pallas_gpu_twins::test_ss2d_twin          |
| test_fused_ss2d_tf32                          | test_pallas_gpu_twins::test_ss2d_twin[bf16-*]  |
| test_awkward_length                           | test_pallas_gpu_twins::test_{ss2d,scan}_twin,  |
|                                               | test_pallas_fused::test_padded_tokens_are_exact|
| test_chunked_scan_on_gpu                      | test_pallas_gpu_twins::test_chunked_scan_twin  |
| test_auto_self_check_picks_pallas_on_gpu      | test_scan_auto::test_bf16_fused_kernel_that... |
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_parity import BF16, FP32, TF32, assert_matches, scan_case, ss2d_case
from numerics import max_rel_err

import pallas_kernels
from pallas_kernels import dispatch, kernel_check, pallas_scan
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.random_inputs import SCAN_ARGS, SS2D_ARGS

pytestmark = [
  pytest.mark.gpu,
  pytest.mark.skipif(
    jax.default_backend() != "gpu",
    reason="needs an NVIDIA GPU; the interpret-mode twins (module docstring) cover CPU",
  ),
]

K = K_DIRECTIONS
STAGES = {f"stage{i + 1}": (8192 // 4**i, 96 * 2**i) for i in range(4)}  # (L, d)
FRAMES_HW = {f"stage{i + 1}": (32 >> i, 256 >> i) for i in range(4)}  # (H, W)
ROWS = [FP32, BF16]


def _impl(name, **kw):
  return functools.partial(pallas_kernels.selective_scan, impl=name, **kw)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_kernel_matches_reference_at_dass_shapes(stage, row):
  length, d = STAGES[stage]
  args, weight = scan_case(2, K, length, d, row.dtype)
  assert_matches(_impl("pallas"), _impl("associative"), args, weight, SCAN_ARGS, row)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_kernel_matches_reference_at_aum_shape(row):
  """AuM-base's scan: K = 2 directions of 1536 channels, N = 16 (4 warps), 513 tokens."""
  args, weight = scan_case(2, 2, 513, 1536, row.dtype, n=16)
  assert_matches(_impl("pallas"), _impl("associative"), args, weight, SCAN_ARGS, row)


def test_kernel_bf16_inputs_fp32_output():
  length, d = STAGES["stage2"]
  args, weight = scan_case(2, K, length, d, jnp.bfloat16)
  kernel, ref = _impl("pallas", out_dtype=jnp.float32), _impl("associative", out_dtype=jnp.float32)
  y = jax.jit(kernel)(*args)
  assert y.dtype == jnp.float32
  # Same bf16 inputs, fp32 math and output on both sides: the fp32 tolerance on the values.
  assert max_rel_err(y, jax.jit(ref)(*args)) < 1e-5
  assert_matches(kernel, ref, args, weight, SCAN_ARGS, BF16)


def test_kernel_matches_reference_at_benchmark_batch():
  length, d = STAGES["stage1"]
  args, weight = scan_case(12, K, length, d, jnp.float32)
  assert_matches(_impl("pallas"), _impl("associative"), args, weight, SCAN_ARGS, FP32)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_ss2d_core_matches_reference(stage, row, fused):
  height, width = FRAMES_HW[stage]
  args, weight = ss2d_case(2, height, width, STAGES[stage][1], row.dtype)
  kernel = functools.partial(pallas_kernels.ss2d_scan, impl="pallas", fused=fused)
  ref = functools.partial(pallas_kernels.ss2d_scan, impl="associative")
  assert_matches(kernel, ref, args, weight, SS2D_ARGS, row, path="ss2d")


@pytest.mark.parametrize("stage", ["stage1", "stage3"])
def test_fused_ss2d_tf32(stage):
  """JAX's default fp32 matmul precision on this GPU (TF32): the fused kernel forms the dt
  projection in fp32, the unfused reference as a TF32 matmul (tolerance: kernel_parity)."""
  height, width = FRAMES_HW[stage]
  args, weight = ss2d_case(2, height, width, STAGES[stage][1], jnp.float32)
  kernel = functools.partial(pallas_kernels.ss2d_scan, impl="pallas", fused=True)
  ref = functools.partial(pallas_kernels.ss2d_scan, impl="associative")
  errors = assert_matches(kernel, ref, args, weight, SS2D_ARGS, TF32, path="ss2d")
  print(f"TF32 fused vs unfused, {stage}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_awkward_length(row):
  """Stage 1 at 1028 frames: 32 x 257 tokens, 33 chunks of 256 with 224 padded tokens."""
  height, width, d = 32, 257, 96
  args, weight = ss2d_case(2, height, width, d, row.dtype)
  kernel = functools.partial(pallas_kernels.ss2d_scan, impl="pallas", fused=True)
  ref = functools.partial(pallas_kernels.ss2d_scan, impl="associative")
  assert_matches(kernel, ref, args, weight, SS2D_ARGS, row, path="ss2d")
  args, weight = scan_case(2, K, height * width, d, row.dtype)
  assert_matches(_impl("pallas"), _impl("associative"), args, weight, SCAN_ARGS, row)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_chunked_scan_on_gpu(row):
  """The chunked scan, auto's fallback, at stage 1 (and its SS2D route)."""
  length, d = STAGES["stage1"]
  args, weight = scan_case(2, K, length, d, row.dtype)
  assert_matches(_impl("chunked"), _impl("associative"), args, weight, SCAN_ARGS, row)
  height, width = FRAMES_HW["stage1"]
  args, weight = ss2d_case(2, height, width, d, row.dtype)
  chunked = functools.partial(pallas_kernels.ss2d_scan, impl="chunked")
  ref = functools.partial(pallas_kernels.ss2d_scan, impl="associative")
  assert_matches(chunked, ref, args, weight, SS2D_ARGS, row, path="ss2d")


def test_auto_self_check_picks_pallas_on_gpu(monkeypatch):
  monkeypatch.delenv(dispatch.IMPL_ENV, raising=False)
  assert pallas_scan.supported_on_default_backend()
  families = [
    kernel_check.Family(kernel, dtype, n)
    for kernel, n in (("scan", 1), ("scan", 16), ("ss2d", 1))  # DASS, AuM, DASS fused
    for dtype in ("float32", "bfloat16")
  ]
  for family in families:
    result = kernel_check.verify(family)
    print(f"self-check {family}: {result.reason}, {result.seconds:.1f} s")
    assert result.ok, (family, result.reason)
    assert pallas_kernels.resolve_impl("auto", family) is pallas_kernels.ScanImpl.PALLAS
  args, _ = scan_case(1, 2, 64, 8, jnp.float32)
  text = jax.jit(pallas_kernels.selective_scan).lower(*args).as_text()
  assert "custom_call" in text and "triton" in text
  auto = jax.jit(pallas_kernels.selective_scan)(*args)
  np.testing.assert_array_equal(auto, jax.jit(_impl("pallas"))(*args))
