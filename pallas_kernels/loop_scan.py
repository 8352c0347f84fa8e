"""Inference-only chunked selective scan written as `lax.scan` loops: the formulation for export.

The chunked scan (`chunked_scan`) is the fast CPU path, but it does not export: its
`custom_vjp` and its `fori_loop` bodies that slice traced chunk arrays trip the ONNX converter,
and `lax.associative_scan` (its pass over the chunk ends) lowers to interior padding, which ONNX's
`Pad` does not have. This module computes the same three passes with plain `lax.scan` loops,
which converters map to ONNX `Loop` and `jax.export` to a StableHLO `while`, forward only:

  pass 1  scan over the T steps of every chunk at once from a zero state: each chunk's end state
          (the loop body is a vector over batch * K * n_chunks * D * N lanes);
  pass 2  scan over the chunks: start[c + 1] = decay[c] * start[c] + end[c], with the
          whole-chunk decay exp(A * sum of dt over the chunk) (a sum of positive terms);
  pass 3  the step scan again from each chunk's true start state, emitting y.

The math is the reference's (`pallas_kernels.reference`). Layouts inside: sequences are step
major, (T, batch, K, n_chunks, X), so that a loop iteration reads one contiguous slice; the time
axis L = n_chunks * T is zero-padded at its end when T does not divide it (exact: padded steps
have dt = u = 0, so they add nothing after the real ones).

Length: with a static L the chunk length is `chunked_scan.chunk_length(L)` (about sqrt(L / 2));
with a symbolic L (`jax.export` shape polymorphism, a `--dynamic` StableHLO export) it is
`SYMBOLIC_CHUNK` and n_chunks stays symbolic, so one exported graph takes any length. (jax2onnx
0.17.1 cannot pad to a symbolic multiple of the chunk: it does not materialise derived symbolic
sizes, so a `--dynamic` ONNX export uses the `sequential` scan instead; `dass_jax.export`.)

No gradient rule: differentiating it works (through the loops) but is neither tested nor fast;
train with `chunked` or `pallas`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.chunked_scan import chunk_length
from pallas_kernels.reference import finish_output, prepare_inputs

# Steps per chunk when the length is symbolic (the default chunk of L = 2048).
SYMBOLIC_CHUNK = 32


def loop_chunk_length(length, chunk_size: int | None = None) -> int:
  """Steps per chunk: `chunk_size`, else `chunk_length(L)` for a static L, else SYMBOLIC_CHUNK."""
  if isinstance(length, int):
    return chunk_length(length, chunk_size)
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  return chunk_size or SYMBOLIC_CHUNK


def _steps_first(x: jax.Array, chunk: int) -> jax.Array:
  """(batch, K, X, L) -> (chunk, batch, K, n_chunks, X), zero-padding L at its end."""
  n_chunks = (x.shape[-1] + chunk - 1) // chunk  # symbolic for a symbolic L
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_chunks * chunk - x.shape[-1])])
  x = x.reshape(*x.shape[:3], n_chunks, chunk)
  return jnp.transpose(x, (4, 0, 1, 3, 2))


def scan_forward(u, dt, A, B, C, *, chunk_size: int | None = None) -> jax.Array:
  """The forward scan y_t = <C_t, h_t> in the split reference layout, as three `lax.scan` loops.

  Args:
    u, dt: (batch, K, D, L) float32; dt after softplus and bias.
    A: (K, D, N) negative. B, C: (batch, K, N, L) float32.
    chunk_size: steps per chunk (default: `loop_chunk_length(L)`).
  Returns:
    y: (batch, K, D, L) float32, without the D * u term.
  """
  length = u.shape[-1]
  chunk = loop_chunk_length(length, chunk_size)
  u_s, dt_s, b_s, c_s = (_steps_first(x, chunk) for x in (u, dt, B, C))
  rates = jnp.swapaxes(A, 1, 2)[:, None]  # (K, 1, N, D) against states (batch, K, n, N, D)

  def advance(h, step):  # h (batch, K, n_chunks, N, D) -> a_t h + dt_t u_t B_t
    dt_t, u_t, b_t = step[:3]
    return jnp.exp(dt_t[..., None, :] * rates) * h + (dt_t * u_t)[..., None, :] * b_t[..., None]

  state = jnp.zeros((*u_s.shape[1:4], A.shape[2], A.shape[1]), jnp.float32)
  ends, _ = lax.scan(lambda h, step: (advance(h, step), None), state, (dt_s, u_s, b_s))
  decay = jnp.exp(jnp.sum(dt_s, axis=0)[..., None, :] * rates)

  def carry_over(start, chunk_end):  # start of chunk c -> start of chunk c + 1
    end, dec = chunk_end
    return dec * start + end, start

  by_chunk = lambda x: jnp.moveaxis(x, 2, 0)  # (batch, K, n_chunks, ...) -> chunks first
  _, starts = lax.scan(carry_over, state[:, :, 0], (by_chunk(ends), by_chunk(decay)))

  def emit(h, step):
    h = advance(h, step)
    return h, jnp.sum(step[3][..., None] * h, axis=-2)

  _, y = lax.scan(emit, jnp.moveaxis(starts, 0, 2), (dt_s, u_s, b_s, c_s))
  y = jnp.transpose(y, (1, 2, 4, 3, 0))  # (batch, K, D, n_chunks, T)
  return y.reshape(*y.shape[:3], y.shape[3] * chunk)[..., :length]


def selective_scan_loop(
  u,
  delta,
  A,
  B,
  C,
  D=None,
  delta_bias=None,
  *,
  delta_softplus=True,
  out_dtype=None,
  chunk_size: int | None = None,
):
  """Selective scan in the reference layouts (see `pallas_kernels.reference`), as loops."""
  u4, dt4, a4, b4, c4, _ = prepare_inputs(u, delta, A, B, C, D, delta_bias, delta_softplus)
  y = scan_forward(u4, dt4, a4, b4, c4, chunk_size=chunk_size)
  return finish_output(y, u, D, out_dtype)
