"""The self-check behind `impl="auto"` on a GPU: run the Pallas kernel once, trust it after.

`auto` picks the Pallas kernel on NVIDIA GPUs that it supports (`dispatch`), a kernel that no
CPU can run (interpret mode hides races) and that a new JAX, Triton or driver could miscompile.
So the first time a process resolves `auto` to the kernel for a shape family, it compiles the
kernel on a small input of that family and compares its output and all its input gradients with
the chunked scan (plain JAX, no Pallas). A kernel that fails to compile or disagrees makes
`auto` fall back to the chunked scan for that family for the rest of the process, with one
`RuntimeWarning`; `DASS_SCAN_IMPL` (`dispatch.IMPL_ENV`) skips the check and forces a choice.

A family is what changes the kernel's code, not its size: which kernel (`scan`, the plain
selective scan; `ss2d`, the fused four-route SS2D core), the input dtype, and the state size N
padded to a power of two (1 for DASS, 16 for AuM). The check input is small (40 channels per
group: one full and one padded lane block; 300 steps: two chunks of 152 with 4 padded steps),
so the check costs one compilation of the forward and backward kernels of each family used.

Tolerances (max |kernel - chunked| / max |chunked|): 1e-3 for float32, 5e-2 for bfloat16
inputs. Both sides run the same fp32 math (projections at "highest" matmul precision), so a
correct kernel differs by rounding only: on the check inputs, in interpret mode, <= 6.2e-7
(fp32) and <= 5.7e-3 (bf16: the bf16 outputs and gradients are rounded) over the output and
every gradient of the four families DASS and AuM use. The check is there to catch a wrong
kernel (a miscompile or a race gives errors of order one), not to grade rounding: 1e-3 is
over 1000x the fp32 rounding and 5e-2 ~9x the bf16 one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import chunk_engine, chunked_scan, pallas_scan, pallas_ss2d_fused, ss2d_chunked
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.random_inputs import SCAN_ARGS, SS2D_ARGS

KERNELS = ("scan", "ss2d")
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}
GROUPS, CHANNELS, LENGTH, MAP = 2, 40, 300, (6, 50)  # check input (MAP: H x W = LENGTH tokens)
INTERPRET = False  # tests set this to run the check's kernels in interpret mode on CPU


@dataclasses.dataclass(frozen=True)
class Family:
  """What changes a kernel's code: kernel ("scan" or "ss2d"), input dtype, padded state size."""

  kernel: str
  dtype: str
  n: int

  @classmethod
  def of(cls, kernel: str, x, n: int) -> Family:
    """The family of a call of `kernel` on input x (any array with a dtype) with d_state n."""
    if kernel not in KERNELS:
      raise ValueError(f"unknown kernel {kernel!r}; one of {KERNELS}")
    return cls(kernel, jnp.dtype(x.dtype).name, chunk_engine.next_power_of_2(n))

  def __str__(self) -> str:
    return f"{self.kernel} kernel, {self.dtype}, N={self.n}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
  ok: bool
  reason: str  # "max error e (tolerance t)" or the exception that stopped the kernel
  seconds: float


def _inputs(family: Family):
  """Check inputs of the family as numpy arrays (concrete even while a caller traces)."""
  rng = np.random.default_rng(0)
  dtype = jnp.dtype(family.dtype)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  n = family.n
  if family.kernel == "scan":
    ch = GROUPS * CHANNELS
    dt = rng.uniform(0.05, 1.0, ch)
    args = (
      normal(1, ch, LENGTH).astype(dtype),
      (0.5 * normal(1, ch, LENGTH)).astype(dtype),
      -np.exp(0.5 * normal(ch, n)),
      normal(1, GROUPS, n, LENGTH).astype(dtype),
      normal(1, GROUPS, n, LENGTH).astype(dtype),
      normal(ch),
      (dt + np.log(-np.expm1(-dt))).astype(np.float32),  # softplus^-1 of dt in [0.05, 1]
    )
  else:
    rank, d = 3, CHANNELS
    dt = rng.uniform(0.05, 1.0, (K_DIRECTIONS, d))
    args = (
      normal(1, *MAP, d).astype(dtype),
      normal(K_DIRECTIONS, rank + 2 * n, d) / np.sqrt(d),
      normal(K_DIRECTIONS, d, rank) / np.sqrt(rank),
      (dt + np.log(-np.expm1(-dt))).astype(np.float32),
      0.5 * normal(K_DIRECTIONS * d, n),
      1.0 + 0.1 * normal(K_DIRECTIONS * d),
    )
  return args, normal(*args[0].shape)


def _implementations(family: Family):
  """(kernel, chunked) functions of the family's arguments."""
  if family.kernel == "scan":
    kernel = lambda *a: pallas_scan.selective_scan(*a, interpret=INTERPRET)
    return kernel, chunked_scan.selective_scan_chunked
  kernel = lambda *a: pallas_ss2d_fused.ss2d_scan_fused(*a, interpret=INTERPRET)
  return kernel, ss2d_chunked.ss2d_scan_chunked


def _values_and_grads(fn, args, cotangent):
  def run(*a):
    y, vjp = jax.vjp(fn, *a)
    return y, vjp(jnp.asarray(cotangent).astype(y.dtype))

  return jax.tree.map(np.asarray, jax.jit(run)(*args))


def _max_error(got, want) -> float:
  got, want = (np.asarray(x, np.float64) for x in (got, want))
  if not np.all(np.isfinite(got)):
    return float("inf")
  return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _compare(family: Family) -> str | None:
  """None if the kernel agrees with the chunked scan, else why not."""
  args, cotangent = _inputs(family)
  kernel, chunked = _implementations(family)
  with jax.default_matmul_precision("highest"):
    got = _values_and_grads(kernel, args, cotangent)
    want = _values_and_grads(chunked, args, cotangent)
  arg_names = SCAN_ARGS if family.kernel == "scan" else SS2D_ARGS
  tol = TOLERANCE[family.dtype]
  for name, g, w in zip(
    ["output", *(f"grad {a}" for a in arg_names)], jax.tree.leaves(got), jax.tree.leaves(want)
  ):
    error = _max_error(g, w)
    if not error <= tol:
      return f"{name} differs from the chunked scan by {error:.2g} (tolerance {tol})"
  return None


@functools.cache
def verify(family: Family) -> CheckResult:
  """Checks the family's kernel once per process (cached); warns once if it fails.

  `auto` is resolved while the model is traced (under `jit`, `shard_map`, a mesh), so the
  check runs in a thread of its own: JAX's trace and configuration state is per thread, and
  there the check compiles and runs its small input eagerly on the default device.
  """
  start = time.perf_counter()
  try:
    with concurrent.futures.ThreadPoolExecutor(1, "dass-scan-self-check") as pool:
      problem = pool.submit(_compare, family).result()
  except Exception as err:  # any failure to lower, compile or run means: do not use it
    problem = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err) else ''}"
  result = CheckResult(problem is None, problem or "agrees", time.perf_counter() - start)
  if not result.ok:
    warnings.warn(
      f"selective scan: the Pallas {family} failed its self-check ({result.reason}); "
      "impl='auto' uses the chunked scan for it in this process. DASS_SCAN_IMPL=pallas forces "
      "the kernel, DASS_SCAN_IMPL=chunked skips the check.",
      RuntimeWarning,
      stacklevel=2,
    )
  return result
