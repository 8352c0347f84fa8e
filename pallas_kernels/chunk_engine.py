"""Per-chunk loops of the chunked selective scan, shared by the plain and the fused kernels.

A kernel program owns one chunk of `steps` time steps for a block of channel lanes. The
loops here only see that chunk through accessors (`load_u(t)`, `store_y(t, y)`, ...), so
the same math serves the plain layout (`pallas_scan`) and the four-route SS2D layout
(`pallas_ss2d_fused`), which maps a route's step to a token of the un-expanded map.

Value shapes inside a program (lanes = channel block, N = padded state size):
  lane vectors          (lanes,) fp32: u, dt, dy, y, du, ddelta
  state, A, dA          (lanes, N) fp32, or (lanes,) when N == 1 (the DASS fast path)
  b, c, dB, dC at t     (N,) fp32, or a scalar when N == 1

Recurrence (per lane): a_t = exp(dt_t A), h_t = a_t h_{t-1} + dt_t u_t B_t,
y_t = <C_t, h_t> + D u_t. Its adjoint runs backwards: dh_t = dy_t C_t + r_{t+1} with the
reverse carry r_t = a_t dh_t. Chunks are independent given their boundary values, which
the tiny cross-chunk scans at the end of this module provide (plain JAX, outside kernels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.reference import compose_affine, softplus, softplus_slope

MAX_LANES = 32


def next_power_of_2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def lanes_for(channels: int) -> int:
  """Channel block: a power of two (Triton needs power-of-two vectors), at most one warp."""
  return min(MAX_LANES, next_power_of_2(channels))


def pad_trailing(x: jax.Array, widths) -> jax.Array:
  """Zero-pads the trailing len(widths) axes of x at their ends (no copy when all are 0)."""
  if not any(widths):
    return x
  return jnp.pad(x, [(0, 0)] * (x.ndim - len(widths)) + [(0, w) for w in widths])


WIDE_STATE = 16  # padded state sizes from which a channel block gets 4 warps


def default_num_warps(lanes: int, padded_n: int) -> int:
  """Warps per program: one per 32 lanes, times 4 for a state of 16 (AuM's d_state).

  Chosen from the offline compile (BENCHMARKS.md, "Offline Triton compile"; registers per
  thread and resident warps per SM on sm_80 / sm_90a), conservatively, with no GPU timing:
  * N == 1 (DASS): one thread per lane. More warps replicate the (lanes,) vectors across
    warps and turn the fused kernel's per-step lane reductions into cross-warp ones through
    shared memory (stage 1: 9 -> 37-41 `bar.sync` in the backward, 0 -> 7 in the forward's
    first pass) for no register gain there; registers fall only where the (lanes, R)
    dt-projection tiles dominate (the fused backward at stages 3-4: 153-230 -> 96-153 at 4
    warps), so that stays a measurement for the GPU check (`bench --num-warps 4`).
  * N == 16 (AuM): the (lanes, 16) state tile is 16 values per thread in one warp and 4 in
    four. Four warps cut every kernel's registers (backward 168 -> 96, forward 71 -> 40),
    raise the resident warps per SM (12 -> 20, 28 -> 48) and add no barrier, on both
    targets; the GPU check measures it against one warp (`bench --d-state 16 --num-warps 1`).
  """
  return max(1, lanes // 32) * (4 if padded_n >= WIDE_STATE else 1)


def compiler_params(num_warps: int):
  """Triton compiler params; the class was renamed across JAX versions.

  Passing Triton params is what selects the Triton lowering over Mosaic GPU for a generic
  `pallas_call` on CUDA; interpret mode ignores them.
  """
  from jax.experimental.pallas import triton as pltriton

  cls = getattr(pltriton, "CompilerParams", None) or pltriton.TritonCompilerParams
  return cls(num_warps=num_warps)


def softplus_and_slope(x: jax.Array, delta_softplus: bool):
  """dt = softplus(x) (threshold 20) and d dt / d x; identity when `delta_softplus` is False."""
  if not delta_softplus:
    return x, jnp.ones_like(x)
  return softplus(x), softplus_slope(x)


@dataclasses.dataclass(frozen=True)
class StateShape:
  """Whether the state is (lanes,) (N == 1) or (lanes, N); helpers broadcast accordingly."""

  n: int

  @property
  def scalar(self) -> bool:
    return self.n == 1

  def zeros(self, lanes: int) -> jax.Array:
    return jnp.zeros((lanes,) if self.scalar else (lanes, self.n), jnp.float32)

  def col(self, v):
    """Lane vector (lanes,) -> broadcastable against the state."""
    return v if self.scalar else v[:, None]

  def row(self, v):
    """Per-step B_t or C_t -> broadcastable against the state."""
    return v if self.scalar else v[None, :]

  def nsum(self, x):
    """Sum over the state dimension: state -> lane vector."""
    return x if self.scalar else jnp.sum(x, axis=1)


Load = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Access:
  """Accessors for one program's chunk; `t` is the (traced) step index within the chunk.

  load_dt returns (dt, d dt / d delta_pre); everything else returns fp32 values. A pass
  leaves the accessors it does not use as None.
  """

  load_u: Load | None
  load_dt: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  load_b: Load | None
  load_c: Load | None


def _advance(t, h, A, ss: StateShape, io: Access):
  """One step of the recurrence: returns (h_t, dt_t, u_t) from h_{t-1}."""
  dt, _ = io.load_dt(t)
  u = io.load_u(t)
  return jnp.exp(ss.col(dt) * A) * h + ss.col(dt * u) * ss.row(io.load_b(t)), dt, u


def chunk_end_state(steps: int, A, ss: StateShape, io: Access, lanes: int):
  """Pass 1 of the forward: end state of the chunk from a zero start, and sum of dt."""

  def body(t, carry):
    h, dt, _ = _advance(t, carry[0], A, ss, io)
    return h, carry[1] + dt

  return lax.fori_loop(0, steps, body, (ss.zeros(lanes), jnp.zeros((lanes,), jnp.float32)))


def chunk_outputs(
  steps: int,
  A,
  d_skip,
  h0,
  ss: StateShape,
  io: Access,
  store_y: Callable[[jax.Array, jax.Array], None],
):
  """Pass 3 of the forward: runs the chunk from its true start state h0 and stores y."""

  def body(t, h):
    h, _, u = _advance(t, h, A, ss, io)
    store_y(t, ss.nsum(h * ss.row(io.load_c(t))) + d_skip * u)
    return h

  lax.fori_loop(0, steps, body, h0)


def chunk_adjoint_carry(steps: int, A, ss: StateShape, io: Access, load_g: Load, lanes: int):
  """Pass 1 of the backward: reverse carry r at the chunk start from a zero carry at its end.

  Returns (r, sum of dt); r = a_{t0} dh_{t0} computed with dh from inside the chunk only.
  """

  def body(i, carry):
    r, dt_sum = carry
    t = steps - 1 - i
    dt, _ = io.load_dt(t)
    dh = ss.col(load_g(t)) * ss.row(io.load_c(t)) + r
    return jnp.exp(ss.col(dt) * A) * dh, dt_sum + dt

  return lax.fori_loop(0, steps, body, (ss.zeros(lanes), jnp.zeros((lanes,), jnp.float32)))


def sub_chunk(steps: int) -> int:
  """Sub-chunk length S of the backward recompute (S = 16 for 256 steps).

  The divisor of `steps` minimising the scratch per lane: steps / S checkpoints + S states.
  """
  return min((s for s in range(1, steps + 1) if steps % s == 0), key=lambda s: steps // s + s)


@dataclasses.dataclass(frozen=True)
class GradSinks:
  """Where the backward puts per-step gradients, and its two small scratch slots.

  store_ckpt / load_ckpt: the state at each sub-chunk start (steps / S slots);
  store_h / load_h: h_{t-1} for the S steps of the current sub-chunk (S slots). Both are the
  program's own slots in global memory; `sync()` (`pallas_plumbing.sync_program`) separates
  every write of a slot from its reads and every read from the next overwrite, so that no
  thread relies on which thread of the program stored an element. emit_ddelta threads a user
  accumulator (the fused path accumulates the dt-projection weight gradient there).
  """

  load_g: Load
  store_ckpt: Callable[[jax.Array, jax.Array], None]
  load_ckpt: Load
  store_h: Callable[[jax.Array, jax.Array], None]
  load_h: Load
  store_du: Callable[[jax.Array, jax.Array], None]
  store_db: Callable[[jax.Array, jax.Array], None]
  store_dc: Callable[[jax.Array, jax.Array], None]
  emit_ddelta: Callable[[jax.Array, jax.Array, object], object]
  sync: Callable[[], None]


def chunk_backward(
  steps: int,
  sub: int,
  A,
  d_skip,
  h0,
  r_end,
  ss: StateShape,
  io: Access,
  sink: GradSinks,
  lanes: int,
  acc0,
):
  """Pass 3 of the backward for one chunk, by sub-chunks of `sub` steps.

  A forward sweep from h0 stores the state at every sub-chunk start. Then, for the
  sub-chunks from last to first: rerun the sub-chunk from its checkpoint storing h_{t-1},
  and walk it backwards from the reverse carry (r_end for the chunk's last step). Scratch
  per lane is steps / sub + sub states instead of steps; the forward runs twice.
  Memory order: `sink.sync()` after the checkpoint sweep, after each replay (its slots are
  read next) and after each backward walk (the next replay overwrites the slots it read), so
  2 * steps / sub + 1 barriers per chunk (33 at 256 steps).
  Returns (dA, dD, d_delta_bias, acc): this chunk's contributions, summed outside.
  """
  n_sub = steps // sub

  def advance(t, h):
    return _advance(t, h, A, ss, io)[0]

  def checkpoint(j, h):
    h = lax.fori_loop(0, sub, lambda s, h: advance(j * sub + s, h), h)
    sink.store_ckpt(j + 1, h)
    return h

  sink.store_ckpt(0, h0)
  lax.fori_loop(0, n_sub - 1, checkpoint, h0)
  sink.sync()

  def rev(t, s, carry):
    r, d_a, d_d, d_bias, acc = carry
    dt, slope = io.load_dt(t)
    u, b, c, g = io.load_u(t), io.load_b(t), io.load_c(t), sink.load_g(t)
    h_prev = sink.load_h(s)
    a = jnp.exp(ss.col(dt) * A)
    h = a * h_prev + ss.col(dt * u) * ss.row(b)
    dh = ss.col(g) * ss.row(c) + r
    sink.store_dc(t, jnp.sum(ss.col(g) * h, axis=0))
    sink.store_db(t, jnp.sum(dh * ss.col(dt * u), axis=0))
    dh_b = ss.nsum(dh * ss.row(b))
    sink.store_du(t, g * d_skip + dt * dh_b)
    dah = dh * a * h_prev
    ddt = ss.nsum(dah * A) + u * dh_b
    d_pre = ddt * slope
    acc = sink.emit_ddelta(t, d_pre, acc)
    return (a * dh, d_a + dah * ss.col(dt), d_d + g * u, d_bias + d_pre, acc)

  def sub_chunk_backward(i, carry):
    j = n_sub - 1 - i

    def replay(s, h):
      sink.store_h(s, h)
      return advance(j * sub + s, h)

    lax.fori_loop(0, sub, replay, sink.load_ckpt(j))
    sink.sync()
    carry = lax.fori_loop(0, sub, lambda k, c: rev(j * sub + sub - 1 - k, sub - 1 - k, c), carry)
    sink.sync()
    return carry

  zeros = jnp.zeros((lanes,), jnp.float32)
  init = (r_end, ss.zeros(lanes), zeros, zeros, acc0)
  _, d_a, d_d, d_bias, acc = lax.fori_loop(0, n_sub, sub_chunk_backward, init)
  return d_a, d_d, d_bias, acc


def chunk_start_states(h_local: jax.Array, decay: jax.Array, axis: int) -> jax.Array:
  """Pass 2 of the forward: true start state of each chunk along `axis` (plain JAX).

  h_local: end states from a zero start; decay: whole-chunk decay exp(A * sum dt).
  start[0] = 0, start[c+1] = decay[c] * start[c] + h_local[c]: an associative scan over the
  chunks (log2(n_chunks) small steps instead of n_chunks sequential ones), shifted by one.
  """
  _, ends = lax.associative_scan(compose_affine, (decay, h_local), axis=axis)
  first = jnp.zeros_like(lax.slice_in_dim(h_local, 0, 1, axis=axis))
  return jnp.concatenate([first, lax.slice_in_dim(ends, 0, -1, axis=axis)], axis=axis)


def chunk_end_carries(r_local: jax.Array, decay: jax.Array, axis: int) -> jax.Array:
  """Pass 2 of the backward: reverse carry entering each chunk from its right (plain JAX).

  end[last] = 0, end[c-1] = r_local[c] + decay[c] * end[c]: the mirror of
  `chunk_start_states`.
  """
  _, starts = lax.associative_scan(compose_affine, (decay, r_local), axis=axis, reverse=True)
  last = jnp.zeros_like(lax.slice_in_dim(r_local, 0, 1, axis=axis))
  return jnp.concatenate([lax.slice_in_dim(starts, 1, None, axis=axis), last], axis=axis)
