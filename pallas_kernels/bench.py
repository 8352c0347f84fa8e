"""Selective-scan benchmark: DASS-small's four stage shapes and one long sequence.

  python -m pallas_kernels.bench [--batch 12] [--frames 1024] [--long-length 1048576]
                                 [--impl pallas|chunked] [--impl-ref associative] [--quick]
                                 [--dtype bfloat16] [--stages 1,2,3,4]
                                 [--matmul-precision highest|tensorfloat32|default]
                                 [--d-state 16] [--num-warps 4] [--chunk-size 128]

Stage i (0-3) of DASS-small at `--frames` input frames (128 mel bins, patch stride 4) is an
H x W = (32 / 2^i) x ceil(frames / 4 / 2^i) map with d = 96 * 2^i channels (PyTorch's
stride-2 convs round up), so the scan sees L = H * W (8192 / 4^i at 1024 frames; 32 x 257 =
8224 at stage 1 for 1028 frames, a length no chunk divides), K * D = 4 * d channels, N = 1.
The long shape is one sequence of `--long-length` tokens with `--long-channels` channels
(K = 4 groups, N = 1); `--long-length 0` leaves it out.

For each shape it prints the median time of the forward and of forward + backward (jit,
`block_until_ready`, after warm-up), the bytes moved by the minimal data flow
(formula printed with the table), the achieved GB/s and its share of the device's copy
bandwidth measured in the same run, and the speed-up over the reference implementation (a
reference that runs out of memory is reported as OOM). With `--impl pallas` or `chunked`,
a second table times the SS2D core per stage: the implementation's own route (Pallas: the
fused kernel; chunked: `ss2d_chunked`), its unfused route (cross-scan, projections, scan,
cross-merge as separate ops) and the reference implementation's unfused route.

Off GPU the Pallas kernels run in interpret mode (slow; the numbers only show that the
script works). `--quick` shrinks every shape for a CPU smoke run. Matmuls (the SS2D
projections) run at `--matmul-precision` (default highest: true fp32; tensorfloat32 is what
JAX's default precision gives fp32 matmuls on Ampere and newer GPUs). `--num-warps` and
`--chunk-size` run the Pallas kernels (the scan and the fused SS2D route) with other launch
parameters than their defaults, to measure the alternatives of BENCHMARKS.md's offline
compile table; `--d-state` sets N (16: AuM's state, whose default launch has 4 warps). The
exit status is 1 when any timing failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from pallas_kernels import pallas_scan, pallas_ss2d_fused, random_inputs
from pallas_kernels.cross_scan import K_DIRECTIONS
from pallas_kernels.dispatch import ScanImpl, selective_scan
from pallas_kernels.ss2d_core import ss2d_scan

MEL_BINS = 128
PATCH_STRIDE = 4
BASE_DIM = 96
N_STAGES = 4
D_STATE = 1

# --quick changes these defaults (flags given explicitly still win).
QUICK_DEFAULTS = dict(
  batch=1, frames=32, long_length=4096, long_channels=8, warmup=1, repeats=2, copy_mib=16
)

BYTES_NOTE = """\
Bytes moved (s_in = input itemsize, s_out = output itemsize; b batch, C = K*D channels,
K groups, N state size, L length):
  fwd      = (2*b*C*L + 2*b*K*N*L) * s_in + b*C*L * s_out
             reads u, delta, B, C; writes y
  bwd      = (2*b*C*L + 2*b*K*N*L) * s_in + b*C*L * s_out + (2*b*C*L + 2*b*K*N*L) * s_in
             reads u, delta, B, C, dy; writes du, ddelta, dB, dC
  fwd+bwd  = fwd + bwd (the GB/s of the fwd+bwd columns use this sum)
  A, D, delta_bias and their gradients are O(C*N) and left out."""


@dataclasses.dataclass(frozen=True)
class Shape:
  """A scan problem: u, delta (batch, K*d, L); B, C (batch, K, N, L); L = height * width."""

  name: str
  batch: int
  d: int
  height: int
  width: int
  n: int = D_STATE
  groups: int = K_DIRECTIONS

  @property
  def length(self) -> int:
    return self.height * self.width

  @property
  def channels(self) -> int:
    return self.groups * self.d

  def bytes_moved(self, in_dtype, out_dtype) -> tuple[int, int]:
    """(forward bytes, backward bytes) per the formula in BYTES_NOTE."""
    s_in, s_out = jnp.dtype(in_dtype).itemsize, jnp.dtype(out_dtype).itemsize
    seq = self.batch * self.channels * self.length
    proj = self.batch * self.groups * self.n * self.length
    inputs = (2 * seq + 2 * proj) * s_in
    return inputs + seq * s_out, 2 * inputs + seq * s_out


def dass_stages(
  batch: int, frames: int, stages=range(1, N_STAGES + 1), n: int = D_STATE
) -> list[Shape]:
  """SS2D stage shapes (numbered 1-4) of DASS-small for `frames` input frames.

  Each stride-2 conv (two in the patch embed, one per later stage) maps n to ceil(n / 2), so
  stage i has ceil(n / (4 * 2^(i-1))) rows and columns.
  """
  if frames < 1:
    raise ValueError(f"frames must be positive, got {frames}")
  side = lambda n, i: -(n // -(PATCH_STRIDE << (i - 1)))
  return [
    Shape(f"stage {i}", batch, BASE_DIM << (i - 1), side(MEL_BINS, i), side(frames, i), n)
    for i in stages
  ]


def scan_inputs(shape: Shape, dtype, key):
  """(u, delta, A, B, C, D, delta_bias) of `shape`, dt drawn as Mamba's dt_init."""
  return random_inputs.scan_inputs(
    key, shape.batch, shape.groups, shape.d, shape.n, shape.length, dtype
  )


def ss2d_inputs(shape: Shape, dtype, key):
  """(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds) of one SS2D block."""
  return random_inputs.ss2d_inputs(
    key, shape.batch, shape.height, shape.width, shape.d, shape.n, dtype=dtype
  )


def forward_and_step(fn):
  """jit(fn) and jit(fn's forward + vjp w.r.t. every argument, cotangent = last argument)."""

  def step(*args):
    y, vjp = jax.vjp(fn, *args[:-1])
    return y, vjp(args[-1].astype(y.dtype))

  return jax.jit(fn), jax.jit(step)


def median_seconds(fn, args, warmup: int, repeats: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _describe_error(err: Exception) -> str:
  text = str(err)
  if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
    return "OOM"
  return f"{type(err).__name__}: {text.splitlines()[0][:120] if text else ''}"


def timed_pair(fn, args, cotangent, warmup, repeats, errors: list[str], label: str):
  """(fwd seconds, fwd+bwd seconds); None for a part that failed (reason added to errors)."""
  fwd, step = forward_and_step(fn)
  results = []
  for part, call, call_args in (("fwd", fwd, args), ("fwd+bwd", step, (*args, cotangent))):
    try:
      results.append(median_seconds(call, call_args, warmup, repeats))
    except Exception as err:
      errors.append(f"{label} {part}: {_describe_error(err)}")
      results.append(None)
  return tuple(results)


def copy_bandwidth(n_bytes: int, warmup: int, repeats: int) -> float:
  """Bytes per second of a jitted device-to-device copy, counting read + write."""
  x = jnp.ones((n_bytes // 4,), jnp.float32)
  seconds = median_seconds(jax.jit(jnp.copy), (x,), warmup, repeats)
  return 2 * x.nbytes / seconds


def _ms(seconds):
  return "n/a" if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(ref, impl):
  return "n/a" if ref is None or impl is None else f"{ref / impl:.2f}x"


def _rate_cells(n_bytes, seconds, copy_bw):
  if seconds is None:
    return ["n/a", "n/a"]
  rate = n_bytes / seconds
  return [f"{rate / 1e9:.1f}", f"{100 * rate / copy_bw:.1f}%"]


def scan_table(shapes, args, dtype, copy_bw, errors) -> list[str]:
  """Markdown rows: impl vs reference on each shape, forward and forward + backward."""
  header = [
    "shape",
    "b",
    "K*D",
    "L",
    "N",
    "fwd ms",
    "fwd MB",
    "fwd GB/s",
    "fwd % copy",
    "ref fwd ms",
    "fwd speed-up",
    "fwd+bwd ms",
    "fwd+bwd MB",
    "fwd+bwd GB/s",
    "fwd+bwd % copy",
    "ref fwd+bwd ms",
    "fwd+bwd speed-up",
  ]
  rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  interpret = args.impl == ScanImpl.PALLAS.value and jax.default_backend() != "gpu"
  for i, shape in enumerate(shapes):
    inputs = scan_inputs(shape, dtype, jax.random.PRNGKey(i))
    cotangent = jax.random.normal(jax.random.PRNGKey(100 + i), inputs[0].shape, dtype)
    impl_fn = functools.partial(selective_scan, impl=args.impl, interpret=interpret)
    if kernel_options(args):
      impl_fn = functools.partial(
        pallas_scan.selective_scan, interpret=interpret, **kernel_options(args)
      )
    ref_fn = functools.partial(selective_scan, impl=args.impl_ref)
    fwd, step = timed_pair(
      impl_fn, inputs, cotangent, args.warmup, args.repeats, errors, f"{shape.name} {args.impl}"
    )
    ref_fwd, ref_step = timed_pair(
      ref_fn, inputs, cotangent, args.warmup, args.repeats, errors, f"{shape.name} {args.impl_ref}"
    )
    fwd_bytes, bwd_bytes = shape.bytes_moved(dtype, dtype)
    rows.append(
      "| "
      + " | ".join(
        [
          shape.name,
          str(shape.batch),
          str(shape.channels),
          str(shape.length),
          str(shape.n),
          _ms(fwd),
          f"{fwd_bytes / 1e6:.1f}",
          *_rate_cells(fwd_bytes, fwd, copy_bw),
          _ms(ref_fwd),
          _ratio(ref_fwd, fwd),
          _ms(step),
          f"{(fwd_bytes + bwd_bytes) / 1e6:.1f}",
          *_rate_cells(fwd_bytes + bwd_bytes, step, copy_bw),
          _ms(ref_step),
          _ratio(ref_step, step),
        ]
      )
      + " |"
    )
    del inputs, cotangent
  return rows


def ss2d_table(shapes, args, dtype, errors) -> list[str]:
  """Markdown rows: the SS2D core, the implementation's own route vs the unfused routes."""
  header = [
    "shape",
    "H x W",
    "d",
    f"{args.impl_ref} unfused fwd ms",
    "unfused fwd ms",
    "own route fwd ms",
    "fwd speed-up vs ref",
    f"{args.impl_ref} unfused fwd+bwd ms",
    "unfused fwd+bwd ms",
    "own route fwd+bwd ms",
    "fwd+bwd speed-up vs ref",
  ]
  rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  interpret = args.impl == ScanImpl.PALLAS.value and jax.default_backend() != "gpu"
  routes = {
    "ref": dict(impl=args.impl_ref, fused=False),
    "unfused": dict(impl=args.impl, interpret=interpret, fused=False),
    "own": dict(impl=args.impl, interpret=interpret, fused=True),
  }
  own = None
  if kernel_options(args):
    own = functools.partial(
      pallas_ss2d_fused.ss2d_scan_fused, interpret=interpret, **kernel_options(args)
    )
  for i, shape in enumerate(shapes):
    inputs = ss2d_inputs(shape, dtype, jax.random.PRNGKey(i))
    cotangent = jax.random.normal(jax.random.PRNGKey(100 + i), inputs[0].shape, dtype)
    times = {
      name: timed_pair(
        own if name == "own" and own else functools.partial(ss2d_scan, **kwargs),
        inputs,
        cotangent,
        args.warmup,
        args.repeats,
        errors,
        f"{shape.name} ss2d {name}",
      )
      for name, kwargs in routes.items()
    }
    rows.append(
      "| "
      + " | ".join(
        [
          shape.name,
          f"{shape.height} x {shape.width}",
          str(shape.d),
          *[_ms(times[name][0]) for name in routes],
          _ratio(times["ref"][0], times["own"][0]),
          *[_ms(times[name][1]) for name in routes],
          _ratio(times["ref"][1], times["own"][1]),
        ]
      )
      + " |"
    )
    del inputs, cotangent
  return rows


def kernel_options(args) -> dict:
  """--num-warps / --chunk-size for the Pallas kernels (empty when neither is given)."""
  options = dict(num_warps=args.num_warps, chunk_size=args.chunk_size)
  return {k: v for k, v in options.items() if v}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=12)
  parser.add_argument("--frames", type=int, default=1024)
  parser.add_argument(
    "--long-length", type=int, default=1 << 20, help="tokens of the long shape; 0 leaves it out"
  )
  parser.add_argument(
    "--long-channels", type=int, default=384, help="K*D of the long shape (a multiple of 4)"
  )
  parser.add_argument(
    "--impl",
    default=ScanImpl.PALLAS.value,
    choices=[i.value for i in ScanImpl if i is not ScanImpl.AUTO],
  )
  parser.add_argument(
    "--impl-ref",
    default=ScanImpl.ASSOCIATIVE.value,
    choices=[i.value for i in ScanImpl if i is not ScanImpl.AUTO],
  )
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument(
    "--d-state", type=int, default=D_STATE, help="state size N of every shape (AuM: 16)"
  )
  parser.add_argument(
    "--matmul-precision",
    default="highest",
    choices=["highest", "tensorfloat32", "default"],
    help="precision of the SS2D projections (jax.default_matmul_precision)",
  )
  parser.add_argument(
    "--num-warps",
    type=int,
    default=0,
    help="Pallas only: warps per program (default: one per 32 lanes); the unfused route keeps it",
  )
  parser.add_argument(
    "--chunk-size", type=int, default=0, help="Pallas only: target steps per program (256)"
  )
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument(
    "--copy-mib",
    type=int,
    default=1024,
    help="size of the buffer of the copy-bandwidth measurement",
  )
  parser.add_argument(
    "--stages", default="1,2,3,4", help="comma-separated DASS stages (1-4) to time"
  )
  parser.add_argument(
    "--quick", action="store_true", help=f"CPU smoke run; other defaults become {QUICK_DEFAULTS}"
  )
  if parser.parse_args(argv).quick:
    parser.set_defaults(**QUICK_DEFAULTS)
  args = parser.parse_args(argv)
  if kernel_options(args) and args.impl != ScanImpl.PALLAS.value:
    parser.error("--num-warps and --chunk-size apply to --impl pallas only")
  if args.long_channels % K_DIRECTIONS:
    parser.error(f"--long-channels must be a multiple of {K_DIRECTIONS}")
  args.stages = [int(s) for s in args.stages.split(",") if s]
  if not set(args.stages) <= set(range(1, N_STAGES + 1)):
    parser.error(f"--stages must name stages 1-{N_STAGES}, got {args.stages}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  dtype = jnp.dtype(args.dtype)
  device = jax.devices()[0]
  on_gpu = jax.default_backend() == "gpu"
  pallas = args.impl == ScanImpl.PALLAS.value
  own_ss2d_route = args.impl in (ScanImpl.PALLAS.value, ScanImpl.CHUNKED.value)
  shapes = dass_stages(args.batch, args.frames, args.stages, args.d_state)
  long_shapes = (
    [Shape("long", 1, args.long_channels // K_DIRECTIONS, 1, args.long_length, args.d_state)]
    if args.long_length
    else []
  )
  copy_bw = copy_bandwidth(args.copy_mib << 20, args.warmup, args.repeats)

  print("# Selective-scan benchmark")
  print(
    f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
    f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
  )
  print(
    f"impl {args.impl}{f' {kernel_options(args)}' if kernel_options(args) else ''} vs reference "
    f"{args.impl_ref}; dtype {args.dtype}; matmul precision {args.matmul_precision}; "
    f"DASS-small at batch {args.batch}, {args.frames} frames; median of {args.repeats} "
    f"runs after {args.warmup} warm-up"
  )
  if pallas and not on_gpu:
    print("note: off GPU the Pallas kernels run in interpret mode; their times mean nothing.")
  print(
    f"copy bandwidth: {copy_bw / 1e9:.1f} GB/s (jitted copy of {args.copy_mib} MiB, "
    "bytes = read + write)"
  )
  print(BYTES_NOTE)
  print()
  errors: list[str] = []
  precision = None if args.matmul_precision == "default" else args.matmul_precision
  with jax.default_matmul_precision(precision):
    print("\n".join(scan_table(shapes + long_shapes, args, dtype, copy_bw, errors)), flush=True)
    if own_ss2d_route and shapes:
      print()
      print(f"## SS2D core: {args.impl}'s own route vs the unfused routes")
      print("\n".join(ss2d_table(shapes, args, dtype, errors)))
  if errors:
    print("\nFailures (shown as n/a above):")
    print("\n".join(f"- {e}" for e in errors))
  return 1 if errors else 0


if __name__ == "__main__":
  sys.exit(main())
