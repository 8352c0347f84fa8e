"""The Triton kernels of a computation lowered for CUDA, read back from its StableHLO.

Lowering runs in Python, so a CPU-only machine can lower for a GPU it does not have:

    lowered = lower_for("cuda", jax.value_and_grad(loss), *args)   # args: arrays or shapes
    for call in triton_calls(lowered):
      print(call.name, call.grid, call.num_warps, len(ttir_text(call)))

Each Triton-backed `pallas_call` becomes a `stablehlo.custom_call @__gpu$xla.gpu.triton` whose
`mhlo.backend_config` dictionary holds the kernel's `name`, its grid (`grid_x/y/z`),
`num_warps`, `num_stages` and `ir`: the kernel's Triton module (TTIR) as MLIR bytecode, which
XLA compiles with its own Triton when the executable is built on a GPU. `ttir_text` re-prints
that bytecode as text with jaxlib's own Triton dialect, the form a `triton` wheel can parse
(its bytecode reader is tied to its own attribute layout); `benchmarks/offline_compile.py`
compiles that text to PTX and cubin with the pinned `triton` of a separate environment.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
from jaxlib.mlir import ir

from pallas_kernels import pallas_scan, pallas_ss2d_fused
from pallas_kernels.cross_scan import K_DIRECTIONS

TRITON_TARGET = "__gpu$xla.gpu.triton"


@dataclasses.dataclass(frozen=True)
class TritonCall:
  """One Triton kernel launch of a lowered computation."""

  name: str
  grid: tuple[int, int, int]
  num_warps: int
  num_stages: int
  ir: bytes  # the TTIR module as MLIR bytecode

  @property
  def programs(self) -> int:
    return self.grid[0] * self.grid[1] * self.grid[2]

  @property
  def digest(self) -> str:
    """A short hash of the module: equal kernels (same code and constants) share it."""
    return hashlib.sha256(self.ir).hexdigest()[:12]


def _spec(shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def _value_and_all_grads(fn, n_args: int):
  def loss(*args):
    return jnp.sum(fn(*args).astype(jnp.float32))

  return jax.value_and_grad(loss, argnums=tuple(range(n_args)))


def ss2d_kernel_call(batch, height, width, d, n, rank, dtype, chunk_size=None):
  """(fn, abstract args): the fused SS2D core's output sum and its gradients in all six
  inputs, so that lowering it emits every forward and backward kernel of the family."""
  args = [
    _spec((batch, height, width, d), dtype),
    _spec((K_DIRECTIONS, rank + 2 * n, d)),
    _spec((K_DIRECTIONS, d, rank)),
    _spec((K_DIRECTIONS, d)),
    _spec((K_DIRECTIONS * d, n)),
    _spec((K_DIRECTIONS * d,)),
  ]
  core = lambda *a: pallas_ss2d_fused.ss2d_scan_fused(*a, chunk_size=chunk_size)
  return _value_and_all_grads(core, len(args)), args


def scan_kernel_call(batch, groups, d, n, length, dtype, chunk_size=None):
  """(fn, abstract args): the plain selective scan's output sum and its seven gradients."""
  ch = groups * d
  args = [
    _spec((batch, ch, length), dtype),
    _spec((batch, ch, length), dtype),
    _spec((ch, n)),
    _spec((batch, groups, n, length), dtype),
    _spec((batch, groups, n, length), dtype),
    _spec((ch,)),
    _spec((ch,)),
  ]
  scan = lambda *a: pallas_scan.selective_scan(*a, chunk_size=chunk_size)
  return _value_and_all_grads(scan, len(args)), args


def lower_for(platform: str, fn, *args):
  """jit(fn) traced on `args` (arrays or jax.ShapeDtypeStruct) and lowered for `platform`."""
  return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,))


def _walk(op, found: list) -> None:
  for region in op.regions:
    for block in region.blocks:
      for inner in block.operations:
        if inner.operation.name == "stablehlo.custom_call":
          target = ir.StringAttr(inner.attributes["call_target_name"]).value
          if target == TRITON_TARGET:
            found.append(inner)
        _walk(inner.operation, found)


def triton_calls(lowered) -> list[TritonCall]:
  """The Triton custom calls of a lowered computation, in program order."""
  ops: list = []
  module = lowered.compiler_ir("stablehlo")
  with module.context:
    _walk(module.operation, ops)
    calls = []
    for op in ops:
      config = ir.DictAttr(op.attributes["mhlo.backend_config"])
      integer = lambda key, config=config: ir.IntegerAttr(config[key]).value
      calls.append(
        TritonCall(
          name=ir.StringAttr(config["name"]).value,
          grid=(integer("grid_x"), integer("grid_y"), integer("grid_z")),
          num_warps=integer("num_warps"),
          num_stages=integer("num_stages"),
          ir=ir.StringAttr(config["ir"]).value_bytes,
        )
      )
  return calls


def ttir_text(call: TritonCall) -> str:
  """The kernel's TTIR as text, parsed and printed by jaxlib's Triton dialect.

  The context is the one Pallas lowers in (JAX's upstream dialects, e.g. `gpu` for the
  barriers, plus Triton's); those are JAX internals, used by this tooling only.
  """
  from jax._src.interpreters import mlir as jax_mlir
  from jaxlib.mlir._mlir_libs import _triton_ext

  context = jax_mlir.JaxIrContext()
  context.append_dialect_registry(jax_mlir.upstream_dialects)
  _triton_ext.register_dialect(context)
  context.load_all_available_dialects()
  with context:
    module = ir.Module.parse(call.ir)
    return module.operation.get_asm(enable_debug_info=False)
