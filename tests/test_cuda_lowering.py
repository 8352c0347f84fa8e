"""Every Pallas kernel lowers for CUDA (Triton) on this CPU-only machine, at the real shapes.

Lowering (`jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))`) runs the whole Pallas
Triton lowering in Python: a kernel that would not lower on a GPU fails here too. What it
cannot check (register use, spills, the PTX) is `benchmarks/offline_compile.py`'s job
(tests/test_offline_compile.py); what only a GPU can (numerics, speed) is the GPU check's.

Shape matrix, read off the models (`benchmarks/kernel_shapes.py`), forward + backward, float32
and bfloat16:
* the fused SS2D kernels at every SS2D block shape of DASS-small and DASS-medium at 1000,
  1024, 1028 and 4096 frames (the two models have the same stage maps, asserted, and stage 4
  is 4 x 32 at both 1000 and 1024 frames, so each of the 15 distinct maps is lowered once per
  dtype: 30 lowerings);
* the plain selective-scan kernels at AuM-base's and AuM-small's scan shapes (K = 2,
  N = 16, L = 513), and at DASS's four stage shapes at 1028 frames (the unfused route,
  lengths that need padding);
* the whole DASS-small training step (forward, backward, Adam) lowered for `cuda` with
  scan_impl="pallas", and for `tpu` with scan_impl="auto" as a TPU host resolves it.
Per kernel launch the test checks the kernel names, num_warps, and the grid: no whole-length
chunk (`pallas_plumbing.choose_chunk`), so every long sequence runs on several programs.
Measured on the 2-core dev machine: ~2 minutes for the file, load permitting.
"""

import dataclasses
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import pytest

from dass_jax.models import DASS, AumConfig, DassConfig
from pallas_kernels import chunk_engine, dispatch, pallas_plumbing, pallas_ss2d_fused
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.triton_lowering import (
  TRITON_TARGET,
  lower_for,
  scan_kernel_call,
  ss2d_kernel_call,
  triton_calls,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from kernel_shapes import ScanShape, Ss2dShape, aum_scan_shapes, dass_ss2d_shapes
from train_step import train_step

FRAMES = (1000, 1024, 1028, 4096)
DTYPES = (jnp.float32, jnp.bfloat16)
MAX_CHUNK = pallas_plumbing.DEFAULT_CHUNK + pallas_plumbing.CHUNK_ALIGN - 1
FUSED = ("ss2d_fused_fwd_chunk_states", "ss2d_fused_fwd")
FUSED_BWD = ("ss2d_fused_bwd_chunk_carries", "ss2d_fused_bwd")
SCAN = ("selective_scan_fwd_chunk_states", "selective_scan_fwd")
SCAN_BWD = ("selective_scan_bwd_chunk_carries", "selective_scan_bwd")


def _stage_maps(frames: int) -> list[Ss2dShape]:
  """DASS's SS2D maps by PyTorch's conv arithmetic: each stride-2 conv halves, rounding up."""
  maps = []
  for i in range(4):  # stage i: the patch embed's two halvings, then i more; ceil(ceil(n/2)/2)
    d = 96 << i  # = ceil(n/4)
    maps.append(Ss2dShape(32 >> i, -(frames // -(4 << i)), d, 1, -(d // -16)))
  return maps


# 16 (frames, stage) pairs, 15 distinct maps (stage 4 is 4 x 32 at 1000 and 1024 frames).
DASS_MAPS = sorted({m for f in FRAMES for m in _stage_maps(f)}, key=lambda m: (m.d, m.width))


@functools.cache
def _aum_scans(size: str):
  return aum_scan_shapes(getattr(AumConfig, size)())


def test_shape_matrix_is_the_models():
  for frames in FRAMES:
    small = dass_ss2d_shapes(DassConfig.small(), frames)
    assert small == _stage_maps(frames) == dass_ss2d_shapes(DassConfig.medium(), frames)
  assert len(DASS_MAPS) == 15
  assert _aum_scans("base") == [ScanShape(2, 1536, 16, 513)]
  assert _aum_scans("small") == [ScanShape(2, 768, 16, 513)]


def _spec(shape, dtype):
  return jax.ShapeDtypeStruct(shape, dtype)


def _check_launches(calls, names, length, channels_per_group, groups, n, batch=1):
  """Names in order, the default warps (1 for N = 1, 4 for N = 16), the grid (batch, blocks,
  chunks)."""
  assert [c.name for c in calls] == list(names), [c.name for c in calls]
  lanes = chunk_engine.lanes_for(channels_per_group)
  blocks = -(-channels_per_group // lanes)
  for call in calls:
    assert call.num_warps == chunk_engine.default_num_warps(lanes, n), call
    b, j, chunks = call.grid
    assert (b, j) == (batch, groups * blocks), call
    assert chunks * MAX_CHUNK >= length, call  # no chunk longer than the target, rounded
    assert chunks == -(-length // pallas_plumbing.choose_chunk(length, 256)), call


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("shape", DASS_MAPS, ids=lambda m: f"{m.height}x{m.width}x{m.d}")
def test_fused_ss2d_kernels_lower_for_cuda(shape, dtype):
  h, w, d = shape.height, shape.width, shape.d
  fn, args = ss2d_kernel_call(1, h, w, d, shape.n, shape.rank, dtype)
  calls = triton_calls(lower_for("cuda", fn, *args))
  multi = -(-h * w // pallas_plumbing.choose_chunk(h * w, 256)) > 1
  names = (FUSED if multi else FUSED[1:]) + (FUSED_BWD if multi else FUSED_BWD[1:])
  _check_launches(calls, names, h * w, d, pallas_ss2d_fused.ROUTE_PAIRS, shape.n)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize(
  "source", ["aum-base", "aum-small", *(f"dass-1028-stage{i + 1}" for i in range(4))]
)
def test_scan_kernels_lower_for_cuda(source, dtype):
  if source.startswith("aum"):
    (shape,) = _aum_scans(source.split("-")[1])
    groups, d, n, length = shape.groups, shape.d, shape.n, shape.length
  else:  # the unfused SS2D route: K = 4 groups of the stage's channels over its tokens
    m = _stage_maps(1028)[int(source[-1]) - 1]
    groups, d, n, length = K_DIRECTIONS, m.d, m.n, m.height * m.width
  fn, args = scan_kernel_call(1, groups, d, n, length, dtype)
  calls = triton_calls(lower_for("cuda", fn, *args))
  multi = -(-length // pallas_plumbing.choose_chunk(length, 256)) > 1
  names = (SCAN if multi else SCAN[1:]) + (SCAN_BWD if multi else SCAN_BWD[1:])
  _check_launches(calls, names, length, d, groups, n)
  assert calls[0].num_warps == (4 if n == 16 else 1)


def _train_step_args(config, batch=2, frames=1024):
  model = DASS(config)
  x = _spec((batch, frames, config.num_mel_bins), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  tx = optax.adam(1e-4)
  opt_state = jax.eval_shape(tx.init, params)
  y = _spec((batch, config.num_classes), jnp.float32)
  key = jax.eval_shape(jax.random.key, 0)
  return train_step(model, tx), (params, opt_state, x, y, key)


def test_dass_small_training_step_lowers_for_cuda_with_pallas():
  step, args = _train_step_args(DassConfig.small(scan_impl="pallas"))
  calls = triton_calls(lower_for("cuda", step, *args))
  blocks = sum(DassConfig.small().depths)
  # Forward and backward of every block's fused SS2D core (stage 4 at 1024 frames, 128
  # tokens, is one chunk: two launches fewer there).
  assert {c.name for c in calls} == set(FUSED + FUSED_BWD)
  assert len(calls) == 4 * blocks - 2 * DassConfig.small().depths[-1]


def test_dass_small_training_step_lowers_for_tpu_with_auto(monkeypatch):
  """`auto` as a TPU host resolves it (the associative scan) and the step lowers for TPU."""
  monkeypatch.setattr(dispatch, "_backend", lambda: "tpu")
  monkeypatch.delenv(dispatch.IMPL_ENV, raising=False)
  dispatch._resolve_auto.cache_clear()
  try:
    assert dispatch.resolve_impl("auto") is dispatch.ScanImpl.ASSOCIATIVE
    step, args = _train_step_args(dataclasses.replace(DassConfig.small(), scan_impl="auto"))
    text = lower_for("tpu", step, *args).as_text()
  finally:
    dispatch._resolve_auto.cache_clear()
  assert TRITON_TARGET not in text and "tpu_custom_call" not in text
  assert text.count("stablehlo.reduce_window") + text.count("stablehlo.slice") > 0
