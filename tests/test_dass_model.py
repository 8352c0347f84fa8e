"""Self-contained checks of the Flax DASS model (no fixtures): shapes, params, init, drop path,
dtypes, jit, long inputs and input validation. Parity with PyTorch is in test_dass_golden.py."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from dass_jax.layers import DropPath
from dass_jax.models import DASS, DassConfig
from dass_jax.models.dass import conv3x3_s2, drop_path_schedule, torch_activations
from dass_jax.models.ss2d import depthwise_conv3x3

# Four stages for the shape checks (traced only, never compiled); two stages and the sequential
# scan elsewhere, to keep XLA compile times (which dominate on CPU) short.
TINY4 = DassConfig(num_classes=5, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), drop_path_rate=0.0)
TINY = DassConfig(
  num_classes=5, depths=(1, 1), dims=(8, 16), d_state=2, drop_path_rate=0.0, scan_impl="sequential"
)
FRAMES = 64


def _torch_out(n: int) -> int:
  """PyTorch Conv2d(k=3, s=2, p=1) output size."""
  return (n + 2 - 3) // 2 + 1


def _n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@functools.cache
def _forward(config: DassConfig, train: bool = False):
  """Jitted (params, x, dropout_key) -> (logits, intermediates), compiled once per config."""

  def run(params, x, key):
    logits, state = DASS(config).apply(
      {"params": params}, x, train=train, rngs={"dropout": key}, mutable=["intermediates"]
    )
    return logits, torch_activations(state["intermediates"])

  return jax.jit(run)


@pytest.fixture(scope="module")
def tiny_params():
  return jax.jit(DASS(TINY).init)(jax.random.key(0), jnp.zeros((1, 16, 128)))["params"]


def _fbank(frames=FRAMES, batch=2, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, frames, 128))


@pytest.mark.parametrize("frames", [200, 257, 1000, 10240])
def test_stage_shapes_follow_pytorch(frames):
  out, state = jax.eval_shape(
    lambda: DASS(TINY4).init_with_output(
      jax.random.key(0), jnp.zeros((2, frames, 128)), mutable=["params", "intermediates"]
    )
  )
  acts = torch_activations(state["intermediates"])
  h, w = _torch_out(_torch_out(128)), _torch_out(_torch_out(frames))
  assert acts["patch_embed"].shape == (2, h, w, 8)
  for i, dim in enumerate(TINY4.dims):
    assert acts[f"layers.{i}.blocks.0"].shape == (2, h, w, dim)
    if i < 3:
      h, w = _torch_out(h), _torch_out(w)
      assert acts[f"layers.{i}"].shape == (2, h, w, TINY4.dims[i + 1])
  assert acts["layers.3.blocks.0.op.ys"].shape == (2, 4, 64, h * w)
  assert acts["layers.3.blocks.0.op.Bs"].shape == (2, 4, 1, h * w)
  assert acts["classifier.pooled"].shape == (2, 64)
  assert out.shape == (2, 5) and out.dtype == jnp.float32


@pytest.mark.parametrize(
  "make, expected", [(DassConfig.small, 29_884_463), (DassConfig.medium, 48_648_239)]
)
def test_param_count_matches_torch(make, expected):
  shapes = jax.eval_shape(lambda: DASS(make()).init(jax.random.key(0), jnp.zeros((1, 64, 128))))
  assert _n_params(shapes["params"]) == expected
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))


def test_param_tree_mirrors_torch_keys():
  p = jax.eval_shape(lambda: DASS(TINY4).init(jax.random.key(0), jnp.zeros((1, 16, 128))))
  p = p["params"]
  assert p["patch_embed"]["conv0"]["kernel"].shape == (3, 3, 1, 4)
  assert p["patch_embed"]["norm1"]["scale"].shape == (8,)
  op = p["layers_1"]["blocks_0"]["op"]
  assert op["in_proj"]["kernel"].shape == (16, 16)
  assert op["conv2d"]["kernel"].shape == (3, 3, 1, 16)
  assert op["x_proj_weight"].shape == (4, 1 + 2, 16)
  assert op["dt_projs_weight"].shape == (4, 16, 1)
  assert op["A_logs"].shape == (64, 1) and op["Ds"].shape == (64,)
  assert p["layers_0"]["downsample"]["conv"]["kernel"].shape == (3, 3, 8, 16)
  assert "downsample" not in p["layers_3"]
  assert p["classifier"]["head"]["kernel"].shape == (64, 5)


def test_init_follows_vmamba(tiny_params):
  op = tiny_params["layers_1"]["blocks_0"]["op"]
  np.testing.assert_allclose(op["A_logs"], np.tile(np.log([1.0, 2.0]), (64, 1)), rtol=1e-6)
  np.testing.assert_array_equal(op["Ds"], np.ones(64))
  dt = np.asarray(jax.nn.softplus(op["dt_projs_bias"]))
  assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
  mlp = tiny_params["layers_1"]["blocks_0"]["mlp"]
  fc1 = np.asarray(mlp["fc1"]["kernel"])
  assert abs(fc1.std() - 0.02) < 0.004 and np.abs(fc1).max() <= 0.04 + 1e-6
  np.testing.assert_array_equal(mlp["fc1"]["bias"], 0.0)
  np.testing.assert_array_equal(tiny_params["layers_1"]["blocks_0"]["norm"]["scale"], 1.0)
  conv = np.asarray(tiny_params["layers_0"]["downsample"]["conv"]["kernel"])
  assert np.abs(conv).max() <= 1 / math.sqrt(9 * 8)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(tiny_params))


def test_stride2_conv_pads_symmetrically():
  """A delta at input (0, 0) must reach output (0, 0) through kernel tap (1, 1), as in PyTorch."""
  conv = conv3x3_s2(1, 1, jnp.float32, "conv")
  kernel = jnp.arange(9.0).reshape(3, 3, 1, 1)
  params = {"params": {"kernel": kernel, "bias": jnp.zeros((1,))}}
  x = np.zeros((1, 6, 6, 1), np.float32)
  x[0, 0, 0, 0] = 1.0
  y = np.asarray(conv.apply(params, x))[0, :, :, 0]
  expected = np.zeros((3, 3))
  expected[0, 0] = 4.0  # the delta sits under the kernel centre; 'SAME' would give 0 here
  np.testing.assert_array_equal(y, expected)


def test_drop_path_layer():
  x = jnp.ones((4000, 3))
  layer = DropPath(0.25)
  np.testing.assert_array_equal(layer.apply({}, x, train=False), x)
  y = np.asarray(layer.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}))
  np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
  assert (y == y[:, :1]).all()  # whole samples are dropped
  assert abs((y[:, 0] == 0).mean() - 0.25) < 0.03
  np.testing.assert_array_equal(DropPath(0.0).apply({}, x, train=True), x)
  with pytest.raises(ValueError, match="drop path rate"):
    DropPath(1.5).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})


def test_drop_path_schedule_is_linear_over_all_blocks():
  rates = drop_path_schedule((2, 2, 8, 2), 0.2)
  assert [len(r) for r in rates] == [2, 2, 8, 2]
  flat = [r for stage in rates for r in stage]
  np.testing.assert_allclose(flat, np.linspace(0, 0.2, 14))


def test_drop_path_in_model(tiny_params):
  x, key = _fbank(batch=4), jax.random.key(0)
  ref, _ = _forward(TINY)(tiny_params, x, key)
  # Rate 0 in train mode changes nothing.
  np.testing.assert_array_equal(_forward(TINY, train=True)(tiny_params, x, key)[0], ref)
  cfg = dataclasses.replace(TINY, drop_path_rate=0.5)
  np.testing.assert_array_equal(_forward(cfg)(tiny_params, x, key)[0], ref)
  a, _ = _forward(cfg, train=True)(tiny_params, x, jax.random.key(1))
  b, _ = _forward(cfg, train=True)(tiny_params, x, jax.random.key(2))
  assert not np.allclose(a, ref) and not np.allclose(a, b)
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(lambda: DASS(cfg).apply({"params": tiny_params}, x, train=True))


def test_bfloat16_close_to_float32(tiny_params):
  x, key = _fbank(), jax.random.key(0)
  ref, _ = _forward(TINY)(tiny_params, x, key)
  out, acts = _forward(dataclasses.replace(TINY, dtype="bfloat16"))(tiny_params, x, key)
  assert out.dtype == jnp.float32
  assert acts["layers.0.blocks.0.op.in_proj"].dtype == jnp.bfloat16
  assert acts["layers.0.blocks.0.op.out_norm"].dtype == jnp.float32
  assert acts["layers.1.blocks.0"].dtype == jnp.float32  # fp32 residual stream
  rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
  assert 0 < rel < 5e-2


def test_associative_scan_matches_sequential(tiny_params):
  x, key = _fbank(), jax.random.key(0)
  ref, ref_acts = _forward(TINY)(tiny_params, x, key)
  out, acts = _forward(dataclasses.replace(TINY, scan_impl="associative"))(tiny_params, x, key)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    acts["layers.1.blocks.0.op.ys"], ref_acts["layers.1.blocks.0.op.ys"], rtol=1e-4, atol=1e-5
  )


def test_jit_matches_eager(tiny_params):
  x, key = _fbank(), jax.random.key(0)
  jitted, _ = _forward(TINY)(tiny_params, x, key)
  eager = DASS(TINY).apply({"params": tiny_params}, x)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("token_chunk", [7, 100, 999])
def test_mlp_token_chunks_give_the_unchunked_values(tiny_params, token_chunk):
  """Inference with the VSS MLP over token chunks (stage 1 has 2 x 16 x 32 = 1024 tokens; 7 and
  999 leave an overlapping last chunk) equals the unchunked model; training never chunks."""
  x, key = _fbank(), jax.random.key(0)
  unchunked = dataclasses.replace(TINY, mlp_token_chunk=0)
  chunked = dataclasses.replace(TINY, mlp_token_chunk=token_chunk)
  ref, ref_acts = _forward(unchunked)(tiny_params, x, key)
  out, acts = _forward(chunked)(tiny_params, x, key)
  assert numerics.rel_err(out, ref) < 1e-6
  block = "layers.0.blocks.0"
  assert numerics.rel_err(acts[block], ref_acts[block]) < 1e-6
  train_ref, _ = _forward(unchunked, train=True)(tiny_params, x, key)
  train_out, _ = _forward(chunked, train=True)(tiny_params, x, key)
  np.testing.assert_array_equal(train_out, train_ref)


def test_runs_on_ten_times_training_length(tiny_params):
  out = jax.jit(DASS(TINY).apply)({"params": tiny_params}, _fbank(10240, batch=1))
  assert out.shape == (1, 5) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("shape", [(2, 100, 64), (100, 128), (2, 0, 128)])
def test_bad_input_shape(tiny_params, shape):
  with pytest.raises(ValueError, match="fbank input"):
    jax.eval_shape(lambda: DASS(TINY).apply({"params": tiny_params}, jnp.zeros(shape)))


@pytest.mark.parametrize(
  "field, value, valid",
  [("scan_impl", "cuda", "'sequential'"), ("dtype", "float16", "'bfloat16'"), ("in_chans", 3, "")],
)
def test_bad_config_is_refused_when_built(field, value, valid):
  with pytest.raises(ValueError, match=field) as info:
    dataclasses.replace(TINY, **{field: value})
  assert valid in str(info.value)  # the message names the valid choices


@pytest.mark.parametrize("shape", [(2, 5, 7, 6), (1, 1, 3, 4)])
def test_depthwise_conv3x3_value_and_gradients_match_xla_grouped_conv(shape):
  """The nine-tap sum and its custom VJP against autodiff of XLA's grouped convolution (torch's
  Conv2d(groups=C, padding=1)). 1e-5: float32, summation order only (measured <= 1e-6)."""
  ks = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(ks[0], shape)
  kernel = jax.random.normal(ks[1], (3, 3, shape[-1]))
  cotangent = jax.random.normal(ks[2], shape)

  def grouped(x, kernel):
    return jax.lax.conv_general_dilated(
      x,
      kernel[:, :, None],
      (1, 1),
      ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=shape[-1],
      precision="highest",
    )

  got = numerics.value_and_grads(depthwise_conv3x3, (x, kernel), cotangent)
  ref = numerics.value_and_grads(grouped, (x, kernel), cotangent)
  assert numerics.max_rel_err(got[0], ref[0]) <= 1e-5
  for name, g, r in zip(("x", "kernel"), got[1], ref[1]):
    assert g.shape == r.shape, name
    assert numerics.max_rel_err(g, r) <= 1e-5, name
