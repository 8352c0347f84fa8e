"""Chunked selective scan in plain JAX: the fast implementation for CPU (and a TPU candidate).

Math is the reference's (`pallas_kernels.reference`): per channel,
h_t = a_t h_{t-1} + dt_t u_t B_t with a_t = exp(dt_t A), and y_t = <C_t, h_t>; a `reverse`
scan runs the same recurrence from the last step to the first (h_t = a_t h_{t+1} + ...), which
is how SS2D's reversed routes read their tokens.

Layouts here are "channels last", time before channels, so that a time step is a contiguous
run of channels:

  u, dt   (batch, G, L, D)    G groups (scan groups, or SS2D token orders), D channels each
  A       (G, N, D)           already negative
  B, C    (batch, G, L, N)    shared by the D channels of a group
  y       (batch, G, L, D)    float32, without the D * u skip term

Why this shape
--------------
On CPU, XLA runs a `lax.scan` over L steps as L small kernel launches (~5 µs each: 45 ms for
one DASS stage-1 scan), and `lax.associative_scan` makes 2 log2(L) strided passes over
(batch, K*D, L, N) arrays. Here time is cut into n_chunks chunks of T steps (L = n_chunks * T,
T ~ sqrt(L / 2), zero-padded at the end when T does not divide L) and every loop runs only T
iterations, each over all chunks at once: a vector of batch * G * n_chunks * N * D lanes.

  pass 1  loop over the T steps of every chunk from a zero state: each chunk's end state;
  pass 2  a short scan over the chunk ends: start[c+1] = decay[c] * start[c] + end[c], where
          the whole-chunk decay exp(A * sum of dt over the chunk) is the product of the chunk's
          a_t (a sum of positive terms: exact to rounding, never a difference of cumulative
          sums);
  pass 3  the loop again from each chunk's true start state, writing y (or the states).

Loop bodies slice the chunked arrays (batch, G, n_chunks, T, ...) at one step with
`dynamic_index_in_dim` (contiguous runs of D channels) and compute a_t, the drive and the
output in registers; nothing of size (..., L, N, D) is materialised on the inference path.
The state is (..., N, D) with the channels minor, so d_state 1 (DASS) is the plain case: the
N axis has size one and every reduction over it is a reshape.

Backward (`jax.custom_vjp`)
---------------------------
The adjoint recurrence dh_t = C_t dy_t + a_{t+1} dh_{t+1} (for a forward scan; mirrored for a
reverse one) runs through the same three passes in the opposite direction. The gradients are
then elementwise products and contractions with a_t h_{t-1}, where h_{t-1} is the state
sequence shifted by one step, with the chunk's start state at its first step: no division by a
decay; dA's sum over the sequence is `xla_cpu.group_column_sums`. With N == 1 the forward saves
the state sequence (the size of y); with N > 1 it saves only the chunk start states and the
backward reruns pass 3, so that a (..., L, N, D) array exists only transiently inside the
backward.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.chunk_engine import chunk_end_carries, chunk_start_states
from pallas_kernels.reference import finish_output, prepare_inputs
from pallas_kernels.xla_cpu import group_column_sums, materialize

MIN_CHUNK, MAX_CHUNK = 8, 256
# Axes of the chunked view (batch, G, n_chunks, T, ...) of (batch, G, L, ...) sequences.
CHUNK_AXIS, STEP_AXIS = 2, 3
# N up to which the forward saves the whole state sequence for the backward.
SAVE_STATES_MAX_N = 1


def chunk_length(length: int, chunk_size: int | None = None) -> int:
  """Steps per chunk: `chunk_size` (capped at L), or by default about sqrt(L / 2).

  The default T is the power of two nearest sqrt(L / 2) within [8, 256], replaced by the
  largest divisor of L in [T / 2, T] when there is one, so that L needs no padding (a padded
  copy of every input). sqrt(L / 2) balances the 2 T iterations of passes 1 and 3, each a
  kernel launch on CPU, against the width of their vectors and the work of pass 2.
  """
  if chunk_size is not None:
    if chunk_size < 1:
      raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return min(chunk_size, length)
  target = 2 ** round(math.log2(max(length, 2) / 2) / 2)
  target = min(MAX_CHUNK, max(MIN_CHUNK, target, 1), length)
  divisors = [t for t in range(target, (target + 1) // 2 - 1, -1) if length % t == 0]
  return divisors[0] if divisors else target


def _by_chunk(x: jax.Array, chunk: int) -> jax.Array:
  """(batch, G, L, ...) -> (batch, G, n_chunks, chunk, ...), zero-padding L at its end.

  Zero padding is exact: padded steps have dt = u = B = C = dy = 0, so a_t = 1 and they add
  nothing, and a reverse scan starts its real steps from the zero state it would have anyway.
  """
  pad = -x.shape[2] % chunk
  if pad:
    x = jnp.pad(x, [(0, 0), (0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 3))
  return x.reshape(*x.shape[:2], -1, chunk, *x.shape[3:])


def _by_time(x: jax.Array, length: int) -> jax.Array:
  """(batch, G, n_chunks, chunk, ...) -> (batch, G, length, ...), dropping the padding."""
  return x.reshape(*x.shape[:2], -1, *x.shape[4:])[:, :, :length]


def _at(x: jax.Array, s) -> jax.Array:
  """Step s of every chunk: (batch, G, n_chunks, chunk, ...) -> (batch, G, n_chunks, ...)."""
  return lax.dynamic_index_in_dim(x, s, axis=STEP_AXIS, keepdims=False)


def _step_order(chunk: int, reverse: bool):
  return (lambda i: chunk - 1 - i) if reverse else (lambda i: i)


def _chunk_starts(step, decay: jax.Array, chunk: int, reverse: bool) -> jax.Array:
  """Passes 1 and 2: the carry entering every chunk (in the direction of the scan).

  step(s, carry, out) -> (new carry, emitted value) advances all chunks by their step s (`out`
  is None here); over a whole chunk it maps a carry to decay * carry + (what it gives from a
  zero carry). decay: (batch, G, n_chunks, N, D), the carry's shape.
  """
  order = _step_order(chunk, reverse)
  local = lax.fori_loop(0, chunk, lambda i, c: step(order(i), c, None)[0], jnp.zeros_like(decay))
  combine = chunk_end_carries if reverse else chunk_start_states
  return combine(local, decay, axis=CHUNK_AXIS)


def _sweep(step, starts: jax.Array, out: jax.Array, reverse: bool) -> jax.Array:
  """Pass 3: every chunk run from its start carry; writes the value `step` emits at each step
  into `out` (batch, G, n_chunks, chunk, ...) at that step and returns it.

  step(s, carry, out) may read slot s of `out` before it is overwritten: the inference forward
  passes dt as `out`, so that y takes dt's buffer (dt is dead after this pass) and needs no
  buffer of its own.
  """
  order = _step_order(out.shape[STEP_AXIS], reverse)

  def body(i, state):
    carry, out = state
    s = order(i)
    carry, value = step(s, carry, out)
    return carry, lax.dynamic_update_index_in_dim(out, value, s, axis=STEP_AXIS)

  return lax.fori_loop(0, out.shape[STEP_AXIS], body, (starts, out))[1]


def _zeros(like: jax.Array, tail) -> jax.Array:
  """Zeros (batch, G, n_chunks, chunk, *tail) computed from `like` (batch, G, n_chunks,
  chunk, ...), so laid out and sharded like it. Not a constant: XLA would hoist a constant
  buffer to the start of the program, and every scan's output buffer would be live at once."""
  steps = (like[..., :1] * 0).reshape(*like.shape[:4], *[1] * len(tail))
  return jnp.broadcast_to(steps, (*like.shape[:4], *tail))


class _Chunked:
  """The five inputs in the chunked view, with the per-step pieces of the recurrence."""

  def __init__(self, u, dt, A, B, C, chunk):
    self.u, self.dt = _by_chunk(u, chunk), _by_chunk(dt, chunk)
    self.B, self.C = _by_chunk(B, chunk), _by_chunk(C, chunk)
    self.rates = A[:, None]  # (G, 1, N, D) against states (batch, G, n_chunks, N, D)
    self.chunk = chunk
    self.state_shape = (*self.u.shape[:3], *A.shape[1:])

  def decay(self, dt_s):
    """a_s = exp(dt_s A): (batch, G, n_chunks, N, D)."""
    return jnp.exp(dt_s[..., None, :] * self.rates)

  def chunk_decay(self):
    """Product of a_t over each chunk, exp(A * sum dt): (batch, G, n_chunks, N, D)."""
    return self.decay(jnp.sum(self.dt, axis=STEP_AXIS))

  def state_step(self, emit, dt_in_out: bool = False):
    """h -> a_s h + dt_s u_s B_s, emitting emit(s, h_s); dt_s from `out` if dt_in_out."""

    def step(s, h, out):
      dt_s = _at(out if dt_in_out else self.dt, s)
      drive = (dt_s * _at(self.u, s))[..., None, :] * _at(self.B, s)[..., None]
      h = self.decay(dt_s) * h + drive
      return h, emit(s, h)

    return step

  def output(self, s, h):
    """y_s = sum_n C_s[n] h_s[n]: (batch, G, n_chunks, D)."""
    return jnp.sum(_at(self.C, s)[..., None] * h, axis=-2)

  def adjoint_step(self, dy):
    """Reverse carry r -> a_s (C_s dy_s + r), emitting dh_s = C_s dy_s + r."""

    def step(s, r, out):
      dh = _at(self.C, s)[..., None] * _at(dy, s)[..., None, :] + r
      return self.decay(_at(self.dt, s)) * dh, dh

    return step


def _states(ch: _Chunked, reverse: bool):
  """(h for every step (batch, G, n_chunks, T, N, D), chunk start states)."""
  step = ch.state_step(lambda s, h: h)
  starts = _chunk_starts(step, ch.chunk_decay(), ch.chunk, reverse)
  return _sweep(step, starts, _zeros(ch.u, ch.state_shape[3:]), reverse), starts


def _forward(reverse, chunk, u, dt, A, B, C):
  ch = _Chunked(u, dt, A, B, C, chunk)
  starts = _chunk_starts(ch.state_step(lambda s, h: h), ch.chunk_decay(), chunk, reverse)
  y = _sweep(ch.state_step(ch.output, dt_in_out=True), starts, ch.dt, reverse)
  return _by_time(y, u.shape[2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _scan(reverse, chunk, u, dt, A, B, C):
  return _forward(reverse, chunk, u, dt, A, B, C)


def _scan_fwd(reverse, chunk, u, dt, A, B, C):
  if A.shape[1] > SAVE_STATES_MAX_N:
    return _forward(reverse, chunk, u, dt, A, B, C), (u, dt, A, B, C, None)
  ch = _Chunked(u, dt, A, B, C, chunk)
  h, starts = _states(ch, reverse)
  y = _by_time(jnp.sum(ch.C[..., None] * h, axis=-2), u.shape[2])
  return y, (u, dt, A, B, C, (h, starts))


def _previous_states(h, starts, reverse: bool):
  """The state before each step in the scan's direction: h shifted by one, starts at the ends."""
  starts = starts[:, :, :, None]
  if reverse:
    return jnp.concatenate([h[:, :, :, 1:], starts], axis=STEP_AXIS)
  return jnp.concatenate([starts, h[:, :, :, :-1]], axis=STEP_AXIS)


def _scan_bwd(reverse, chunk, res, dy):
  u, dt, A, B, C, saved = res
  length = u.shape[2]
  ch = _Chunked(u, dt, A, B, C, chunk)
  h, starts = _states(ch, reverse) if saved is None else saved
  dy = _by_chunk(dy, chunk)
  adjoint = _chunk_starts(ch.adjoint_step(dy), ch.chunk_decay(), chunk, not reverse)
  dh = _sweep(ch.adjoint_step(dy), adjoint, _zeros(ch.u, ch.state_shape[3:]), not reverse)
  # dh * a_t h_{t-1}: the sensitivity of the loss to the decay term of every step.
  rates = A[:, None, None]  # (G, 1, 1, N, D) against (batch, G, n_chunks, T, N, D)
  a = jnp.exp(ch.dt[..., None, :] * rates)
  # Computed once for its two consumers (`xla_cpu.materialize`).
  decay_term = materialize(dh * a * _previous_states(h, starts, reverse))
  dh_b = jnp.sum(dh * ch.B[..., None], axis=-2)
  du = ch.dt * dh_b
  ddt = jnp.sum(decay_term * rates, axis=-2) + ch.u * dh_b
  per_step = decay_term * ch.dt[..., None, :]  # summed per group below
  dA = group_column_sums(per_step, kept_axes=2)
  dB = jnp.einsum("bgctnd,bgctd->bgctn", dh, ch.dt * ch.u)
  dC = jnp.einsum("bgctd,bgctnd->bgctn", dy, h)
  return (
    _by_time(du, length),
    _by_time(ddt, length),
    dA,
    _by_time(dB, length),
    _by_time(dC, length),
  )


_scan.defvjp(_scan_fwd, _scan_bwd)


def scan_channels_last(u, dt, A, B, C, *, reverse: bool = False, chunk_size: int | None = None):
  """The chunked scan on channels-last layouts (module docstring); differentiable in all five.

  Args:
    u, dt: (batch, G, L, D); dt is the step size (after softplus and bias).
    A: (G, N, D), negative. B, C: (batch, G, L, N).
    reverse: scan from the last step to the first.
    chunk_size: steps per chunk (default: `chunk_length(L)`).
  Returns:
    y: (batch, G, L, D) float32, without the D * u term.
  """
  f32 = jnp.float32
  chunk = chunk_length(u.shape[2], chunk_size)
  args = (u, dt, A, B, C)
  return _scan(bool(reverse), chunk, *(x.astype(f32) for x in args))


def selective_scan_chunked(
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
  """Selective scan in the reference layouts (see `pallas_kernels.reference`), chunked.

  u, delta (batch, K*D, L) and y are transposed to and from the channels-last layout (two
  copies of the inputs and one of the output); `ss2d_chunked` feeds the chunked scan without
  them.
  """
  u4, dt4, a4, b4, c4, _ = prepare_inputs(u, delta, A, B, C, D, delta_bias, delta_softplus)

  def channels_last(x):  # (batch, K, X, L) -> (batch, K, L, X)
    return jnp.swapaxes(x, -1, -2)

  y = scan_channels_last(
    channels_last(u4),
    channels_last(dt4),
    jnp.swapaxes(a4, 1, 2),
    channels_last(b4),
    channels_last(c4),
    chunk_size=chunk_size,
  )
  return finish_output(channels_last(y), u, D, out_dtype)
