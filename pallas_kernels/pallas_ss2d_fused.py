"""Fused SS2D core: cross-scan -> selective scan -> cross-merge without the 4x expansion.

Same contract as `ss2d_core.ss2d_scan` (x (batch, H, W, d) channels-last in, merged map
out), computed differently:

* Projections in the original layout. x_proj and the rank-R dt projection are per-token
  linear maps, so they commute with the route permutations: x_dbl = x @ x_proj_weight[k]^T
  is computed once per token, giving (batch, L, K, R + 2N), small next to the map. delta is
  not materialised: the kernel forms delta = dt_projs_weight[k] @ dt_low per step (R <= 8
  for DASS stage 1, padded to a power of two).
* Routes by indexing. The kernel reads the un-expanded map x (batch, L, d) at the token of
  route k's step: k = 0 row-major, k = 1 column-major (token (i % H) * W + i // H at
  position i), k = 2, 3 their reversals. Channels-last makes every per-step read and write
  a contiguous run of lanes.
* Route pairs. With chunks of T tokens (the token sequence zero-padded to nc * T,
  `pallas_plumbing.choose_chunk`), route k chunk c and route k + 2 chunk nc - 1 - c visit
  the same tokens in opposite orders. Program (batch, p * blocks + channel
  block, c) runs route p chunk c, then route p + 2 chunk nc - 1 - c, adding into the same
  output tokens, so no two programs write one token: no atomics. Pair p = 0 (row-major
  routes) and pair p = 1 (column-major routes) write two fp32 partial maps, summed by one
  elementwise add outside (a transpose is not needed: column routes write at row-major
  token addresses). Chunk-indexed arrays are kept in this "program order"; the route-k+2
  half is flipped along chunks around the cross-chunk scans.
* Padding. Padded tokens (positions L .. nc * T - 1, after the map's last token in every
  route's position order) carry x = dt_low = B = C = dy = 0: a forward route meets them
  after its last real token and a reversed route before its first, with a zero state that
  a zero input keeps at zero, so they change no output or gradient; their rows of the
  outputs are dropped.
* Memory order. Route 1 of a pair reads back the partial-map tokens (y, and dx in the
  backward) that route 0 of the same program wrote, and the backward re-reads its scratch
  slots; a CTA barrier (`pallas_plumbing.sync_program`) separates each such write from the
  read, whatever thread Triton's layouts give each element (see `pallas_scan`).
* Backward: the same chunked adjoint as `pallas_scan`, per route, with dx accumulated the
  same way, and d(dt_low), dB, dC written per (token, route) into per-channel-block fp32
  partials; dt_projs_weight's gradient is a per-program (lanes, R) partial.

Bytes (estimate, not measured: no GPU was available). DASS stage 1, batch 12, L = 8192,
d = 96, fp32, map = 37.7 MB, x_dbl = 12.6 MB: projections read x and write x_dbl (50 MB);
pass 1 and pass 3 each read x once per route pair (the pair's second route re-reads the
chunk's tokens right after the first, expected from L2) and x_dbl (~88 MB each); pass 3
writes the two fp32 partial maps (75 MB); their sum reads 75 MB and writes 38 MB. About
0.42 GB in all, versus ~1.16 GB for the unfused pipeline and a 79 MB floor
(notes/kernel.md). With one chunk (chunk_size >= L) pass 1 disappears (~88 MB) at the cost
of parallelism.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels import chunk_engine as ce
from pallas_kernels import pallas_plumbing as plumbing
from pallas_kernels.cross_scan import K_DIRECTIONS

ROUTE_PAIRS = 2  # pair p = k % 2 holds routes p and p + 2 (the same tokens, opposite orders)


@dataclasses.dataclass(frozen=True)
class _Config:
  height: int
  width: int
  chunk_size: int | None
  out_dtype: object
  interpret: bool
  num_warps: int | None = None


@dataclasses.dataclass(frozen=True)
class _Plan(plumbing.LaneGrid):
  """The fused grid: channel group = route pair p (route k = r * 2 + p, r = reversed), the
  map's height and width and the dt rank."""

  height: int = 0
  width: int = 0
  rank: int = 0

  @classmethod
  def make(cls, x, dt_low, b, cfg: _Config):
    batch, length, d = x.shape
    chunk = plumbing.choose_chunk(length, cfg.chunk_size or plumbing.DEFAULT_CHUNK)
    n, rank = b.shape[-1], dt_low.shape[-1]
    n_chunks = -(-length // chunk)
    return cls(batch, ROUTE_PAIRS, d, n, chunk, n_chunks, cfg.height, cfg.width, rank)

  @property
  def length(self) -> int:
    return self.height * self.width

  @property
  def padded_length(self) -> int:
    return self.chunk * self.n_chunks

  @property
  def padded_rank(self) -> int:
    return ce.next_power_of_2(self.rank)

  # Padded layouts (zeros: padded tokens come after the map's last token).
  def map(self, x):
    """(batch, L, d) -> (batch, padded L, padded d)."""
    return ce.pad_trailing(x, (self.padded_length - self.length, self.padded_d - self.d))

  def unmap(self, x):
    return x[:, : self.length, : self.d]

  def tokens(self, x, width):
    """(batch, L, K, X) -> (batch, padded L, 2, 2, X_padded), route k = r * 2 + p."""
    x = ce.pad_trailing(x, (self.padded_length - self.length, 0, width - x.shape[-1]))
    return x.reshape(self.batch, self.padded_length, 2, ROUTE_PAIRS, width)

  def routes(self, x, tail=()):
    """(K*d, *tail) per-route params -> (2, 2, padded d, *tail) fp32."""
    x = x.astype(jnp.float32).reshape(2, ROUTE_PAIRS, self.d, *tail)
    return ce.pad_trailing(x, (self.padded_d - self.d, *[0] * len(tail)))

  def rates(self, A):
    a = ce.pad_trailing(self.routes(A, (self.n,)), (self.padded_n - self.n,))
    return a[..., 0] if self.state.scalar else a

  def dt_weights(self, w):
    """(K, d, R) -> (2, 2, padded d, padded R)."""
    w = self.routes(w.reshape(K_DIRECTIONS * self.d, self.rank), (self.rank,))
    return ce.pad_trailing(w, (self.padded_rank - self.rank,))

  # Block specs over the grid (b, j = p * n_blocks + channel block, c).
  def map_spec(self):
    return pl.BlockSpec(
      (None, self.padded_length, self.lanes), lambda b, j, c: (b, 0, self.group_and_block(j)[1])
    )

  def pair_map_spec(self):
    return pl.BlockSpec(
      (None, None, self.padded_length, self.lanes),
      lambda b, j, c: (b, self.group_and_block(j)[0], 0, self.group_and_block(j)[1]),
    )

  def pair_map_shape(self):
    shape = (self.batch, ROUTE_PAIRS, self.padded_length, self.padded_d)
    return jax.ShapeDtypeStruct(shape, jnp.float32)

  def token_spec(self, width):
    return pl.BlockSpec(
      (None, self.padded_length, 2, None, width),
      lambda b, j, c: (b, 0, 0, self.group_and_block(j)[0], 0),
    )

  def token_partial(self, width):
    """Per channel block partial sums of a per-token gradient: (spec, shape)."""
    spec = pl.BlockSpec(
      (None, None, self.padded_length, 2, None, width),
      lambda b, j, c: (b, self.group_and_block(j)[1], 0, 0, self.group_and_block(j)[0], 0),
    )
    shape = (self.batch, self.n_blocks, self.padded_length, 2, ROUTE_PAIRS, width)
    return spec, jax.ShapeDtypeStruct(shape, jnp.float32)

  def route_spec(self, tail=()):
    return pl.BlockSpec(
      (2, None, self.lanes, *tail),
      lambda b, j, c: (0, *self.group_and_block(j), *[0] * len(tail)),
    )

  def chunk_spec(self, tail=()):
    return pl.BlockSpec(
      (None, 2, None, None, self.lanes, *tail),
      lambda b, j, c: (
        b,
        0,
        self.group_and_block(j)[0],
        c,
        self.group_and_block(j)[1],
        *[0] * len(tail),
      ),
    )

  def chunk_shape(self, tail=()):
    shape = (self.batch, 2, ROUTE_PAIRS, self.n_chunks, self.padded_d, *tail)
    return jax.ShapeDtypeStruct(shape, jnp.float32)

  def chunk_output(self, tail=()):
    return self.chunk_spec(tail), self.chunk_shape(tail)

  def chunk_decay(self, dt_sum, rates):
    """exp(A * sum dt) per route chunk, (batch, 2, 2, chunks, padded d[, padded N])."""
    dt_sum = dt_sum if self.state.scalar else dt_sum[..., None]
    return jnp.exp(dt_sum * rates[None, :, :, None])

  def input_specs(self):
    """Block specs of the padded inputs (`_Padded` fields) and of the map-shaped dy."""
    tail = self.state_tail()
    return _Padded(
      x=self.map_spec(),
      dt_low=self.token_spec(self.padded_rank),
      B=self.token_spec(self.padded_n),
      C=self.token_spec(self.padded_n),
      dt_weights=self.route_spec((self.padded_rank,)),
      rates=self.route_spec(tail),
      d_skip=self.route_spec(),
      bias=self.route_spec(),
    )


@dataclasses.dataclass(frozen=True)
class _Padded:
  """The fused kernels' inputs in their padded layouts (or, from `input_specs`, their specs)."""

  x: object
  dt_low: object
  B: object
  C: object
  dt_weights: object
  rates: object
  d_skip: object
  bias: object

  def values(self) -> list:
    """The fields in order (not `dataclasses.astuple`, which would unpack BlockSpecs too)."""
    return [getattr(self, f.name) for f in dataclasses.fields(self)]

  @classmethod
  def make(cls, plan: _Plan, x, dt_low, b, c, dt_weights, A, D, bias):
    return cls(
      plan.map(x),
      plan.tokens(dt_low, plan.padded_rank),
      plan.tokens(b, plan.padded_n),
      plan.tokens(c, plan.padded_n),
      plan.dt_weights(dt_weights),
      plan.rates(A),
      plan.routes(D),
      plan.routes(bias),
    )


def _flip_reversed_routes(x):
  """Program order <-> route order of chunks: the r = 1 routes run chunk nc - 1 - c."""
  return jnp.concatenate([x[:, :1], jnp.flip(x[:, 1:], axis=3)], axis=1)


class _Route:
  """Accessors of route (r, p) for the program's chunk: step s -> token of the map."""

  def __init__(self, plan: _Plan, r: int, refs, params):
    self.plan, self.r = plan, r
    self.x_ref, self.dtl_ref, self.b_ref, self.c_ref = refs
    self.w, self.bias = params
    p = plan.group_and_block(pl.program_id(1))[0]
    self.is_rows = p == 0
    self.base = pl.program_id(2) * plan.chunk

  def token(self, s):
    """Row of the padded map at route position i: i itself for the row-major routes and for
    padding (i >= L), the column-major token (i % H) * W + i // H otherwise."""
    plan = self.plan
    i = self.base + (s if self.r == 0 else plan.chunk - 1 - s)
    col = (i % plan.height) * plan.width + i // plan.height
    rows = self.is_rows if plan.padded_length == plan.length else self.is_rows | (i >= plan.length)
    return jnp.where(rows, i, col)

  def load_proj(self, ref):
    if self.plan.state.scalar:
      return lambda s: ref[self.token(s), self.r, 0].astype(jnp.float32)
    return lambda s: ref[self.token(s), self.r, :].astype(jnp.float32)

  def load_dt(self, s):
    dtl = self.dtl_ref[self.token(s), self.r, :].astype(jnp.float32)
    return ce.softplus_and_slope(jnp.sum(self.w * dtl[None, :], axis=1) + self.bias, True)

  def access(self) -> ce.Access:
    load_u = None
    if self.x_ref is not None:
      load_u = lambda s: self.x_ref[self.token(s), :].astype(jnp.float32)
    return ce.Access(
      load_u=load_u,
      load_dt=self.load_dt,
      load_b=None if self.b_ref is None else self.load_proj(self.b_ref),
      load_c=None if self.c_ref is None else self.load_proj(self.c_ref),
    )

  def accumulate(self, ref):
    """Store into a pair map: route r = 0 writes the token, r = 1 adds to it."""

    def store(s, v):
      tok = self.token(s)
      if self.r == 0:
        ref[tok, :] = v
      else:
        ref[tok, :] = ref[tok, :] + v

    return store

  def store_proj(self, ref):
    def store(s, v):
      if self.plan.state.scalar:
        ref[self.token(s), self.r, 0] = v
      else:
        ref[self.token(s), self.r, :] = v

    return store


def _route(plan, r, refs, w_ref, bias_ref):
  return _Route(plan, r, refs, (w_ref[r], bias_ref[r]))


def _fwd_local_kernel(plan, cfg, x_ref, dtl_ref, b_ref, w_ref, a_ref, bias_ref, h_ref, dt_sum_ref):
  for r in range(2):
    io = _route(plan, r, (x_ref, dtl_ref, b_ref, None), w_ref, bias_ref).access()
    h, dt_sum = ce.chunk_end_state(plan.chunk, a_ref[r], plan.state, io, plan.lanes)
    h_ref[r] = h
    dt_sum_ref[r] = dt_sum


def _fwd_out_kernel(
  plan, cfg, x_ref, dtl_ref, b_ref, c_ref, w_ref, a_ref, d_skip_ref, bias_ref, h0_ref, y_ref
):
  for r in range(2):
    if r:  # route 1 adds to the tokens route 0 wrote (module docstring, "Memory order")
      plumbing.sync_program(cfg.interpret)
    route = _route(plan, r, (x_ref, dtl_ref, b_ref, c_ref), w_ref, bias_ref)
    ce.chunk_outputs(
      plan.chunk,
      a_ref[r],
      d_skip_ref[r],
      h0_ref[r],
      plan.state,
      route.access(),
      route.accumulate(y_ref),
    )


def _bwd_local_kernel(
  plan, cfg, dy_ref, dtl_ref, c_ref, w_ref, a_ref, bias_ref, carry_ref, dt_sum_ref
):
  for r in range(2):
    route = _route(plan, r, (None, dtl_ref, None, c_ref), w_ref, bias_ref)
    load_g = lambda s, route=route: dy_ref[route.token(s), :].astype(jnp.float32)
    carry, dt_sum = ce.chunk_adjoint_carry(
      plan.chunk, a_ref[r], plan.state, route.access(), load_g, plan.lanes
    )
    carry_ref[r] = carry
    dt_sum_ref[r] = dt_sum


def _bwd_kernel(
  plan,
  cfg,
  x_ref,
  dy_ref,
  dtl_ref,
  b_ref,
  c_ref,
  w_ref,
  a_ref,
  d_skip_ref,
  bias_ref,
  h0_ref,
  r_end_ref,
  dx_ref,
  ddtl_ref,
  db_ref,
  dc_ref,
  dw_ref,
  da_ref,
  dd_ref,
  dbias_ref,
  checkpoint_ref,
  replay_ref,
):
  for r in range(2):
    if r:  # route 1 adds to route 0's dx tokens and reuses the scratch slots
      plumbing.sync_program(cfg.interpret)
    route = _route(plan, r, (x_ref, dtl_ref, b_ref, c_ref), w_ref, bias_ref)
    w = w_ref[r]

    def emit_ddelta(s, d_pre, acc, route=route, w=w):
      tok = route.token(s)
      ddtl_ref[tok, route.r, :] = jnp.sum(d_pre[:, None] * w, axis=0)
      dtl = dtl_ref[tok, route.r, :].astype(jnp.float32)
      return acc + d_pre[:, None] * dtl[None, :]

    sink = ce.GradSinks(
      load_g=lambda s, route=route: dy_ref[route.token(s), :].astype(jnp.float32),
      store_du=route.accumulate(dx_ref),
      store_db=route.store_proj(db_ref),
      store_dc=route.store_proj(dc_ref),
      emit_ddelta=emit_ddelta,
      **plumbing.scratch_sinks(checkpoint_ref, replay_ref, cfg.interpret),
    )
    acc0 = jnp.zeros((plan.lanes, plan.padded_rank), jnp.float32)
    d_a, d_d, d_bias, d_w = ce.chunk_backward(
      plan.chunk,
      plan.sub,
      a_ref[r],
      d_skip_ref[r],
      h0_ref[r],
      r_end_ref[r],
      plan.state,
      route.access(),
      sink,
      plan.lanes,
      acc0,
    )
    da_ref[r] = d_a
    dd_ref[r] = d_d
    dbias_ref[r] = d_bias
    dw_ref[r] = d_w


def _call(plan: _Plan, cfg: _Config, kernel, name, args, in_specs, outs):
  kernel = functools.partial(kernel, plan, cfg)
  return plumbing.call_on_grid(
    plan, kernel, name, args, in_specs, outs, cfg.interpret, cfg.num_warps
  )


def _pass2(plan: _Plan, combine, local, dt_sum, rates):
  """The cross-chunk scan in route order (the reversed routes run their chunks backwards)."""
  decay = _flip_reversed_routes(plan.chunk_decay(dt_sum, rates))
  return _flip_reversed_routes(combine(_flip_reversed_routes(local), decay, axis=3))


def _forward(cfg: _Config, x, dt_low, b, c, dt_weights, A, D, bias):
  plan = _Plan.make(x, dt_low, b, cfg)
  inputs, specs = _Padded.make(plan, x, dt_low, b, c, dt_weights, A, D, bias), plan.input_specs()
  tail = plan.state_tail()
  h0 = jnp.zeros(plan.chunk_shape(tail).shape, jnp.float32)
  if plan.n_chunks > 1:
    names = ["x", "dt_low", "B", "dt_weights", "rates", "bias"]
    local = [[getattr(inputs, f) for f in names], [getattr(specs, f) for f in names]]
    name = "ss2d_fused_fwd_chunk_states"
    outs = [plan.chunk_output(tail), plan.chunk_output()]
    h_local, dt_sum = _call(plan, cfg, _fwd_local_kernel, name, *local, outs)
    h0 = _pass2(plan, ce.chunk_start_states, h_local, dt_sum, inputs.rates)
  args = [*inputs.values(), h0]
  y_pairs = _call(
    plan,
    cfg,
    _fwd_out_kernel,
    "ss2d_fused_fwd",
    args,
    [*specs.values(), plan.chunk_spec(tail)],
    [(plan.pair_map_spec(), plan.pair_map_shape())],
  )[0]
  y = plan.unmap(y_pairs[:, 0] + y_pairs[:, 1]).astype(cfg.out_dtype)
  return y, h0


def _backward(cfg: _Config, res, dy):
  x, dt_low, b, c, dt_weights, A, D, bias, h0 = res
  plan = _Plan.make(x, dt_low, b, cfg)
  inputs, specs = _Padded.make(plan, x, dt_low, b, c, dt_weights, A, D, bias), plan.input_specs()
  dys = plan.map(dy)
  tail = plan.state_tail()
  r_end = jnp.zeros_like(h0)
  if plan.n_chunks > 1:
    names = ["dt_low", "C", "dt_weights", "rates", "bias"]
    local_args = [dys, *[getattr(inputs, f) for f in names]]
    local_specs = [specs.x, *[getattr(specs, f) for f in names]]
    outs = [plan.chunk_output(tail), plan.chunk_output()]
    name = "ss2d_fused_bwd_chunk_carries"
    r_local, dt_sum = _call(plan, cfg, _bwd_local_kernel, name, local_args, local_specs, outs)
    r_end = _pass2(plan, ce.chunk_end_carries, r_local, dt_sum, inputs.rates)
  state_spec = plan.chunk_spec(tail)
  grad_outs = [
    (plan.pair_map_spec(), plan.pair_map_shape()),
    plan.token_partial(plan.padded_rank),
    plan.token_partial(plan.padded_n),
    plan.token_partial(plan.padded_n),
    plan.chunk_output((plan.padded_rank,)),
    plan.chunk_output(tail),
    plan.chunk_output(),
    plan.chunk_output(),
    *plan.backward_scratch(),
  ]
  args = [inputs.x, dys, *inputs.values()[1:], h0, r_end]
  arg_specs = [specs.x, specs.x, *specs.values()[1:], state_spec, state_spec]
  grads = _call(plan, cfg, _bwd_kernel, "ss2d_fused_bwd", args, arg_specs, grad_outs)
  dx_pairs, ddtl, db, dc, dw, da, dd, dbias, _, _ = grads
  k, d, length = K_DIRECTIONS, plan.d, plan.length

  def tokens_grad(g, width, ref):
    g = g.sum(axis=1)[:, :length].reshape(plan.batch, length, k, -1)
    return g[..., :width].astype(ref.dtype)

  def route_grad(g, ref):
    return g.sum(axis=(0, 3))[:, :, :d].reshape(ref.shape).astype(ref.dtype)

  d_a = da.sum(axis=(0, 3))[:, :, :d].reshape(k * d, -1)[:, : plan.n]
  d_w = dw.sum(axis=(0, 3))[:, :, :d, : plan.rank].reshape(k, d, plan.rank)
  return (
    plan.unmap(dx_pairs[:, 0] + dx_pairs[:, 1]).astype(x.dtype),
    tokens_grad(ddtl, plan.rank, dt_low),
    tokens_grad(db, plan.n, b),
    tokens_grad(dc, plan.n, c),
    d_w.astype(dt_weights.dtype),
    d_a.astype(A.dtype),
    route_grad(dd, D),
    route_grad(dbias, bias),
  )


_fused = plumbing.chunked_vjp(_forward, _backward)


def ss2d_scan_fused(
  x,
  x_proj_weight,
  dt_projs_weight,
  dt_projs_bias,
  A_logs,
  Ds,
  *,
  out_dtype=None,
  interpret=False,
  chunk_size=None,
  num_warps=None,
):
  """Fused SS2D core; arguments and result as `ss2d_core.ss2d_scan` (softplus on delta).

  Args:
    x: (batch, H, W, d) channels-last map after conv + SiLU.
    x_proj_weight: (K, R + 2N, d); dt_projs_weight: (K, d, R); dt_projs_bias: (K, d);
    A_logs: (K*d, N), N <= 16; Ds: (K*d,).
    out_dtype: dtype of the result (default x.dtype).
    interpret: run the kernels in Pallas interpret mode (CPU tests).
    chunk_size: target tokens per program (default 256; `pallas_plumbing.choose_chunk` rounds
      it, and the token sequence is zero-padded to whole chunks).
    num_warps: warps per program (default `chunk_engine.default_num_warps`: one per 32
      lanes, four times that for d_state 16); for measuring alternatives.
  Returns:
    (batch, H, W, d): the sum over the four routes of each route's scan, in row-major order.
  """
  batch, height, width, d = x.shape
  n, rank = A_logs.shape[1], dt_projs_weight.shape[2]
  plumbing.check_state_size(n)
  tokens = x.reshape(batch, height * width, d)
  x_dbl = jnp.einsum("bld,kcd->blkc", tokens, x_proj_weight.astype(x.dtype))
  dtl, b, c = jnp.split(x_dbl, [rank, rank + n], axis=3)
  cfg = _Config(
    height, width, chunk_size, jnp.dtype(out_dtype or x.dtype), bool(interpret), num_warps
  )
  y = _fused(
    cfg,
    tokens,
    dtl,
    b,
    c,
    dt_projs_weight,
    -jnp.exp(A_logs.astype(jnp.float32)),
    Ds,
    dt_projs_bias.reshape(-1),
  )
  return y.reshape(batch, height, width, d)
