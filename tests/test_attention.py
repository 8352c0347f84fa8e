"""Attention implementations (`dass_jax.attention`): 'blocked' against 'xla', alone and in models.

Tolerance 1e-6 relative (forward and every gradient), tighter than the fp32 table's 1e-5: both
implementations compute the same float32 scores, softmax and products, only in other groupings
(one head or one query tile at a time), so they differ by reduction order alone (measured
<= 5e-7 at AST's shape). bf16 inputs: the fp32 scores are the same, the products round to bf16,
3e-2 as the table.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_close, value_and_grads

from dass_jax import attention
from dass_jax.models import AST, SSLAM, AstConfig, Dasheng, DashengConfig, SslamConfig

PARITY = 1e-6


def _qkv(batch, length, heads, dim, dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  return [
    jnp.asarray(rng.standard_normal((batch, length, heads, dim), dtype=np.float32), dtype)
    for _ in range(3)
  ]


def _compare(fn, ref, args, cotangent, tol, name):
  out, grads = value_and_grads(fn, args, cotangent)
  ref_out, ref_grads = value_and_grads(ref, args, cotangent)
  assert_close(out, ref_out, tol=tol, name=f"{name} forward")
  for arg, grad, ref_grad in zip("qkv", grads, ref_grads, strict=True):
    assert_close(grad, ref_grad, tol=tol, name=f"{name} d{arg}")


@pytest.mark.parametrize(
  "shape, tile",
  [
    ((2, 150, 4, 16), None),  # one tile per head
    ((2, 150, 4, 16), 48),  # 4 tiles, the last one padded by 42 rows
    ((1, 37, 3, 8), 37),  # odd sizes
  ],
)
def test_blocked_matches_xla_forward_and_backward(shape, tile):
  q, k, v = _qkv(*shape)
  cotangent = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
  blocked = lambda q, k, v: attention.blocked_attention(q, k, v, tile=tile)
  xla = lambda q, k, v: attention.attention(q, k, v, "xla")
  _compare(blocked, xla, (q, k, v), cotangent, PARITY, f"blocked {shape} tile {tile}")


def test_blocked_bfloat16_close_to_xla():
  q, k, v = _qkv(2, 100, 2, 16, jnp.bfloat16)
  out = attention.attention(q, k, v, "blocked")
  assert out.dtype == jnp.bfloat16
  assert_close(out, attention.attention(q, k, v, "xla"), dtype=jnp.bfloat16, name="bf16")


def test_query_tile_bounds_the_score_block():
  assert attention.query_tile(1214, 1214) == 1214  # AST: one head's scores in one block
  tile = attention.query_tile(20000, 20000)
  assert attention.MIN_QUERY_TILE <= tile < 20000
  assert tile * 20000 * 4 <= attention.SCORE_BLOCK_BYTES or tile == attention.MIN_QUERY_TILE
  assert -(-20000 // tile) * tile - 20000 < -(-20000 // tile)  # less than a row per tile padded
  assert attention.query_tile(10**6, 10**6) == attention.MIN_QUERY_TILE


def test_resolution_per_backend_and_bad_names():
  assert attention.resolve("auto", "cpu") == "blocked"
  assert attention.resolve("auto", "gpu") == "cudnn"
  assert attention.resolve("auto", "tpu") == "xla"
  assert attention.resolve("xla", "cpu") == "xla"
  with pytest.raises(ValueError, match="one of"):
    attention.resolve("flash")
  with pytest.raises(ValueError, match="attention_impl"):
    AstConfig(attention_impl="flash")


def test_auto_uses_xla_for_tiny_heads_and_blocked_otherwise():
  def lowered(length):
    q, k, v = _qkv(1, length, 2, 8)
    return jax.jit(attention.attention).lower(q, k, v).as_text()

  assert "while" not in lowered(16)  # 16 x 16 scores < MIN_BLOCKED_SCORES: one batched product
  assert "while" in lowered(80)  # the loop over heads


def test_cudnn_falls_back_to_xla_where_cudnn_cannot_run():
  q, k, v = _qkv(1, 40, 2, 8)  # float32 on CPU: cuDNN refuses both
  run = lambda impl: jax.jit(lambda q, k, v: attention.attention(q, k, v, impl))(q, k, v)
  np.testing.assert_array_equal(run("cudnn"), run("xla"))


AST_SMALL = AstConfig(
  num_classes=5, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_length=120
)
DASHENG_SMALL = DashengConfig(embed_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=3)
SSLAM_SMALL = SslamConfig(
  num_classes=3, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_length=128
)


@pytest.mark.parametrize(
  "model_cls, config, input_shape",
  [
    (AST, AST_SMALL, (2, 120, 128)),  # 12 x 11 patches + 2 tokens = 134
    (Dasheng, DASHENG_SMALL, (2, 16000 * 3)),  # 75 tokens per clip
    (SSLAM, SSLAM_SMALL, (2, 128, 128)),  # 8 x 8 patches + 1 token = 65 (post-norm blocks)
  ],
)
def test_models_blocked_match_xla_logits_and_param_grads(model_cls, config, input_shape):
  x = jnp.asarray(np.random.default_rng(3).standard_normal(input_shape, dtype=np.float32))
  params = jax.jit(model_cls(config).init)(jax.random.key(0), x)["params"]
  results = {}
  for impl in ("xla", "blocked"):
    model = model_cls(dataclasses.replace(config, attention_impl=impl))
    loss = lambda p, model=model: jnp.sum(jnp.sin(model.apply({"params": p}, x)))
    results[impl] = jax.jit(jax.grad(loss))(params), jax.jit(model.apply)({"params": params}, x)
  (grads_x, out_x), (grads_b, out_b) = results["xla"], results["blocked"]
  assert_close(out_b, out_x, tol=PARITY, name="logits")
  flat_x = jax.tree_util.tree_leaves_with_path(grads_x)
  flat_b = jax.tree.leaves(grads_b)
  for (path, g_x), g_b in zip(flat_x, flat_b, strict=True):
    assert_close(g_b, g_x, tol=PARITY, name=jax.tree_util.keystr(path))
