"""One prepared GPU check: kernel tests, scan benchmark, DASS-small training throughput and the
longest single forward pass, written to one markdown report.

    scripts/gpu_check.sh REPORT.md               # one H100/H200, at most --budget-s (480 s)
    scripts/gpu_check.sh REPORT.md --dry-run     # any machine: tiny shapes, CPU, Pallas interpreted

Sections, run in this order and each appended to the report as soon as it ends (a run cut short
still leaves what it measured):

  1. GPU correctness tests: `pytest tests/test_pallas_gpu.py` with JAX_PLATFORMS=cuda;
  2. `python -m pallas_kernels.bench` (Pallas vs associative; DASS-small stages at batch
     12 x 1024 frames and one 2^20-token sequence), then the chunked scan on stage 1;
  3. environment: devices, versions, nvidia-smi's GPU line;
  4. DASS-small training throughput at batch 12 x 1024 frames: forward + backward + Adam
     (`benchmarks/train_step.py`), examples per second over --steps steps after compilation,
     for each dtype (float32, bfloat16) and scan (pallas, associative, chunked);
  5. the longest single DASS-small forward pass (batch 1, float32, scan `auto`) that fits on the
     device: XLA's memory analysis of two compiled lengths gives bytes per frame, the predicted
     longest length is run (20 % shorter after an out-of-memory error, three tries), and the
     longest that ran is reported with its time and the device's peak memory.

Sections 1-2 run in subprocesses before this process touches the GPU (JAX would otherwise hold
75 % of its memory). Each section gets the time left, capped at its share of --budget-s; one
that runs out is reported as cut. Imports jax, flax, optax and numpy (pytest for section 1):
never the data pipeline, the training script or torch, none of which an accelerator image needs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECONDS_PER_FRAME = 0.01  # 10 ms fbank hop
# Share of the budget each section may use at most (the rest of the budget carries over).
SHARES = {"tests": 0.3, "bench": 0.3, "throughput": 0.3, "longest": 0.2}


@dataclasses.dataclass(frozen=True)
class Plan:
  """The shapes of a run: the real check, or the tiny dry run."""

  model: dict  # DassConfig overrides of DassConfig.small()
  batch: int
  frames: int
  runs: tuple[tuple[str, str], ...]  # (dtype, scan_impl) of the throughput section
  bench_args: tuple[tuple[str, ...], ...]
  probe_frames: tuple[int, int]  # two lengths whose memory analysis is extrapolated
  platform: str


REAL = Plan(
  model={},
  batch=12,
  frames=1024,
  runs=tuple((d, s) for d in ("float32", "bfloat16") for s in ("pallas", "associative", "chunked")),
  bench_args=(("--repeats", "5"), ("--impl", "chunked", "--stages", "1", "--long-length", "0")),
  probe_frames=(1 << 15, 1 << 16),
  platform="cuda",
)
DRY = Plan(
  model=dict(num_classes=10, depths=(1, 1), dims=(8, 16)),
  batch=2,
  frames=64,
  runs=(("float32", "pallas"), ("bfloat16", "chunked")),
  bench_args=(("--quick", "--impl", "chunked", "--stages", "4", "--long-length", "0"),),
  probe_frames=(256, 512),
  platform="cpu",
)
DRY_MEMORY_BYTES = 64 << 20  # the "device memory" the dry run's longest-pass search fits into


class Report:
  """A markdown report written through to its file after every addition."""

  def __init__(self, path: Path):
    self.path, self.parts = path, []

  def add(self, text: str) -> int:
    """Appends a part; returns its index for `replace`."""
    self.parts.append("")
    self.replace(len(self.parts) - 1, text)
    print(text, flush=True)
    return len(self.parts) - 1

  def replace(self, index: int, text: str) -> None:
    self.parts[index] = text.rstrip() + "\n"
    self.path.write_text("\n".join(self.parts))


class Budget:
  def __init__(self, seconds: float):
    self.total, self.end = seconds, time.monotonic() + seconds

  def left(self) -> float:
    return max(0.0, self.end - time.monotonic())

  def for_section(self, name: str) -> float:
    return min(self.left(), SHARES[name] * self.total)


def run_subprocess(cmd, env_platform: str, timeout: float) -> tuple[str, str]:
  """(status, output) of a command run from the repository root."""
  env = dict(os.environ, JAX_PLATFORMS=env_platform, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  try:
    proc = subprocess.run(
      cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(timeout, 1)
    )
  except subprocess.TimeoutExpired as err:
    out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
    return f"cut after {timeout:.0f} s (time budget)", out
  return f"exit {proc.returncode}", proc.stdout + proc.stderr


def section_tests(report: Report, plan: Plan, budget: Budget) -> None:
  timeout = budget.for_section("tests")
  cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_pallas_gpu.py"]
  start = time.monotonic()
  status, out = run_subprocess(cmd, plan.platform, timeout)
  lines = out.strip().splitlines()
  summary = lines[-1] if lines else "(no output)"
  failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
  report.add(
    f"## 1. GPU correctness tests\n\n`JAX_PLATFORMS={plan.platform} python -m pytest -q "
    f"tests/test_pallas_gpu.py`: {status}, {time.monotonic() - start:.0f} s\n\n"
    f"    {summary}\n" + "".join(f"    {line}\n" for line in failures[:20])
  )


def section_bench(report: Report, plan: Plan, budget: Budget) -> None:
  report.add("## 2. Selective-scan benchmark (`python -m pallas_kernels.bench`)")
  share = budget.for_section("bench")
  for i, args in enumerate(plan.bench_args):
    timeout = min(budget.left(), share / (len(plan.bench_args) - i))
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pallas_kernels.bench", *args]
    status, out = run_subprocess(cmd, plan.platform, timeout)
    share -= time.monotonic() - start
    report.add(f"### `{' '.join(['python -m pallas_kernels.bench', *args])}`: {status}\n\n{out}")


def section_environment(report: Report, plan: Plan) -> None:
  import flax
  import jax
  import optax

  smi = "not found"
  with contextlib.suppress(OSError, subprocess.TimeoutExpired):
    smi = subprocess.run(
      ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=30,
    ).stdout.strip()
  devices = ", ".join(f"{d.device_kind} ({d.platform})" for d in jax.devices())
  report.add(
    "## 3. Environment\n\n"
    f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n"
    f"- devices: {devices}\n- nvidia-smi: {smi}\n"
    f"- jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
    f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
    f"{os.getloadavg()[0]:.1f}\n"
    f"- plan: {'dry run (tiny shapes, CPU)' if plan is DRY else 'full check'}"
  )


def attention_note(report: Report) -> None:
  """States which attention the ViT models (AST, Dasheng) get here ('auto', `dass_jax.attention`):
  cuDNN's fused kernel where the lowered AST-shaped call holds its custom call, else XLA's."""
  import jax
  import jax.numpy as jnp

  from dass_jax.attention import attention, resolve

  q = jax.ShapeDtypeStruct((1, 1214, 12, 64), jnp.float32)  # AST: 1214 tokens, 12 heads
  found = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    hlo = jax.jit(attention).lower(*[q.update(dtype=dtype)] * 3).as_text()
    found[dtype.dtype.name] = "cudnn" if "cudnn" in hlo else resolve("auto").replace("cudnn", "xla")
  report.add(f"Attention (`auto`, AST shape): {found}")


def _model(plan: Plan, **overrides):
  import jax

  from dass_jax.models import DASS, DassConfig

  interpret = jax.default_backend() != "gpu"
  config = DassConfig.small(**{**plan.model, "scan_interpret": interpret, **overrides})
  return DASS(config), config


def section_throughput(report: Report, plan: Plan, budget: Budget, steps: int) -> None:
  import jax
  import numpy as np
  from train_step import TrainStep  # benchmarks/train_step.py, beside this script

  share_end = time.monotonic() + budget.for_section("throughput")
  rows = []
  header = (
    f"## 4. DASS training throughput, batch {plan.batch} x {plan.frames} frames\n\n"
    f"Forward + backward + Adam, {steps} timed steps after one compiling step.\n\n"
    "| dtype | scan | compile + first step (s) | step (s) | examples / s |\n"
    "|---|---|---:|---:|---:|"
  )
  part = report.add(header)
  for dtype, impl in plan.runs:
    if time.monotonic() > share_end:
      rows.append(f"| {dtype} | {impl} | not run: time budget | | |")
      continue
    model, config = _model(plan, dtype=dtype, scan_impl=impl)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((plan.batch, plan.frames, config.num_mel_bins), dtype=np.float32)
    y = (rng.random((plan.batch, config.num_classes)) < 0.05).astype(np.float32)
    try:
      params = jax.jit(model.init)(jax.random.key(0), x[:1, :16])["params"]
      step = TrainStep(model, params)
      start = time.perf_counter()
      step(x, y)
      first = time.perf_counter() - start
      start = time.perf_counter()
      for _ in range(steps):
        step(x, y)
      per_step = (time.perf_counter() - start) / steps
      rows.append(
        f"| {dtype} | {impl} | {first:.1f} | {per_step:.3f} | {plan.batch / per_step:.1f} |"
      )
    except Exception as err:  # one failing configuration must not end the check
      rows.append(f"| {dtype} | {impl} | failed: {type(err).__name__}: {str(err)[:120]} | | |")
    report.replace(part, header + "\n" + "\n".join(rows))


def _memory_bytes(forward, params, frames: int, mel: int) -> int:
  """XLA's estimate of the memory of one compiled forward: arguments + outputs + temporaries."""
  import jax
  import jax.numpy as jnp

  x = jax.ShapeDtypeStruct((1, frames, mel), jnp.float32)
  stats = forward.lower(params, x).compile().memory_analysis()
  return stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes


def section_longest(report: Report, plan: Plan, budget: Budget) -> None:
  import jax
  import jax.numpy as jnp

  from pallas_kernels import resolve_impl

  share_end = time.monotonic() + budget.for_section("longest")
  model, config = _model(plan)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, config.num_mel_bins)))
  forward = jax.jit(model.apply)
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  limit = stats.get("bytes_limit", DRY_MEMORY_BYTES if plan is DRY else 0)
  (f1, f2), mel = plan.probe_frames, config.num_mel_bins
  b1, b2 = (_memory_bytes(forward, params, f, mel) for f in (f1, f2))
  per_frame = (b2 - b1) / (f2 - f1)
  frames = int((0.92 * limit - (b1 - per_frame * f1)) / per_frame) // 64 * 64
  lines = [
    f"## 5. Longest single DASS forward pass (batch 1, float32, scan "
    f"`{config.scan_impl}` = {resolve_impl(config.scan_impl).value})\n",
    f"Memory analysis: {b1 / 2**20:.0f} MiB at {f1} frames, {b2 / 2**20:.0f} MiB at {f2} "
    f"frames: {per_frame * 100 / 2**20:.2f} MiB per second of audio; device limit "
    f"{limit / 2**30:.1f} GiB; predicted longest {frames} frames.\n",
    "| frames | audio (h) | status | forward (s) | peak device memory (GiB) |",
    "|---:|---:|---|---:|---:|",
  ]
  best = None
  for _ in range(3):
    if frames < 16 or time.monotonic() > share_end:
      break
    x = jnp.zeros((1, frames, mel), jnp.float32)
    start = time.perf_counter()
    try:
      jax.block_until_ready(forward(params, x))
      status = "ran"
    except Exception as err:  # out of memory ends this try, not the check
      status = "out of memory" if "RESOURCE_EXHAUSTED" in str(err) else type(err).__name__
    seconds = time.perf_counter() - start
    peak = (device.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30
    hours = frames * SECONDS_PER_FRAME / 3600
    lines.append(f"| {frames} | {hours:.2f} | {status} | {seconds:.1f} | {peak:.1f} |")
    del x
    if status == "ran":
      best = (frames, hours, seconds)
      break
    frames = int(frames * 0.8) // 64 * 64
  if best:
    lines.append(
      f"\nLongest measured: {best[0]} frames ({best[1]:.2f} h of audio) in {best[2]:.1f} s."
    )
  report.add("\n".join(lines))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("report", type=Path, help="markdown file to write")
  parser.add_argument(
    "--dry-run", action="store_true", help="tiny shapes on CPU (Pallas interpreted)"
  )
  parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget (s)")
  parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
  args = parser.parse_args(argv)
  plan = DRY if args.dry_run else REAL
  if args.dry_run:
    os.environ["JAX_PLATFORMS"] = "cpu"
  else:
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  sys.path.insert(0, str(REPO / "benchmarks"))
  sys.path.insert(1, str(REPO))
  budget = Budget(args.budget_s)
  report = Report(args.report)
  report.add(
    f"# GPU check ({'dry run' if args.dry_run else 'full'})\n\n"
    f"`scripts/gpu_check.sh {args.report}{' --dry-run' if args.dry_run else ''}`, budget "
    f"{args.budget_s:.0f} s."
  )
  section_tests(report, plan, budget)
  section_bench(report, plan, budget)
  section_environment(report, plan)
  attention_note(report)
  section_throughput(report, plan, budget, args.steps if not args.dry_run else 2)
  section_longest(report, plan, budget)
  report.add(f"Total {args.budget_s - budget.left():.0f} s of the {args.budget_s:.0f} s budget.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
