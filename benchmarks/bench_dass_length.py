"""Peak memory and wall time of a DASS forward pass versus input length, on CPU.

Each length runs in a fresh subprocess so that its peak RSS is its own. Per length: random init
of the model (batch 1), one jitted forward to compile, then the best of `--repeats` timed forwards.

    JAX_PLATFORMS=cpu python benchmarks/bench_dass_length.py                 # small, 1024 & 10240
    JAX_PLATFORMS=cpu python benchmarks/bench_dass_length.py --lengths 1024 2048 --size medium

Prints a markdown table: frames, token count of stage 1, compile+first run, best forward time,
peak RSS of the process (ru_maxrss) and its growth over the RSS before the model was built.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _measure(frames: int, size: str, scan_impl: str, repeats: int) -> dict:
  """Runs in the child process: builds, compiles and times one length."""
  import resource
  import time

  import jax
  import jax.numpy as jnp
  import psutil

  from dass_jax.models import DASS, DassConfig

  rss_start = psutil.Process().memory_info().rss
  config = getattr(DassConfig, size)(scan_impl=scan_impl)
  model = DASS(config)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, config.num_mel_bins)))
  x = jax.random.normal(jax.random.key(1), (1, frames, config.num_mel_bins))
  forward = jax.jit(model.apply)
  start = time.perf_counter()
  forward(params, x).block_until_ready()
  first = time.perf_counter() - start
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    forward(params, x).block_until_ready()
    best = min(best, time.perf_counter() - start)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
  height, width = config.num_mel_bins, frames
  for _ in range(2):  # the two stride-2 convs of the patch embed, PyTorch sizes
    height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
  return {
    "frames": frames,
    "tokens": height * width,
    "first_s": first,
    "best_s": best,
    "peak_rss_mib": peak / 2**20,
    "growth_mib": (peak - rss_start) / 2**20,
    "backend": jax.default_backend(),
    "cpus": os.cpu_count(),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 10240])
  parser.add_argument("--size", choices=["small", "medium"], default="small")
  parser.add_argument("--scan-impl", default="auto")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child is not None:
    print(json.dumps(_measure(args.child, args.size, args.scan_impl, args.repeats)))
    return

  rows = []
  for frames in args.lengths:
    cmd = [
      sys.executable,
      __file__,
      "--child",
      str(frames),
      "--size",
      args.size,
      "--scan-impl",
      args.scan_impl,
      "--repeats",
      str(args.repeats),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if proc.returncode != 0:
      sys.exit(f"length {frames} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))

  print(
    f"DASS-{args.size} forward, batch 1, scan_impl={args.scan_impl}, "
    f"backend {rows[0]['backend']}, {rows[0]['cpus']} CPUs\n"
  )
  print(
    "| frames | stage-1 tokens | compile + first run (s) | forward, best of "
    f"{args.repeats} (s) | peak RSS (MiB) | RSS growth (MiB) |"
  )
  print("|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(
      f"| {r['frames']} | {r['tokens']} | {r['first_s']:.2f} | {r['best_s']:.3f} | "
      f"{r['peak_rss_mib']:.0f} | {r['growth_mib']:.0f} |"
    )


if __name__ == "__main__":
  main()
