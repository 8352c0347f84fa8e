"""Long-audio memory benchmark: peak memory of one DASS-small forward pass versus audio duration.

DASS-small (`DassConfig.small()`, random init, eval mode, jit, batch 1) classifies random
normalised fbank of each duration (frames = 1 + (16000 s - 400) // 160) in one pass. Every duration
runs in a fresh subprocess, which reports its own peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`);
the parent polls the child's RSS (psutil) and kills it above `--max-gib`, so a probe cannot take
the machine's memory from other users. A least-squares line peak = a + b * seconds over the
measured durations gives the growth per second of audio and the predicted longest input within
`--budget-gib`.

    # Validate and fit (each probe stays under ~4 GiB):
    JAX_PLATFORMS=cpu python benchmarks/bench_long_audio.py --durations 30 60 90 120
    # Then search for the longest input that fits (probes up to --max-gib):
    JAX_PLATFORMS=cpu python benchmarks/bench_long_audio.py --durations 30 60 90 120 \
        --search 4 --max-gib 20
    # One hour of audio in one pass, measured (BENCHMARKS.md; within 24 GiB):
    JAX_PLATFORMS=cpu python benchmarks/bench_long_audio.py --durations 60 300 1200 3600 \
        --max-gib 23
    # The hour alone, one pass (compile + forward; no second timed pass):
    JAX_PLATFORMS=cpu python benchmarks/bench_long_audio.py --durations 3600 --max-gib 23 \
        --passes 1

Prints a markdown table (duration_s, frames, peak GiB, compile + first pass s, second pass s,
status), the fit with its extrapolation (labelled as such), and the longest duration measured
within the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SAMPLE_RATE, WINDOW, HOP = 16000, 400, 160
GIB = 2**30


def frames_for(seconds: float) -> int:
  """Kaldi snip-edges frame count of `seconds` of 16 kHz audio."""
  return 1 + (int(round(seconds * SAMPLE_RATE)) - WINDOW) // HOP


def _child(seconds: float, scan_impl: str, passes: int = 2) -> dict:
  """Runs in the subprocess: one compile + forward, then (passes 2) one more forward; reports its
  peak."""
  import resource

  import jax
  import jax.numpy as jnp

  from dass_jax.models import DASS, DassConfig

  frames = frames_for(seconds)
  model = DASS(DassConfig.small(scan_impl=scan_impl))
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 128)))
  x = jax.random.normal(jax.random.key(1), (1, frames, 128), jnp.float32)
  forward = jax.jit(lambda p, x: model.apply(p, x, train=False))
  start = time.perf_counter()
  forward(params, x).block_until_ready()
  first = time.perf_counter() - start
  second = float("nan")
  if passes > 1:
    start = time.perf_counter()
    forward(params, x).block_until_ready()
    second = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB.
  return {
    "seconds": seconds,
    "frames": frames,
    "peak_gib": peak / GIB,
    "first_s": first,
    "second_s": second,
    "status": "ok",
  }


def measure(seconds: float, scan_impl: str, max_gib: float, passes: int = 2) -> dict:
  """Runs one duration in a fresh subprocess; kills it if its RSS passes `max_gib`."""
  import psutil

  cmd = [
    sys.executable,
    os.path.abspath(__file__),
    "--child",
    str(seconds),
    "--scan-impl",
    scan_impl,
    "--passes",
    str(passes),
  ]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
  }
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  watched, seen = psutil.Process(proc.pid), 0
  while proc.poll() is None:
    try:
      seen = max(seen, watched.memory_info().rss)
    except psutil.NoSuchProcess:
      break
    if seen > max_gib * GIB:
      proc.kill()
      proc.wait()
      return {
        "seconds": seconds,
        "frames": frames_for(seconds),
        "peak_gib": seen / GIB,
        "first_s": float("nan"),
        "second_s": float("nan"),
        "status": f"> {max_gib:g} GiB",
      }
    time.sleep(0.05)
  out, err = proc.communicate()
  if proc.returncode != 0:
    return {
      "seconds": seconds,
      "frames": frames_for(seconds),
      "peak_gib": seen / GIB,
      "first_s": float("nan"),
      "second_s": float("nan"),
      "status": f"failed (exit {proc.returncode}): {err.strip().splitlines()[-1:]}",
    }
  return json.loads(out.strip().splitlines()[-1])


def linear_fit(rows: list[dict]) -> tuple[float, float]:
  """Least-squares (intercept GiB, GiB per second of audio) over the successful rows."""
  ok = [r for r in rows if r["status"] == "ok"]
  if len(ok) < 2:
    raise ValueError("need two successful durations for a fit")
  xs, ys = [r["seconds"] for r in ok], [r["peak_gib"] for r in ok]
  mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
  slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
  return my - slope * mx, slope


def search(
  rows: list[dict], steps: int, scan_impl: str, max_gib: float, passes: int = 2
) -> list[dict]:
  """Probes `steps` durations towards the longest one under `max_gib`: the fit's prediction
  first, then 10% steps up until a probe fails, then bisection."""
  intercept, slope = linear_fit(rows)
  lo = max(r["seconds"] for r in rows if r["status"] == "ok")
  hi = None
  probe = max(lo * 1.1, 0.95 * (max_gib - intercept) / slope)
  out = []
  for _ in range(steps):
    row = measure(round(probe), scan_impl, max_gib, passes)
    out.append(row)
    print(_row_line(row), flush=True)
    if row["status"] == "ok" and row["peak_gib"] <= max_gib:
      lo = row["seconds"]
    else:
      hi = row["seconds"]
    probe = lo * 1.1 if hi is None else (lo + hi) / 2
    if hi is not None and hi - lo < 0.02 * lo:
      break
  return out


def _seconds(value: float) -> str:
  return "–" if value != value else f"{value:.1f}"  # NaN: not run (--passes 1) or killed


def _row_line(row: dict) -> str:
  return (
    f"| {row['seconds']:g} | {row['frames']} | {row['peak_gib']:.3f} | "
    f"{row['first_s']:.1f} | {_seconds(row['second_s'])} | {row['status']} |"
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--durations",
    type=float,
    nargs="+",
    default=[30, 60, 90, 120],
    help="seconds of audio to measure (each in its own subprocess)",
  )
  parser.add_argument("--scan-impl", default="auto")
  parser.add_argument(
    "--max-gib", type=float, default=4.0, help="kill a probe whose RSS passes this (GiB)"
  )
  parser.add_argument(
    "--budget-gib", type=float, default=24.0, help="memory for the extrapolated longest input (GiB)"
  )
  parser.add_argument(
    "--search",
    type=int,
    default=0,
    help="probes searching for the longest duration under --max-gib",
  )
  parser.add_argument(
    "--passes",
    type=int,
    choices=(1, 2),
    default=2,
    help="forward passes per duration: 2 also times a second (compiled) pass; 1 saves the time of "
    "the longest inputs",
  )
  parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child is not None:
    print(json.dumps(_child(args.child, args.scan_impl, args.passes)))
    return

  import jax

  print(
    f"DASS-small forward, batch 1, eval, jit, scan_impl={args.scan_impl}, backend "
    f"{jax.default_backend()}, {os.cpu_count()} CPUs\n"
  )
  print("| duration_s | frames | peak GiB | compile + first pass (s) | second pass (s) | status |")
  print("|---:|---:|---:|---:|---:|---|")
  rows = []
  for seconds in args.durations:
    rows.append(measure(seconds, args.scan_impl, args.max_gib, args.passes))
    print(_row_line(rows[-1]), flush=True)
  if args.search:
    rows += search(rows, args.search, args.scan_impl, args.max_gib, args.passes)
  if sum(r["status"] == "ok" for r in rows) < 2:
    print("\n(fewer than two durations ran: no linear fit)")
    return
  intercept, slope = linear_fit(rows)
  print(
    f"\nfit: peak GiB = {intercept:.3f} + {slope * 1024:.3f} MiB/s x duration_s "
    f"(over {sum(r['status'] == 'ok' for r in rows)} durations)"
  )
  residual = max(
    abs(r["peak_gib"] - intercept - slope * r["seconds"]) for r in rows if r["status"] == "ok"
  )
  print(f"largest residual: {residual * 1024:.1f} MiB")
  predicted = (args.budget_gib - intercept) / slope
  print(
    f"extrapolated longest input within {args.budget_gib:g} GiB: {predicted:.0f} s "
    f"({predicted / 3600:.2f} h, {frames_for(predicted)} frames) [linear extrapolation]"
  )
  measured = [r for r in rows if r["status"] == "ok" and r["peak_gib"] <= args.max_gib]
  if measured:
    best = max(measured, key=lambda r: r["seconds"])
    print(
      f"longest measured within {args.max_gib:g} GiB: {best['seconds']:g} s "
      f"({best['peak_gib']:.2f} GiB)"
    )


if __name__ == "__main__":
  main()
