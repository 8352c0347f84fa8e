"""Scaled dot-product attention of the ViT models (AST, Dasheng, ...), one implementation a backend.

    y = attention(q, k, v, implementation="auto")  # q (batch, T, heads, d), k and v (batch, S, ..)

softmax(q k^T * d^-0.5) v per head, the same math and layouts as `jax.nn.dot_product_attention`
(no mask, no bias): scores and softmax in float32 whatever the input dtype, probabilities cast to
the value dtype before the product with v. `implementation`:

  auto     resolved at trace time for `jax.default_backend()`: 'blocked' on CPU (but 'xla' for
           heads of fewer than MIN_BLOCKED_SCORES scores), 'cudnn' on GPUs (which falls back to
           'xla' where cuDNN cannot run it), 'xla' elsewhere (TPU)
  xla      `jax.nn.dot_product_attention(implementation="xla")`: one batched product for all heads,
           the (batch, heads, T, S) float32 scores materialised
  cudnn    cuDNN's fused flash attention (`implementation="cudnn"`): fp16/bf16 inputs on NVIDIA
           GPUs; where cuDNN refuses the call (float32, no cuDNN, another GPU, a head dim it does
           not take), the 'xla' implementation runs instead, decided when the call is traced
  blocked  `blocked_attention`: one head of one example at a time, its queries in tiles whose
           (tile, S) scores stay in the CPU caches, with a backward that recomputes the scores
           tile by tile instead of keeping them

Why 'blocked' on CPU: for AST (12 heads x 1214 tokens x 64) XLA:CPU writes the 12 x 1214 x 1214
float32 scores (70 MB) to memory, reads them back for the softmax and again for the product with
v; one head's 1214 x 1214 block (5.9 MB) stays in this CPU's caches. Measured on the 2-core
development CPU (`benchmarks/bench_attention.py`; BENCHMARKS.md, "Attention"): 3-4x faster than
'xla' forward, faster than PyTorch's `scaled_dot_product_attention`; the backward also runs
faster and stores no scores.
"""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
from jax import lax

log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "blocked")
# Bytes of float32 scores one step of 'blocked' may hold: one head's (tile, S) block, sized to
# stay in the caches (2 x 1 MiB L2 + 32 MiB L3 on the development CPU). AST's 1214 tokens fit
# whole (5.9 MB); longer inputs get query tiles of fewer rows.
SCORE_BLOCK_BYTES = 8 << 20
MIN_QUERY_TILE = 64
# 'auto' on CPU keeps 'xla' for heads with fewer scores than this (T * S): there the loop's
# per-step overhead outweighs the caches (16 x 42 tokens x 4 heads: 'xla' slightly faster).
MIN_BLOCKED_SCORES = 64 * 64


def resolve(implementation: str = "auto", backend: str | None = None) -> str:
  """The concrete implementation 'auto' stands for on `backend` (default: the default backend).

  Returns 'blocked' on CPU, 'cudnn' on GPUs (which itself falls back to 'xla' where cuDNN refuses
  the call) and 'xla' elsewhere; any other value is returned as it is, once checked.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
    )
  if implementation != "auto":
    return implementation
  backend = backend or jax.default_backend()
  return {"cpu": "blocked", "gpu": "cudnn", "cuda": "cudnn"}.get(backend, "xla")


def attention(q, k, v, implementation: str = "auto"):
  """softmax(q k^T / sqrt(d)) v per head.

  Args:
    q: (batch, T, heads, d) queries; k, v: (batch, S, heads, d) keys and values.
    implementation: 'auto', 'xla', 'cudnn' or 'blocked' (module docstring).
  Returns:
    (batch, T, heads, d) in the dtype of v.
  """
  impl = resolve(implementation)
  if (
    implementation == "auto" and impl == "blocked" and q.shape[1] * k.shape[1] < MIN_BLOCKED_SCORES
  ):
    impl = "xla"
  if impl == "blocked":
    return blocked_attention(q, k, v)
  if impl == "cudnn":
    try:
      return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    except (NotImplementedError, RuntimeError, ValueError) as err:
      _log_cudnn_fallback(q.dtype.name, tuple(q.shape), str(err))
  return jax.nn.dot_product_attention(q, k, v, implementation="xla")


@functools.cache
def _log_cudnn_fallback(dtype: str, shape: tuple[int, ...], reason: str) -> None:
  log.info("attention: cuDNN refused %s %s (%s); using 'xla'", dtype, shape, reason)


def query_tile(queries: int, keys: int, block_bytes: int = SCORE_BLOCK_BYTES) -> int:
  """Rows per query tile of 'blocked': all `queries` when their (queries, keys) float32 scores
  fit in `block_bytes`, else the even split of them into tiles of at most that size (at least
  MIN_QUERY_TILE rows)."""
  rows = max(MIN_QUERY_TILE, block_bytes // (4 * max(keys, 1)))
  if queries <= rows:
    return queries
  tiles = -(-queries // rows)
  return -(-queries // tiles)


def blocked_attention(q, k, v, *, tile: int | None = None):
  """Attention one (example, head) at a time, queries in tiles of `tile` rows.

  Same arguments and result as `attention`. Each step computes one tile's (tile, S) float32
  scores, their softmax and the product with v; steps run one after another (`lax.map`), so the
  working set is one tile's scores. The backward (`jax.custom_vjp`) recomputes each tile's
  probabilities from q and k and saves nothing of size T x S. `tile` defaults to
  `query_tile(T, S)`.
  """
  batch, length, heads, dim = q.shape
  tile = tile or query_tile(length, k.shape[1])
  items = lambda t: jnp.swapaxes(t, 1, 2).reshape(batch * heads, t.shape[1], dim)
  y = _blocked(tile, items(q), items(k), items(v))
  return jnp.swapaxes(y.reshape(batch, heads, length, dim), 1, 2)


def _probabilities(q, k, scale):
  """(rows, d) x (S, d) -> (rows, S) float32 softmax of the scaled scores."""
  scores = jnp.einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32) * scale
  return jax.nn.softmax(scores, axis=-1)


def _tiles(x, tile: int):
  """(items, T, d) -> (items, n_tiles, tile, d), zero rows appended to fill the last tile."""
  pad = -x.shape[1] % tile
  if pad:
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
  return x.reshape(x.shape[0], -1, tile, x.shape[2])


def _untile(x, length: int):
  """(items, n_tiles, tile, d) -> (items, length, d), the padding rows dropped."""
  return x.reshape(x.shape[0], -1, x.shape[3])[:, :length]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _blocked(tile, q, k, v):
  """q (items, T, d), k and v (items, S, d) -> (items, T, d) in v's dtype."""
  scale = 1.0 / math.sqrt(q.shape[-1])

  def item(args):
    q_tiles, k_item, v_item = args

    def step(q_tile):
      # The scale on q (exact for power-of-two head dims: d = 64 gives 1/8), the softmax's
      # normalisation after the product with v: (tile, d) divisions instead of (tile, S).
      scores = jnp.einsum(
        "qd,kd->qk",
        q_tile * jnp.asarray(scale, q_tile.dtype),
        k_item,
        preferred_element_type=jnp.float32,
      )
      weights = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
      total = jnp.sum(weights, axis=-1, keepdims=True)
      y = jnp.dot(weights.astype(v_item.dtype), v_item, preferred_element_type=jnp.float32)
      return (y / total).astype(v_item.dtype)

    if q_tiles.shape[0] == 1:
      return step(q_tiles[0])[None]
    return lax.map(step, q_tiles)

  return _untile(lax.map(item, (_tiles(q, tile), k, v)), q.shape[1])


def _blocked_fwd(tile, q, k, v):
  y = _blocked(tile, q, k, v)
  return y, (q, k, v, y)


def _blocked_bwd(tile, res, dy):
  """Per tile: P recomputed; dV += P^T dY, dS = P * (dY V^T - rowsum(dY * Y)), dQ = dS K * scale,
  dK += dS^T Q * scale; dK and dV accumulate over the tiles of an item in float32."""
  q, k, v, y = res
  scale = 1.0 / math.sqrt(q.shape[-1])
  f32 = jnp.float32

  def item(args):
    q_tiles, y_tiles, dy_tiles, k_item, v_item = args

    def step(carry, tile_args):
      dk, dv = carry
      q_tile, y_tile, dy_tile = (t.astype(f32) for t in tile_args)
      p = _probabilities(tile_args[0], k_item, scale)
      dv = dv + p.T @ dy_tile
      dp = dy_tile @ v_item.astype(f32).T
      ds = p * (dp - jnp.sum(dy_tile * y_tile, axis=-1, keepdims=True))
      dq = (ds @ k_item.astype(f32)) * scale
      dk = dk + (ds.T @ q_tile) * scale
      return (dk, dv), dq

    zeros = jnp.zeros(k_item.shape, f32)
    (dk, dv), dq = lax.scan(step, (zeros, zeros), (q_tiles, y_tiles, dy_tiles))
    return dq, dk, dv

  tiles = [_tiles(t, tile) for t in (q, y, dy)]
  dq, dk, dv = lax.map(item, (*tiles, k, v))
  return (
    _untile(dq, q.shape[1]).astype(q.dtype),
    dk.astype(k.dtype),
    dv.astype(v.dtype),
  )


_blocked.defvjp(_blocked_fwd, _blocked_bwd)
