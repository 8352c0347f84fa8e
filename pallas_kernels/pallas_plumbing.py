"""What the two Pallas kernel families share outside their kernel bodies.

`pallas_scan` (the plain selective scan) and `pallas_ss2d_fused` (the four-route SS2D core)
run the same chunked passes (`chunk_engine`) over the same kind of grid: (batch,
channel groups x channel blocks, chunks), where a channel block is `lanes` channels of one
group (an SS2D route pair in the fused kernel). This module holds that grid's geometry, the
`pallas_call` helper, the backward's two scratch buffers and the `custom_vjp` wiring; each
kernel module keeps only its own layouts and kernel bodies.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels import chunk_engine as ce

DEFAULT_CHUNK = 256
CHUNK_ALIGN = 8  # chunk lengths are multiples of this (of the target when it is smaller)
MAX_STATE = 16  # the largest d_state N the kernels take (padded to a power of two inside)


def check_state_size(n: int) -> None:
  if n > MAX_STATE:
    raise ValueError(f"d_state N={n} > {MAX_STATE} is not supported by the Pallas kernels")


def choose_chunk(length: int, target: int) -> int:
  """Steps per chunk T for a sequence of `length` steps, about `target` steps per program.

  ceil(L / target) chunks of T = ceil(L / chunks) steps, T rounded up to a multiple of 8 (of
  the target, when that is smaller) so that the backward's sub-chunk length (a divisor of T,
  `chunk_engine.sub_chunk`) can stay near sqrt(T). The kernels zero-pad the sequence to
  ceil(L / T) * T steps: fewer than 8 padded steps per chunk (2.7 % at DASS stage 1 for 1028
  frames, L = 8224: 33 chunks of 256). There is no whole-length fallback: a length with no
  good divisor (a prime, or 32 x 257 tokens) still runs ~L / target programs per channel
  block instead of one.
  """
  if length < 1 or target < 1:
    raise ValueError(f"length {length} and chunk target {target} must be positive")
  target = min(target, length)
  align = min(CHUNK_ALIGN, target)
  chunk = -(-length // -(-length // target))
  return -(-chunk // align) * align


def sync_program(interpret: bool) -> None:
  """A barrier over the threads of one grid program that also orders their memory accesses.

  The kernels keep a few values in global memory that the same program writes and then
  reads back (the backward's checkpoint and replay slots, the route pairs' partial maps).
  Which thread of the program loads or stores each element is Triton's layout choice, and a
  load's layout need not equal the store's; so every such write -> read (and read ->
  overwrite) is separated by this barrier. On CUDA it is `bar.sync` (Triton-Pallas
  `debug_barrier` -> `gpu.barrier`), which makes all global and shared memory accesses that
  the block's threads made before it visible to all of them after it (the CUDA programming
  guide's guarantee for `__syncthreads`, PTX's `barrier.cta`). Triton emits every global
  load and store as `asm sideeffect` (checked in the compiled LLVM IR by
  `benchmarks/offline_compile.py`), so LLVM keeps them in program order around the barrier.
  Interpret mode runs a program's steps one after another, so there it is a no-op (and the
  primitive has no CPU rule).
  """
  if not interpret:
    from jax.experimental.pallas import triton as pltriton

    pltriton.debug_barrier()


@dataclasses.dataclass(frozen=True)
class LaneGrid:
  """Static geometry shared by the kernels: channel blocks of `lanes`, padded sizes, chunks.

  Grid program (b, j, c) owns batch row b, time chunk c and channel block
  j % n_blocks of channel group j // n_blocks. Channels per group are padded to a multiple
  of `lanes` and the state size to a power of two, both with zeros (exact: padded lanes and
  states carry zeros through every pass).
  """

  batch: int
  groups: int  # channel groups on the grid's second axis
  d: int  # channels per group
  n: int  # state size N
  chunk: int  # time steps per program
  n_chunks: int

  @property
  def lanes(self) -> int:
    return ce.lanes_for(self.d)

  @property
  def padded_d(self) -> int:
    return -(-self.d // self.lanes) * self.lanes

  @property
  def padded_n(self) -> int:
    return ce.next_power_of_2(self.n)

  @property
  def n_blocks(self) -> int:
    return self.padded_d // self.lanes

  @property
  def grid(self):
    return (self.batch, self.groups * self.n_blocks, self.n_chunks)

  def group_and_block(self, j):
    """Grid index j -> (channel group, channel block)."""
    return j // self.n_blocks, j % self.n_blocks

  @property
  def sub(self) -> int:
    return ce.sub_chunk(self.chunk)

  @property
  def state(self) -> ce.StateShape:
    return ce.StateShape(self.padded_n)

  def state_tail(self) -> tuple[int, ...]:
    """Trailing axes of a state: () for N == 1 (the DASS fast path), else (padded N,)."""
    return () if self.state.scalar else (self.padded_n,)

  def scratch(self, slots: int):
    """A backward scratch of `slots` states per program: (spec, shape)."""
    tail = self.state_tail()
    spec = pl.BlockSpec(
      (None, None, slots, self.lanes, *tail),
      lambda b, j, c: (
        b,
        self.group_and_block(j)[0],
        c,
        self.group_and_block(j)[1],
        *[0] * len(tail),
      ),
    )
    shape = (self.batch, self.groups, self.n_chunks * slots, self.padded_d, *tail)
    return spec, jax.ShapeDtypeStruct(shape, jnp.float32)

  def backward_scratch(self):
    """The two scratch outputs of the backward kernel: sub-chunk checkpoints, replayed states."""
    return [self.scratch(self.chunk // self.sub), self.scratch(self.sub)]


def scratch_sinks(checkpoint_ref, replay_ref, interpret: bool) -> dict:
  """`GradSinks` fields over the backward's two scratch refs (see `chunk_engine.GradSinks`).

  Both refs are the program's own blocks; `sync` (`sync_program`) orders their writes and
  reads across the program's threads.
  """

  def store_checkpoint(i, h):
    checkpoint_ref[i] = h

  def store_replayed(s, h):
    replay_ref[s] = h

  return dict(
    store_ckpt=store_checkpoint,
    load_ckpt=lambda i: checkpoint_ref[i],
    store_h=store_replayed,
    load_h=lambda s: replay_ref[s],
    sync=lambda: sync_program(interpret),
  )


def call_on_grid(
  grid: LaneGrid, kernel, name: str, args, in_specs, outs, interpret: bool, num_warps=None
):
  """Runs `kernel` over the grid; outs is a list of (BlockSpec, ShapeDtypeStruct).

  num_warps: warps per program (None: `chunk_engine.default_num_warps`).
  """
  num_warps = num_warps or ce.default_num_warps(grid.lanes, grid.padded_n)
  return pl.pallas_call(
    kernel,
    grid=grid.grid,
    in_specs=in_specs,
    out_specs=[spec for spec, _ in outs],
    out_shape=[shape for _, shape in outs],
    compiler_params=ce.compiler_params(num_warps),
    interpret=interpret,
    name=name,
  )(*args)


def chunked_vjp(forward, backward):
  """A `custom_vjp` function f(config, *inputs) from the kernel family's two passes.

  forward(config, *inputs) -> (y, chunk start states); the residuals are the inputs and those
  states. backward(config, residuals, dy) -> the inputs' cotangents. `config` is static.
  """

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def fn(config, *inputs):
    return forward(config, *inputs)[0]

  def fn_fwd(config, *inputs):
    y, starts = forward(config, *inputs)
    return y, (*inputs, starts)

  fn.defvjp(fn_fwd, backward)
  return fn
