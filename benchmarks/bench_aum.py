"""AuM forward time per 10 s clip next to DASS-small's, side by side in one run.

    JAX_PLATFORMS=cpu python benchmarks/bench_aum.py [--models aum-small dass-small aum-base]
        [--batch-sizes 1 4] [--scan-impls auto] [--repeats 5] [--frames 1024]

Every model is the AudioSet configuration with random weights (`jax.jit(model.init)`, fp32): AuM-
small (Bi-Bi, D 384, 25.5 M params), AuM-base (Fo-Bi, D 768, 92.1 M) and DASS-small (29.9 M), on
1024 frames (10.24 s; AuM's 8 x 64 patches + class token, DASS's full map). Per model, scan
implementation and batch size: one warm-up call (compiles), then the median of `--repeats` jitted
forwards with `block_until_ready`, divided by the batch size. The rows alternate between models
for each batch size, so a change of machine load affects them alike; the load average before and
after is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
from timing import median_seconds  # benchmarks/timing.py, beside this script

from convert_torch.params import count_params
from dass_jax.models import AumConfig, DassConfig, build_model

MODELS = ("aum-small", "aum-base", "dass-small")


def _config(name: str, scan_impl: str, frames: int):
  if name == "dass-small":
    return DassConfig.small(scan_impl=scan_impl)
  preset = AumConfig.small if name == "aum-small" else AumConfig.base
  return preset(scan_impl=scan_impl, max_length=frames)


def _load() -> str:
  return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", choices=MODELS, default=["aum-small", "dass-small"])
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--scan-impls", nargs="+", default=["auto"])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--frames", type=int, default=1024)
  args = parser.parse_args()

  load_before = _load()
  runs = []
  for name in args.models:
    for impl in args.scan_impls:
      model = build_model(_config(name, impl, args.frames))
      params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, args.frames, 128)))
      runs.append((name, impl, count_params(params), jax.jit(model.apply), params))

  rows = []
  rng = np.random.default_rng(0)
  for batch in args.batch_sizes:
    x = jax.device_put(rng.standard_normal((batch, args.frames, 128), dtype=np.float32))
    for name, impl, size, forward, params in runs:
      seconds = median_seconds(
        lambda f=forward, p=params, x=x: f(p, x).block_until_ready(), args.repeats, warmup=1
      )
      rows.append((name, impl, size, batch, 1e3 * seconds / batch))

  print(
    f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
    f"jax {jax.__version__} ({jax.default_backend()}), {args.frames} frames, fp32; "
    f"load average before {load_before}, after {_load()}\n"
  )
  print("| model | scan | params (M) | batch | forward per clip (ms) |")
  print("|---|---|---:|---:|---:|")
  for name, impl, size, batch, ms in rows:
    print(f"| {name} | {impl} | {size / 1e6:.2f} | {batch} | {ms:.0f} |")


if __name__ == "__main__":
  main()
