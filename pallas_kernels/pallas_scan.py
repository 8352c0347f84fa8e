"""Chunked Pallas selective scan (forward and backward kernels, `jax.custom_vjp`).

Math and layouts are those of `pallas_kernels.reference`: u, delta (batch, K*D, L); A
(K*D, N); B, C (batch, K, N, L) grouped by direction; D, delta_bias (K*D,). State and every
accumulation are fp32; inputs may be fp32 or bf16; `out_dtype` picks the output dtype.

Why this structure
------------------
* Parallelism. DASS stage 1 has only batch x K*D = 4 608 independent channel sequences,
  144 warps of 32 lanes for 132 SMs. Time is therefore split into chunks and the grid is
  (batch, K x channel blocks, chunks). Grid programs run in parallel on a GPU, so no state
  is carried from one program to the next; instead
    pass 1 (kernel)  each chunk's end state from a zero start, and sum(dt) over the chunk
                     (the whole-chunk decay is exp(A * sum dt), an exact product);
    pass 2 (JAX)     a tiny sequential scan over chunks, (batch, K, chunks, D, N) values;
    pass 3 (kernel)  each chunk rerun from its true start state, writing y.
  With one chunk, passes 1-2 are skipped.
* Inside a program, a `lax.fori_loop` over the chunk's steps; the channel block (up to 32
  lanes, one warp, a power of two as Triton requires) is the vector dimension and the state
  is (lanes, N) in registers, or (lanes,) for N == 1 (DASS's d_state, the fast path). Per
  step the kernel indexes refs (`u_ref[:, t]`), never loaded values, at dynamic t.
* Padding, not masking. Channels per group are padded to a multiple of the lane block, N to
  a power of two and L to a multiple of the chunk (`pallas_plumbing.choose_chunk`: about
  256 steps, never the whole length), all with zeros, only when needed (DASS at 1024
  frames needs none: D = 96*2^i, L = 8192 / 4^i). Zero padding is exact: padded lanes and
  steps carry u = B = C = dy = 0, so they add nothing to any output or gradient, and the
  Triton lowering never touches memory outside an array.
* Backward. Residuals are the inputs plus the chunk start states (batch, K, chunks, D, N);
  the full state sequence is never saved. The adjoint runs with the same chunk structure
  reversed: pass 1 gives each chunk's reverse carry from a zero carry at its end, pass 2 a
  reverse scan over chunks, pass 3 recomputes the chunk forward from its start state, then
  walks it backwards producing du, ddelta and per-step dB, dC. The reverse walk needs
  h_{t-1} in reverse order (dividing by the decay would underflow), and Triton-Pallas has
  no program-local scratch, so pass 3 works in sub-chunks of S ~ sqrt(chunk) steps: a
  forward sweep stores the state at each sub-chunk start, then each sub-chunk (last first)
  is replayed from its checkpoint into an S-slot scratch and walked backwards. The two
  scratch outputs hold chunk/S + S states per lane (32 instead of 256 at chunk 256; 4 KB
  per program at N = 1), written and read back by the same program, so they stay in cache;
  the price is one more forward recompute per chunk (cheap next to the memory traffic).
* Memory order. Those scratch slots are the only global memory a program reads after
  writing it. A CTA barrier (`pallas_plumbing.sync_program`, `bar.sync`) separates each
  write of a slot from its reads and each read from the next overwrite, so correctness does
  not depend on Triton giving the load the same thread-to-element layout as the store
  (interpret mode, which runs programs sequentially, cannot check this; the CUDA lowering
  test and `benchmarks/offline_compile.py` check that the barriers reach the PTX).
* Reductions without atomics. dB and dC are shared by the D channels of a group: each
  program writes the lane-sum of its channel block per step into a (batch, K, channel
  blocks, N, L) fp32 partial, summed over channel blocks outside (3 blocks at D = 96).
  dA, dD and d_delta_bias are per-program partials (batch, K, chunks, D[, N]) summed over
  batch and chunks outside.
* Bytes (estimate, fp32, DASS stage 1 at batch 12: 151 MB per (batch, K*D, L) array). The
  forward reads u, delta, B in pass 1 and u, delta, B, C in pass 3 and writes y: ~0.76 GB
  against the 0.46 GB floor; with a single chunk pass 1 is skipped and it meets the floor.
  The backward reads delta, C, dy (pass 1) then u, delta, B, C, dy and writes du, ddelta
  (pass 3, its re-reads inside a sub-chunk expected from cache): ~1.06 GB against the
  0.76 GB floor.
  Per step a warp touches one element per channel row (the layout is time-minor), so each
  access is a strided gather that relies on L1/L2 reuse across neighbouring steps.
* Lowering. A generic `pl.pallas_call` with Triton compiler params: on CUDA this selects the
  Triton backend (Ampere and Hopper; Mosaic GPU, JAX's default, is Hopper-only, wants
  128-lane register vectors and its `pallas_call` route is deprecated in 0.10.2). The Triton
  lowering to TTIR runs in Python, so `jax.export(..., platforms=["cuda"])` checks it from a
  CPU-only machine (see tests). `interpret=True` runs the same kernels on CPU.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels import chunk_engine as ce
from pallas_kernels import pallas_plumbing as plumbing

MIN_COMPUTE_CAPABILITY = 8.0


def supported_on_default_backend() -> bool:
  """True on NVIDIA GPUs of compute capability >= 8.0 (the Triton lowering's floor)."""
  if jax.default_backend() != "gpu":
    return False
  device = jax.devices()[0]
  if "rocm" in getattr(device.client, "platform_version", "").lower():
    return False
  try:
    capability = float(getattr(device, "compute_capability", "0"))
    from jax.experimental.pallas import triton  # noqa: F401  (the backend must exist)
  except (ValueError, ImportError):
    return False
  return capability >= MIN_COMPUTE_CAPABILITY


@dataclasses.dataclass(frozen=True)
class _Config:
  delta_softplus: bool
  out_dtype: object
  interpret: bool
  chunk_size: int | None
  num_warps: int | None = None


@dataclasses.dataclass(frozen=True)
class _Plan(plumbing.LaneGrid):
  """The grid of the plain layout: channel group k = scan group, and the sequence length."""

  length: int = 0

  @classmethod
  def make(cls, u, A, B, chunk_size):
    batch, channels, length = u.shape
    groups, n = B.shape[1], A.shape[1]
    if channels % groups:
      raise ValueError(f"K*D={channels} channels do not split into K={groups} groups")
    chunk = plumbing.choose_chunk(length, chunk_size or plumbing.DEFAULT_CHUNK)
    n_chunks = -(-length // chunk)
    return cls(batch, groups, channels // groups, n, chunk, n_chunks, length)

  @property
  def padded_length(self) -> int:
    return self.chunk * self.n_chunks

  # Padded layouts (zeros; see module docstring).
  def seq(self, x):
    x = x.reshape(self.batch, self.groups, self.d, self.length)
    return ce.pad_trailing(x, (0, 0, self.padded_d - self.d, self.padded_length - self.length))

  def proj(self, x):
    return ce.pad_trailing(x, (0, 0, self.padded_n - self.n, self.padded_length - self.length))

  def per_lane(self, x):
    x = x.astype(jnp.float32).reshape(self.groups, self.d)
    return ce.pad_trailing(x, (0, self.padded_d - self.d))

  def decay_rates(self, A):
    a = A.astype(jnp.float32).reshape(self.groups, self.d, self.n)
    a = ce.pad_trailing(a, (0, self.padded_d - self.d, self.padded_n - self.n))
    return a[..., 0] if self.state.scalar else a

  def unseq(self, x):
    return x[:, :, : self.d, : self.length].reshape(self.batch, self.groups * self.d, self.length)

  # Block specs over the grid (b, j = k * n_blocks + channel block, c).
  def seq_spec(self):
    return pl.BlockSpec(
      (None, None, self.lanes, self.chunk), lambda b, j, c: (b, *self.group_and_block(j), c)
    )

  def proj_spec(self):
    return pl.BlockSpec(
      (None, None, self.padded_n, self.chunk),
      lambda b, j, c: (b, self.group_and_block(j)[0], 0, c),
    )

  def lane_spec(self):
    return pl.BlockSpec((None, self.lanes), lambda b, j, c: self.group_and_block(j))

  def rate_spec(self):
    if self.state.scalar:
      return self.lane_spec()
    return pl.BlockSpec(
      (None, self.lanes, self.padded_n), lambda b, j, c: (*self.group_and_block(j), 0)
    )

  def chunk_spec(self, tail=()):
    """Per-program values of each chunk, (batch, K, chunks, padded D, *tail)."""
    return pl.BlockSpec(
      (None, None, None, self.lanes, *tail),
      lambda b, j, c: (
        b,
        self.group_and_block(j)[0],
        c,
        self.group_and_block(j)[1],
        *[0] * len(tail),
      ),
    )

  def chunk_shape(self, tail=()):
    return jax.ShapeDtypeStruct(
      (self.batch, self.groups, self.n_chunks, self.padded_d, *tail), jnp.float32
    )

  def chunk_output(self, tail=()):
    return self.chunk_spec(tail), self.chunk_shape(tail)

  def partial_proj_spec(self):
    return pl.BlockSpec(
      (None, None, None, self.padded_n, self.chunk),
      lambda b, j, c: (b, *self.group_and_block(j), 0, c),
    )

  def partial_proj_shape(self):
    return jax.ShapeDtypeStruct(
      (self.batch, self.groups, self.n_blocks, self.padded_n, self.padded_length), jnp.float32
    )

  def chunk_decay(self, dt_sum, rates):
    """Whole-chunk decay exp(A * sum dt), (batch, K, chunks, padded D[, padded N])."""
    return jnp.exp((dt_sum if self.state.scalar else dt_sum[..., None]) * rates[None, :, None])


@dataclasses.dataclass(frozen=True)
class _Padded:
  """The inputs in the padded kernel layouts."""

  u: jax.Array
  delta: jax.Array
  B: jax.Array
  C: jax.Array
  rates: jax.Array
  d_skip: jax.Array
  bias: jax.Array

  @classmethod
  def make(cls, plan: _Plan, u, delta, A, B, C, D, bias):
    return cls(
      plan.seq(u),
      plan.seq(delta),
      plan.proj(B),
      plan.proj(C),
      plan.decay_rates(A),
      plan.per_lane(D),
      plan.per_lane(bias),
    )


def _access(plan: _Plan, cfg: _Config, bias, u_ref, delta_ref, b_ref, c_ref) -> ce.Access:
  """Accessors over the plain layout: step t is column t of each (lanes | N, chunk) block."""
  f32 = jnp.float32

  def proj(ref):
    if ref is None:
      return None
    if plan.state.scalar:
      return lambda t: ref[0, t].astype(f32)
    return lambda t: ref[:, t].astype(f32)

  def load_dt(t):
    return ce.softplus_and_slope(delta_ref[:, t].astype(f32) + bias, cfg.delta_softplus)

  load_u = None if u_ref is None else (lambda t: u_ref[:, t].astype(f32))
  return ce.Access(load_u=load_u, load_dt=load_dt, load_b=proj(b_ref), load_c=proj(c_ref))


def _store_proj(plan: _Plan, ref):
  """Per-step store of a (N,) vector (or a scalar when N == 1) into column t of ref."""

  def store(t, v):
    if plan.state.scalar:
      ref[0, t] = v
    else:
      ref[:, t] = v

  return store


def _fwd_local_kernel(plan, cfg, u_ref, delta_ref, b_ref, a_ref, bias_ref, h_ref, dt_sum_ref):
  io = _access(plan, cfg, bias_ref[...], u_ref, delta_ref, b_ref, None)
  h, dt_sum = ce.chunk_end_state(plan.chunk, a_ref[...], plan.state, io, plan.lanes)
  h_ref[...] = h
  dt_sum_ref[...] = dt_sum


def _fwd_out_kernel(
  plan, cfg, u_ref, delta_ref, b_ref, c_ref, a_ref, d_skip_ref, bias_ref, h0_ref, y_ref
):
  io = _access(plan, cfg, bias_ref[...], u_ref, delta_ref, b_ref, c_ref)

  def store_y(t, y):
    y_ref[:, t] = y.astype(y_ref.dtype)

  ce.chunk_outputs(plan.chunk, a_ref[...], d_skip_ref[...], h0_ref[...], plan.state, io, store_y)


def _bwd_local_kernel(plan, cfg, delta_ref, c_ref, dy_ref, a_ref, bias_ref, r_ref, dt_sum_ref):
  io = _access(plan, cfg, bias_ref[...], None, delta_ref, None, c_ref)
  r, dt_sum = ce.chunk_adjoint_carry(
    plan.chunk, a_ref[...], plan.state, io, lambda t: dy_ref[:, t].astype(jnp.float32), plan.lanes
  )
  r_ref[...] = r
  dt_sum_ref[...] = dt_sum


def _bwd_kernel(
  plan,
  cfg,
  u_ref,
  delta_ref,
  b_ref,
  c_ref,
  dy_ref,
  a_ref,
  d_skip_ref,
  bias_ref,
  h0_ref,
  r_end_ref,
  du_ref,
  ddelta_ref,
  db_ref,
  dc_ref,
  da_ref,
  dd_ref,
  dbias_ref,
  checkpoint_ref,
  replay_ref,
):
  io = _access(plan, cfg, bias_ref[...], u_ref, delta_ref, b_ref, c_ref)

  def store_du(t, v):
    du_ref[:, t] = v.astype(du_ref.dtype)

  def emit_ddelta(t, v, acc):
    ddelta_ref[:, t] = v.astype(ddelta_ref.dtype)
    return acc

  sink = ce.GradSinks(
    load_g=lambda t: dy_ref[:, t].astype(jnp.float32),
    store_du=store_du,
    store_db=_store_proj(plan, db_ref),
    store_dc=_store_proj(plan, dc_ref),
    emit_ddelta=emit_ddelta,
    **plumbing.scratch_sinks(checkpoint_ref, replay_ref, cfg.interpret),
  )
  d_a, d_d, d_bias, _ = ce.chunk_backward(
    plan.chunk,
    plan.sub,
    a_ref[...],
    d_skip_ref[...],
    h0_ref[...],
    r_end_ref[...],
    plan.state,
    io,
    sink,
    plan.lanes,
    (),
  )
  da_ref[...] = d_a
  dd_ref[...] = d_d
  dbias_ref[...] = d_bias


def _call(plan: _Plan, cfg: _Config, kernel, name, args, in_specs, outs):
  kernel = functools.partial(kernel, plan, cfg)
  return plumbing.call_on_grid(
    plan, kernel, name, args, in_specs, outs, cfg.interpret, cfg.num_warps
  )


def _forward(cfg: _Config, u, delta, A, B, C, D, bias):
  """Returns y (batch, K*D, L) and the chunk start states (the backward's residual)."""
  plan = _Plan.make(u, A, B, cfg.chunk_size)
  x = _Padded.make(plan, u, delta, A, B, C, D, bias)
  seq, proj, lane, rate = plan.seq_spec(), plan.proj_spec(), plan.lane_spec(), plan.rate_spec()
  tail = plan.state_tail()
  h0 = jnp.zeros(plan.chunk_shape(tail).shape, jnp.float32)
  if plan.n_chunks > 1:
    local_outs = [plan.chunk_output(tail), plan.chunk_output()]
    local_args, local_specs = [x.u, x.delta, x.B, x.rates, x.bias], [seq, seq, proj, rate, lane]
    name = "selective_scan_fwd_chunk_states"
    h_local, dt_sum = _call(plan, cfg, _fwd_local_kernel, name, local_args, local_specs, local_outs)
    h0 = ce.chunk_start_states(h_local, plan.chunk_decay(dt_sum, x.rates), axis=2)
  y_out = (seq, jax.ShapeDtypeStruct(x.u.shape, cfg.out_dtype))
  args = [x.u, x.delta, x.B, x.C, x.rates, x.d_skip, x.bias, h0]
  specs = [seq, seq, proj, proj, rate, lane, lane, plan.chunk_spec(tail)]
  (y,) = _call(plan, cfg, _fwd_out_kernel, "selective_scan_fwd", args, specs, [y_out])
  return plan.unseq(y), h0


def _backward(cfg: _Config, res, dy):
  u, delta, A, B, C, D, bias, h0 = res
  plan = _Plan.make(u, A, B, cfg.chunk_size)
  x = _Padded.make(plan, u, delta, A, B, C, D, bias)
  dys = plan.seq(dy)
  seq, proj, lane, rate = plan.seq_spec(), plan.proj_spec(), plan.lane_spec(), plan.rate_spec()
  tail = plan.state_tail()
  r_end = jnp.zeros_like(h0)
  if plan.n_chunks > 1:
    local_outs = [plan.chunk_output(tail), plan.chunk_output()]
    local_args, local_specs = [x.delta, x.C, dys, x.rates, x.bias], [seq, proj, seq, rate, lane]
    name = "selective_scan_bwd_chunk_carries"
    r_local, dt_sum = _call(plan, cfg, _bwd_local_kernel, name, local_args, local_specs, local_outs)
    r_end = ce.chunk_end_carries(r_local, plan.chunk_decay(dt_sum, x.rates), axis=2)
  grad_outs = [
    (seq, jax.ShapeDtypeStruct(x.u.shape, u.dtype)),
    (seq, jax.ShapeDtypeStruct(x.delta.shape, delta.dtype)),
    (plan.partial_proj_spec(), plan.partial_proj_shape()),
    (plan.partial_proj_spec(), plan.partial_proj_shape()),
    plan.chunk_output(tail),
    plan.chunk_output(),
    plan.chunk_output(),
    *plan.backward_scratch(),
  ]
  args = [x.u, x.delta, x.B, x.C, dys, x.rates, x.d_skip, x.bias, h0, r_end]
  state = plan.chunk_spec(tail)
  specs = [seq, seq, proj, proj, seq, rate, lane, lane, state, state]
  grads = _call(plan, cfg, _bwd_kernel, "selective_scan_bwd", args, specs, grad_outs)
  du, ddelta, db, dc, da, dd, dbias, _, _ = grads
  k, d, n = plan.groups, plan.d, plan.n
  d_a = da.sum(axis=(0, 2))[:, :d].reshape(k * d, -1)[:, :n]
  per_lane = lambda g: g.sum(axis=(0, 2))[:, :d].reshape(k * d)
  proj_grad = lambda g, ref: g.sum(axis=2)[:, :, :n, : plan.length].astype(ref.dtype)
  return (
    plan.unseq(du),
    plan.unseq(ddelta),
    d_a.astype(A.dtype),
    proj_grad(db, B),
    proj_grad(dc, C),
    per_lane(dd).astype(D.dtype),
    per_lane(dbias).astype(bias.dtype),
  )


_scan = plumbing.chunked_vjp(_forward, _backward)


def selective_scan(
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
  interpret=False,
  chunk_size=None,
  num_warps=None,
):
  """Selective scan with the Pallas kernels; differentiable in all seven inputs.

  Args:
    u, delta: (batch, K*D, L), fp32 or bf16.
    A: (K*D, N), N <= 16 (padded to a power of two inside). B, C: (batch, K, N, L).
    D, delta_bias: (K*D,) or None (treated as zeros).
    delta_softplus: apply softplus (threshold 20) to delta + delta_bias.
    out_dtype: dtype of y (default u.dtype); state and accumulation are fp32.
    interpret: run the kernels in Pallas interpret mode (CPU tests).
    chunk_size: target time steps per grid program (default 256; `choose_chunk` rounds it
      to ceil(L / chunks) steps, a multiple of 8, and L is zero-padded to whole chunks).
    num_warps: warps per program (default `chunk_engine.default_num_warps`: one per 32
      lanes, four times that for d_state 16); for measuring alternatives.
  Returns:
    y: (batch, K*D, L) in out_dtype.
  """
  plumbing.check_state_size(A.shape[1])
  channels = u.shape[1]
  D = jnp.zeros((channels,), jnp.float32) if D is None else D
  delta_bias = jnp.zeros((channels,), jnp.float32) if delta_bias is None else delta_bias
  cfg = _Config(
    bool(delta_softplus),
    jnp.dtype(out_dtype or u.dtype),
    bool(interpret),
    chunk_size,
    num_warps,
  )
  return _scan(cfg, u, delta, A, B, C, D, delta_bias)
