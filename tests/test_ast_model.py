"""AST in Flax: shapes, input checks, dropout, bf16, init, position-embedding interpolation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dass_jax.models import AST, AstConfig, config_from_dict
from dass_jax.models.ast import interpolate_pos_embed, with_max_length

SMALL = AstConfig(
  num_classes=7, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_length=100
)


def _init(config):
  x = jnp.zeros((1, config.max_length, config.num_mel_bins))
  return jax.jit(AST(config).init)(jax.random.key(0), x)["params"]


@functools.cache
def _jitted_apply(config, train, intermediates):
  def fn(params, x, key):
    rngs = None if key is None else {"dropout": key}
    mutable = ["intermediates"] if intermediates else False
    return AST(config).apply({"params": params}, x, train=train, rngs=rngs, mutable=mutable)

  return jax.jit(fn)


def _apply(config, params, x, train=False, seed=None, intermediates=False):
  """`AST(config).apply`, jitted once per (config, mode) instead of dispatched op by op."""
  key = None if seed is None else jax.random.key(seed)
  return _jitted_apply(config, train, intermediates)(params, x, key)


def _fbank(config, batch=2, frames=None, seed=1):
  rng = np.random.default_rng(seed)
  return rng.standard_normal(
    (batch, frames or config.max_length, config.num_mel_bins), dtype=np.float32
  )


@pytest.fixture(scope="module")
def small_params():
  return _init(SMALL)


def test_audioset_config_shapes():
  config = AstConfig()
  assert config.grid == (12, 101) and config.num_patches == 1212
  shapes = jax.eval_shape(lambda: _init(config))
  assert shapes["pos_embed"].shape == (1, 1214, 768)
  assert shapes["patch_embed"]["kernel"].shape == (16, 16, 1, 768)
  assert shapes["blocks_11"]["attn"]["qkv"]["kernel"].shape == (768, 2304)
  assert shapes["head"]["kernel"].shape == (768, 527)
  assert "blocks_12" not in shapes


def test_forward_shapes_and_intermediates(small_params):
  x = _fbank(SMALL)
  logits, state = _apply(SMALL, small_params, x, intermediates=True)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  inter = state["intermediates"]
  hidden = inter["hidden_states"]
  assert len(hidden) == SMALL.num_layers + 1
  assert all(h.shape == (2, SMALL.num_patches + 2, 32) for h in hidden)
  last = inter["last_hidden_state"][0]
  np.testing.assert_allclose(inter["pooled"][0], (last[:, 0] + last[:, 1]) / 2, rtol=1e-6)


def test_batch_rows_are_independent(small_params):
  x = _fbank(SMALL, batch=3)
  full = _apply(SMALL, small_params, x)
  single = _apply(SMALL, small_params, x[1:2])
  np.testing.assert_allclose(full[1:2], single, rtol=1e-5, atol=1e-6)


def test_patch_order_is_frequency_major(small_params):
  """Changing one late frame must move only the patch tokens of the last time column."""
  x = _fbank(SMALL, batch=1)
  y = x.copy()
  y[:, 90, :] += 5.0  # only the last time patch (frames 80..95) covers frame 90
  embed = lambda v: _apply(SMALL, small_params, v, intermediates=True)[1]["intermediates"][
    "hidden_states"
  ][0]
  a, b = np.asarray(embed(x))[0, 2:], np.asarray(embed(y))[0, 2:]
  freq, time = SMALL.grid
  changed = np.abs(a - b).max(-1).reshape(freq, time) > 0
  assert changed[:, -1].all() and not changed[:, :-1].any()


@pytest.mark.parametrize("frames", [96, 105])
def test_accepts_lengths_with_the_same_grid(small_params, frames):
  logits = _apply(SMALL, small_params, _fbank(SMALL, frames=frames))
  assert logits.shape == (2, 7)


@pytest.mark.parametrize(
  "shape, match",
  [
    ((2, 95, 128), "pad or crop"),
    ((2, 106, 128), "pad or crop"),
    ((2, 100, 64), r"\(batch, frames, 128\)"),
    ((100, 128), r"\(batch, frames, 128\)"),
  ],
)
def test_rejects_bad_input(small_params, shape, match):
  with pytest.raises(ValueError, match=match):
    _apply(SMALL, small_params, np.zeros(shape, np.float32))


def test_dropout_only_in_train_mode(small_params):
  config = dataclasses.replace(SMALL, dropout_rate=0.3)
  x = _fbank(SMALL)
  eval_a = _apply(config, small_params, x)
  eval_b = _apply(config, small_params, x, seed=0)
  np.testing.assert_array_equal(eval_a, eval_b)
  np.testing.assert_allclose(eval_a, _apply(SMALL, small_params, x), rtol=1e-6)
  train = lambda seed: _apply(config, small_params, x, train=True, seed=seed)
  assert not np.allclose(train(0), eval_a, atol=1e-3)
  assert not np.allclose(train(0), train(1), atol=1e-3)
  np.testing.assert_array_equal(train(2), train(2))


def test_bfloat16_compute_keeps_fp32_params(small_params):
  config = dataclasses.replace(SMALL, dtype="bfloat16")
  params = jax.eval_shape(lambda: _init(config))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  x = _fbank(SMALL)
  low = _apply(config, small_params, x)
  ref = _apply(SMALL, small_params, x)
  assert low.dtype == jnp.float32
  err = np.abs(np.asarray(low) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max()
  assert 0 < err < 5e-2


def test_bad_dtype_is_named(small_params):
  with pytest.raises(ValueError, match="float16"):
    _apply(dataclasses.replace(SMALL, dtype="float16"), small_params, _fbank(SMALL))


def test_default_init_is_vit_like(small_params):
  params = small_params
  for w in (
    params["pos_embed"],
    params["blocks_0"]["mlp"]["fc1"]["kernel"],
    params["patch_embed"]["kernel"],
    params["blocks_1"]["attn"]["qkv"]["kernel"],
  ):
    w = np.asarray(w)
    assert np.abs(w).max() <= 2 * 0.02 + 1e-6  # truncated at two standard deviations
    assert 0.013 < w.std() < 0.02
  np.testing.assert_array_equal(params["blocks_1"]["norm2"]["scale"], 1.0)
  np.testing.assert_array_equal(params["blocks_1"]["attn"]["qkv"]["bias"], 0.0)


def test_frozen_teacher_inside_jitted_grad(small_params):
  """The teacher as a pure function of (params, x) inside a jitted gradient of a student loss."""
  model = AST(SMALL)
  x = _fbank(SMALL)

  @jax.jit
  def step(student_w, teacher_params, x):
    def loss(w):
      target = jax.nn.sigmoid(jax.lax.stop_gradient(model.apply({"params": teacher_params}, x)))
      pred = jax.nn.sigmoid(x.mean(axis=(1, 2))[:, None] * w)
      return jnp.mean((pred - target) ** 2)

    return jax.grad(loss)(student_w)

  grad = step(jnp.ones((SMALL.num_classes,)), small_params, x)
  assert grad.shape == (SMALL.num_classes,) and np.isfinite(np.asarray(grad)).all()
  assert np.abs(np.asarray(grad)).max() > 0


def test_no_qkv_bias():
  params = jax.eval_shape(lambda: _init(dataclasses.replace(SMALL, qkv_bias=False)))
  assert set(params["blocks_0"]["attn"]["qkv"]) == {"kernel"}
  assert "bias" in params["blocks_0"]["attn"]["out"]


def test_interpolation_keeps_same_grid(small_params):
  pos = small_params["pos_embed"]
  np.testing.assert_array_equal(interpolate_pos_embed(pos, SMALL.grid, SMALL.grid), pos)


def test_interpolation_shapes_and_tokens(small_params):
  pos = small_params["pos_embed"]
  longer = interpolate_pos_embed(pos, SMALL.grid, (12, 40))
  assert longer.shape == (1, 12 * 40 + 2, 32)
  np.testing.assert_array_equal(longer[:, :2], pos[:, :2])
  with pytest.raises(ValueError, match="grid"):
    interpolate_pos_embed(pos, (12, 10), (12, 40))


def test_interpolation_of_a_linear_ramp_is_exact():
  """A field linear in time stays linear after resampling (bilinear, half-pixel centres)."""
  freq, time, new_time = 3, 8, 16
  t = (np.arange(time) + 0.5) / time  # cell centres in [0, 1]
  grid = np.broadcast_to(t[None, :, None], (freq, time, 4)).astype(np.float32)
  pos = np.concatenate([np.zeros((1, 2, 4), np.float32), grid.reshape(1, -1, 4)], axis=1)
  out = np.asarray(interpolate_pos_embed(pos, (freq, time), (freq, new_time)))[0, 2:]
  centres = np.clip((np.arange(new_time) + 0.5) / new_time, t[0], t[-1])
  np.testing.assert_allclose(out.reshape(freq, new_time, 4)[0, :, 0], centres, atol=1e-6)


@pytest.mark.parametrize("new_grid", [(12, 150), (12, 60), (8, 101)])
def test_interpolation_matches_torch_bilinear(new_grid):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  pos = rng.standard_normal((1, 2 + 12 * 101, 16), dtype=np.float32)
  ours = np.asarray(interpolate_pos_embed(pos, (12, 101), new_grid))
  grid = torch.from_numpy(pos[:, 2:]).reshape(1, 12, 101, 16).permute(0, 3, 1, 2)
  ref = torch.nn.functional.interpolate(grid, size=new_grid, mode="bilinear", align_corners=False)
  ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 16).numpy()
  np.testing.assert_allclose(ours[:, 2:], ref, atol=1e-5)


def test_with_max_length_runs_on_longer_input(small_params):
  params, config = with_max_length(small_params, SMALL, 300)
  assert config.max_length == 300 and config.grid == (12, 29)
  assert params["pos_embed"].shape == (1, 12 * 29 + 2, 32)
  assert params["blocks_0"] is small_params["blocks_0"]
  logits = _apply(config, params, _fbank(config))
  assert logits.shape == (2, 7) and np.isfinite(np.asarray(logits)).all()
  back, _ = with_max_length(small_params, SMALL, SMALL.max_length)
  np.testing.assert_array_equal(back["pos_embed"], small_params["pos_embed"])


def test_config_round_trip_and_validation():
  config = AstConfig.original_repo(num_classes=50, time_stride=16)
  assert (config.layer_norm_eps, config.head_layer_norm_eps) == (1e-6, 1e-5)
  assert config_from_dict(config.to_dict()) == config
  assert config.to_dict()["model_type"] == "ast"
  with pytest.raises(ValueError, match="divisible"):
    AstConfig(hidden_size=100, num_heads=12)
  with pytest.raises(ValueError, match="max_length"):
    AstConfig(max_length=8)
  with pytest.raises(ValueError, match="unknown"):
    AstConfig.from_dict({"hidden": 3})
