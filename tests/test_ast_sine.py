"""AST with the DASS authors' sinusoidal positions (`pos_embed_type="sine"`) and `for_length`.

`sinusoid_positions` is compared element by element with the exact formula (float64) within
`sinusoid_error_bound`, the float32 rounding of the angle n w_k that the original's float32 code
carries too, and with a torch twin of the original's `get_sin_pos` (torch_reference/ast_sine.py)
within twice that bound (both sides round).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dass_jax.models import AST, AstConfig, config_from_dict
from dass_jax.models.ast import (
  for_length,
  sinusoid_error_bound,
  sinusoid_positions,
  with_max_length,
)

LEARNED = AstConfig(
  num_classes=7, hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64, max_length=100
)
SINE = dataclasses.replace(LEARNED, pos_embed_type="sine")


def _exact(n: int, d: int) -> np.ndarray:
  freqs = np.exp(np.arange(0, d, 2) * -(math.log(1e4) / d))
  angles = np.arange(n, dtype=np.float64)[:, None] * freqs
  return np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(n, d)


def _apply(config, params, frames, seed=1):
  x = np.random.default_rng(seed).standard_normal((2, frames, 128), dtype=np.float32)
  return np.asarray(jax.jit(AST(config).apply)({"params": params}, x))


@pytest.fixture(scope="module")
def learned_params():
  return jax.jit(AST(LEARNED).init)(jax.random.key(0), jnp.zeros((1, 100, 128)))["params"]


@pytest.mark.parametrize(("n", "d"), [(1214, 768), (14_390, 64), (1_000_002, 8)])
def test_sinusoid_positions_match_the_formula(n, d):
  ours = np.asarray(jax.jit(sinusoid_positions, static_argnums=(0, 1))(n, d), np.float64)
  exact = _exact(n, d)
  bound = sinusoid_error_bound(n, d)
  assert ours.shape == (n, d)
  assert np.all(np.abs(ours - exact) <= bound)
  np.testing.assert_array_equal(ours[0], np.tile([0.0, 1.0], d // 2))  # position 0: sin 0, cos 0


def test_sinusoid_positions_match_torch_twin():
  pytest.importorskip("torch")
  from torch_reference.ast_sine import get_sin_pos

  n, d = 14_390, 192
  ours = np.asarray(sinusoid_positions(n, d), np.float64)
  ref = get_sin_pos(n, d).numpy().astype(np.float64)
  assert np.all(np.abs(ours - ref) <= 2 * sinusoid_error_bound(n, d))


def test_sine_ast_has_no_pos_embed_and_runs_any_length(learned_params):
  """A sine AST is the learned one with pos_embed = sinusoid for the input's own grid."""
  params = {k: v for k, v in learned_params.items() if k != "pos_embed"}
  shapes = jax.eval_shape(AST(SINE).init, jax.random.key(0), jnp.zeros((1, 100, 128)))["params"]
  assert "pos_embed" not in shapes
  assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, params)
  for frames in (16, 333):
    grid = dataclasses.replace(LEARNED, max_length=frames).grid
    fixed = {**params, "pos_embed": sinusoid_positions(grid[0] * grid[1] + 2, 32)[None]}
    learned = dataclasses.replace(LEARNED, max_length=frames)
    np.testing.assert_allclose(
      _apply(SINE, params, frames), _apply(learned, fixed, frames), rtol=0, atol=1e-6
    )
  with pytest.raises(ValueError, match="at least 16 frames"):
    _apply(SINE, params, 15)


def test_for_length(learned_params):
  sine_params = {k: v for k, v in learned_params.items() if k != "pos_embed"}
  # A sine AST runs every length as it is, whatever the extension.
  for extension in ("sine", "interpolate", "refuse"):
    params, config = for_length(sine_params, SINE, 300, extension)
    assert params is sine_params and config == dataclasses.replace(SINE, max_length=300)
  # Learned + 'sine': the original's substitution, at every length, its own included.
  for frames in (100, 300):
    params, config = for_length(learned_params, LEARNED, frames, "sine")
    assert "pos_embed" not in params and config.pos_embed_type == "sine"
    np.testing.assert_array_equal(
      _apply(config, params, frames),
      _apply(dataclasses.replace(SINE, max_length=frames), sine_params, frames),
    )
  # Learned + 'interpolate' / 'refuse': unchanged on the trained grid (100..105 frames).
  for extension in ("interpolate", "refuse"):
    params, config = for_length(learned_params, LEARNED, 105, extension)
    assert params is learned_params and config is LEARNED
  params, config = for_length(learned_params, LEARNED, 300, "interpolate")
  expected, _ = with_max_length(learned_params, LEARNED, 300)
  np.testing.assert_array_equal(params["pos_embed"], expected["pos_embed"])
  assert for_length(learned_params, LEARNED, 300, "refuse") is None
  with pytest.raises(ValueError, match="length extension"):
    for_length(learned_params, LEARNED, 300, "stretch")


def test_with_max_length_leaves_a_sine_ast_unchanged(learned_params):
  params = {k: v for k, v in learned_params.items() if k != "pos_embed"}
  new_params, config = with_max_length(params, SINE, 300)
  assert new_params == params and config.max_length == 300


def test_sine_config_round_trip_validation_and_gradients(learned_params):
  assert config_from_dict(SINE.to_dict()) == SINE
  with pytest.raises(ValueError, match="pos_embed_type"):
    AstConfig(pos_embed_type="rope")
  with pytest.raises(ValueError, match="even hidden_size"):
    AstConfig(hidden_size=33, num_heads=3, pos_embed_type="sine")
  params = {k: v for k, v in learned_params.items() if k != "pos_embed"}
  x = np.random.default_rng(0).standard_normal((2, 100, 128), dtype=np.float32)
  grads = jax.grad(lambda p: jnp.sum(AST(SINE).apply({"params": p}, x) ** 2))(params)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
