"""One prepared GPU check: kernel tests, scan benchmarks, DASS-small training throughput and the
longest single forward pass, written to one markdown report.

    scripts/gpu_check.sh REPORT.md               # one H100/H200, at most --budget-s (540 s)
    scripts/gpu_check.sh REPORT.md --dry-run     # any machine: tiny shapes, CPU, Pallas interpreted

Sections, run in this order and each written to the report while it runs (a run cut short still
leaves what it measured):

  1. GPU correctness tests: `pytest -v -rA tests/test_pallas_gpu.py` with JAX_PLATFORMS=cuda;
     every test's result is written to REPORT.tests.log as it finishes (and REPORT.junit.xml at
     the end), and the report's section lists the failures so far every few seconds;
  2. `python -m pallas_kernels.bench` at "highest" matmul precision: Pallas vs associative
     (DASS-small stages at batch 12 x 1024 frames, one 2^20-token sequence), stage 1 at 1028
     frames (32 x 257 tokens: padded chunks), the chunked scan on stage 1, and the kernels'
     launch alternatives (4 warps at stages 3-4, chunks of 128 at stage 1, d_state 16 with 4
     warps and with 1);
  3. environment: devices, versions, nvidia-smi's GPU line, and what `auto` resolves to, with
     the kernel self-check of each shape family (`pallas_kernels.kernel_check`) and its time;
  4. DASS-small training throughput at batch 12 x 1024 frames: forward + backward + Adam
     (`benchmarks/train_step.py`), examples per second over --steps steps after compilation,
     per row: fp32(highest) (float32, "highest" matmul precision), TF32 (float32 at
     "tensorfloat32", what JAX's default gives fp32 matmuls on this GPU), bf16 (bfloat16), and
     scan (pallas, chunked, associative);
  5. the longest single DASS-small forward pass (batch 1, float32, scan `auto`) that fits on the
     device: XLA's memory analysis of two compiled lengths gives bytes per frame, the predicted
     longest length is run (20 % shorter after an out-of-memory error, three tries), and the
     longest that ran is reported with its time and the device's peak memory.

Exit status: 0 only if every section ran to its end without a failure (a failed or erroring
test, a benchmark timing that failed, a throughput row that failed or did not fit in the time
budget, a section cut by the budget); 1 otherwise. The report's last line names them.

Sections 1-2 run in subprocesses before this process touches the GPU (JAX would otherwise hold
75 % of its memory). Each section gets the time left, capped at its share of --budget-s; one
that runs out is reported as cut. Imports jax, flax, optax and numpy (pytest for section 1):
never orbax, the data pipeline, the training script or torch, none of which an accelerator
image needs. `--sections` and `--tests` run a part of the check (and let its own tests make it
fail on purpose).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECONDS_PER_FRAME = 0.01  # 10 ms fbank hop
# Share of the budget each section may use at most (the rest of the budget carries over).
SHARES = {"tests": 0.3, "bench": 0.35, "throughput": 0.3, "longest": 0.15}
SECTIONS = ("tests", "bench", "environment", "throughput", "longest")
GPU_TESTS = "tests/test_pallas_gpu.py"
# Throughput rows: name -> (dtype, matmul precision).
PRECISION_ROWS = {
  "fp32(highest)": ("float32", "highest"),
  "TF32": ("float32", "tensorfloat32"),
  "bf16": ("bfloat16", "highest"),
}
RESULT_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", re.M)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The shapes of a run: the real check, or the tiny dry run."""

  model: dict  # DassConfig overrides of DassConfig.small()
  batch: int
  frames: int
  runs: tuple[tuple[str, str], ...]  # (PRECISION_ROWS name, scan_impl) of the throughput section
  bench_runs: tuple[tuple[float, tuple[str, ...]], ...]  # (weight in the section's time, args)
  probe_frames: tuple[int, int]  # two lengths whose memory analysis is extrapolated
  platform: str


REAL = Plan(
  model={},
  batch=12,
  frames=1024,
  # The default configuration first (float32 at JAX's default precision: TF32), each scan.
  runs=(
    ("TF32", "pallas"),
    ("TF32", "chunked"),
    ("TF32", "associative"),
    ("bf16", "pallas"),
    ("bf16", "chunked"),
    ("fp32(highest)", "pallas"),
  ),
  bench_runs=tuple(
    (weight, tuple(args.split()))
    for weight, args in (
      (3, "--repeats 5"),
      # A length no chunk divides: stage 1 at 1028 frames, 33 padded chunks.
      (1, "--frames 1028 --stages 1 --long-length 0 --repeats 5"),
      # auto's fallback on GPU.
      (1, "--impl chunked --stages 1 --long-length 0"),
      # The launch choices of BENCHMARKS.md's offline compile table against their
      # alternatives: 4 warps where the fused backward is register-bound (stages 3-4, default
      # 1); half-length chunks (twice the programs) where parallelism binds (stage 1); AuM's
      # d_state 16 with its default 4 warps, then with 1.
      (1, "--stages 3,4 --long-length 0 --repeats 5 --num-warps 4"),
      (1, "--stages 1 --long-length 0 --repeats 5 --chunk-size 128"),
      (1, "--stages 1 --long-length 0 --repeats 5 --d-state 16"),
      (1, "--stages 1 --long-length 0 --repeats 5 --d-state 16 --num-warps 1"),
    )
  ),
  probe_frames=(1 << 15, 1 << 16),
  platform="cuda",
)
DRY = Plan(
  model=dict(num_classes=10, depths=(1, 1), dims=(8, 16)),
  batch=2,
  frames=64,
  runs=(("fp32(highest)", "pallas"), ("bf16", "chunked")),
  bench_runs=((1, ("--quick", "--impl", "chunked", "--stages", "4", "--long-length", "0")),),
  probe_frames=(256, 512),
  platform="cpu",
)
DRY_MEMORY_BYTES = 64 << 20  # the "device memory" the dry run's longest-pass search fits into


class Report:
  """A markdown report written through to its file after every addition."""

  def __init__(self, path: Path):
    self.path, self.parts = path, []
    self.problems: list[str] = []  # failed or cut sections and rows: the exit status

  def add(self, text: str) -> int:
    """Appends a part; returns its index for `replace`."""
    self.parts.append("")
    self.replace(len(self.parts) - 1, text)
    print(text, flush=True)
    return len(self.parts) - 1

  def replace(self, index: int, text: str) -> None:
    self.parts[index] = text.rstrip() + "\n"
    self.path.write_text("\n".join(self.parts))

  def problem(self, what: str) -> None:
    self.problems.append(what)


class Budget:
  def __init__(self, seconds: float):
    self.total, self.end = seconds, time.monotonic() + seconds

  def left(self) -> float:
    return max(0.0, self.end - time.monotonic())

  def for_section(self, name: str) -> float:
    return min(self.left(), SHARES[name] * self.total)


def _subprocess_env(env_platform: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS=env_platform, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  return env


def run_streaming(cmd, env_platform: str, timeout: float, log: Path, on_output=None):
  """Runs cmd with its output going to `log` as it is written; returns (status, output).

  Every ~2 s (and at the end) `on_output(text so far)` is called. At the timeout the process
  group is killed and the status says the run was cut; what it wrote is kept.
  """
  with log.open("w") as sink:
    proc = subprocess.Popen(
      cmd,
      cwd=REPO,
      env=_subprocess_env(env_platform),
      stdout=sink,
      stderr=subprocess.STDOUT,
      start_new_session=True,
    )
    end, status = time.monotonic() + max(timeout, 1), None
    while status is None:
      try:
        status = f"exit {proc.wait(timeout=2)}"
      except subprocess.TimeoutExpired:
        if time.monotonic() > end:
          with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
          proc.wait()
          status = f"cut after {timeout:.0f} s (time budget)"
      if on_output:
        on_output(log.read_text(errors="replace"))
  return status, log.read_text(errors="replace")


def section_tests(report: Report, plan: Plan, budget: Budget, tests: str) -> None:
  timeout = budget.for_section("tests")
  log = report.path.with_suffix(".tests.log")
  junit = report.path.with_suffix(".junit.xml")
  cmd = [sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider"]
  cmd += [f"--junitxml={junit}", tests]
  title = (
    f"## 1. GPU correctness tests\n\n`JAX_PLATFORMS={plan.platform} python -m pytest -v -rA "
    f"{tests}`; live log {log.name}, junit {junit.name}\n\n"
  )
  part = report.add(title + "running")
  start = time.monotonic()

  def summary(output: str, status: str) -> str:
    results = RESULT_LINE.findall(output)
    counts = {}
    for _, outcome in results:
      counts[outcome] = counts.get(outcome, 0) + 1
    bad = [f"    {outcome} {test}\n" for test, outcome in results if outcome in ("FAILED", "ERROR")]
    tally = ", ".join(f"{n} {outcome.lower()}" for outcome, n in sorted(counts.items())) or "none"
    tail = [line for line in output.strip().splitlines() if line.startswith("=")][-1:]
    return (
      f"{title}{status}, {time.monotonic() - start:.0f} s; results so far: {tally}\n\n"
      + "".join(bad)
      + "".join(f"\n    {line}\n" for line in tail)
    )

  def progress(output: str) -> None:
    report.replace(part, summary(output, "running"))

  status, out = run_streaming(cmd, plan.platform, timeout, log, progress)
  report.replace(part, summary(out, status))
  print(report.parts[part], flush=True)
  if status != "exit 0":
    report.problem(f"tests ({status})")


def section_bench(report: Report, plan: Plan, budget: Budget) -> None:
  report.add("## 2. Selective-scan benchmark (`python -m pallas_kernels.bench`)")
  share = budget.for_section("bench")
  for i, (weight, args) in enumerate(plan.bench_runs):
    timeout = min(budget.left(), share * weight / sum(w for w, _ in plan.bench_runs[i:]))
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pallas_kernels.bench", *args]
    log = report.path.with_suffix(f".bench{i + 1}.log")
    status, out = run_streaming(cmd, plan.platform, timeout, log)
    share -= time.monotonic() - start
    report.add(f"### `{' '.join(['python -m pallas_kernels.bench', *args])}`: {status}\n\n{out}")
    if status != "exit 0":
      report.problem(f"bench {' '.join(args)} ({status})")


def section_environment(report: Report, plan: Plan) -> None:
  import flax
  import jax
  import optax

  from pallas_kernels import dispatch, kernel_check

  smi = "not found"
  with contextlib.suppress(OSError, subprocess.TimeoutExpired):
    smi = subprocess.run(
      ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=30,
    ).stdout.strip()
  devices = ", ".join(f"{d.device_kind} ({d.platform})" for d in jax.devices())
  auto = dispatch.resolve_impl("auto")
  checks = []
  if auto is dispatch.ScanImpl.PALLAS:  # what auto runs after each family's self-check
    for kernel, n in (("ss2d", 1), ("scan", 16)):  # DASS, AuM
      for dtype in ("float32", "bfloat16"):
        family = kernel_check.Family(kernel, dtype, n)
        result = kernel_check.verify(family)
        checks.append(f"  - {family}: {result.reason} ({result.seconds:.1f} s)")
        if not result.ok:
          report.problem(f"self-check of the {family}")
  report.add(
    "## 3. Environment\n\n"
    f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n"
    f"- devices: {devices}\n- nvidia-smi: {smi}\n"
    f"- jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
    f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
    f"{os.getloadavg()[0]:.1f}\n"
    f"- scan `auto` on this backend: {auto.value}"
    + (" (no kernel self-check off GPU)" if not checks else ", kernel self-checks:")
    + "".join(f"\n{line}" for line in checks)
    + f"\n- plan: {'dry run (tiny shapes, CPU)' if plan is DRY else 'full check'}"
  )


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
    f"Forward + backward + Adam, {steps} timed steps after one compiling step. Rows: "
    "fp32(highest) = float32, matmuls at 'highest'; TF32 = float32 at 'tensorfloat32' (JAX's "
    "default on this GPU); bf16 = bfloat16 compute.\n\n"
    "| precision | scan | compile + first step (s) | step (s) | examples / s |\n"
    "|---|---|---:|---:|---:|"
  )
  part = report.add(header)
  for row, impl in plan.runs:
    dtype, precision = PRECISION_ROWS[row]
    if time.monotonic() > share_end:
      rows.append(f"| {row} | {impl} | not run: time budget | | |")
      report.problem(f"throughput {row} {impl} (time budget)")
      report.replace(part, header + "\n" + "\n".join(rows))
      continue
    try:
      with jax.default_matmul_precision(precision):
        model, config = _model(plan, dtype=dtype, scan_impl=impl)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((plan.batch, plan.frames, config.num_mel_bins), dtype=np.float32)
        y = (rng.random((plan.batch, config.num_classes)) < 0.05).astype(np.float32)
        params = jax.jit(model.init)(jax.random.key(0), x[:1, :16])["params"]
        step = TrainStep(model, params)
        start = time.perf_counter()
        step(x, y)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
          step(x, y)
        per_step = (time.perf_counter() - start) / steps
      rate = plan.batch / per_step
      rows.append(f"| {row} | {impl} | {first:.1f} | {per_step:.3f} | {rate:.1f} |")
    except Exception as err:  # one failing configuration must not end the check
      rows.append(f"| {row} | {impl} | failed: {type(err).__name__}: {str(err)[:120]} | | |")
      report.problem(f"throughput {row} {impl} ({type(err).__name__})")
    report.replace(part, header + "\n" + "\n".join(rows))
    print(rows[-1], flush=True)


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
  title = "## 5. Longest single DASS forward pass (batch 1, float32, scan `auto`"
  try:
    model, config = _model(plan)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, config.num_mel_bins)))
    forward = jax.jit(model.apply)
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit", DRY_MEMORY_BYTES if plan is DRY else 0)
    (f1, f2), mel = plan.probe_frames, config.num_mel_bins
    b1, b2 = (_memory_bytes(forward, params, f, mel) for f in (f1, f2))
  except Exception as err:
    report.add(f"{title})\n\nfailed: {type(err).__name__}: {str(err)[:300]}")
    report.problem(f"longest pass ({type(err).__name__})")
    return
  per_frame = (b2 - b1) / (f2 - f1)
  frames = int((0.92 * limit - (b1 - per_frame * f1)) / per_frame) // 64 * 64
  lines = [
    f"{title} = {resolve_impl(config.scan_impl).value})\n",
    f"Memory analysis: {b1 / 2**20:.0f} MiB at {f1} frames, {b2 / 2**20:.0f} MiB at {f2} "
    f"frames: {per_frame * 100 / 2**20:.2f} MiB per second of audio; device limit "
    f"{limit / 2**30:.1f} GiB; predicted longest {frames} frames.\n",
    "| frames | audio (h) | status | forward (s) | peak device memory (GiB) |",
    "|---:|---:|---|---:|---:|",
  ]
  best = None
  for _ in range(3):
    if frames < 16:
      break
    if time.monotonic() > share_end:
      lines.append("\nCut: time budget.")
      report.problem("longest pass (time budget)")
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
  elif not any(line.startswith("\nCut") for line in lines):
    report.problem("longest pass (no length ran)")
  report.add("\n".join(lines))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("report", type=Path, help="markdown file to write")
  parser.add_argument(
    "--dry-run", action="store_true", help="tiny shapes on CPU (Pallas interpreted)"
  )
  parser.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget (s)")
  parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
  parser.add_argument(
    "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
  )
  parser.add_argument("--tests", default=GPU_TESTS, help="pytest target of section 1")
  args = parser.parse_args(argv)
  sections = [s for s in args.sections.split(",") if s]
  if not set(sections) <= set(SECTIONS):
    parser.error(f"--sections must name sections of {SECTIONS}, got {sections}")
  plan = DRY if args.dry_run else REAL
  if args.dry_run:
    os.environ["JAX_PLATFORMS"] = "cpu"
  else:
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  sys.path.insert(0, str(REPO / "benchmarks"))
  sys.path.insert(1, str(REPO))
  budget = Budget(args.budget_s)
  report = Report(args.report)
  command = " ".join(["scripts/gpu_check.sh", *(sys.argv[1:] if argv is None else argv)])
  report.add(
    f"# GPU check ({'dry run' if args.dry_run else 'full'})\n\n`{command}`, budget "
    f"{args.budget_s:.0f} s."
  )
  run = {
    "tests": lambda: section_tests(report, plan, budget, args.tests),
    "bench": lambda: section_bench(report, plan, budget),
    "environment": lambda: section_environment(report, plan),
    "throughput": lambda: section_throughput(
      report, plan, budget, args.steps if not args.dry_run else 2
    ),
    "longest": lambda: section_longest(report, plan, budget),
  }
  for name in SECTIONS:
    if name in sections:
      run[name]()
  report.add(f"Total {args.budget_s - budget.left():.0f} s of the {args.budget_s:.0f} s budget.")
  if report.problems:
    report.add("Failed or cut: " + "; ".join(report.problems) + ".")
    return 1
  report.add("Every section ran to its end without a failure.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
