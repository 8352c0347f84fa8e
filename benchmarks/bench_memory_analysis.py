"""XLA's memory analysis of DASS-small's compiled forward: temporary bytes per second of audio.

    JAX_PLATFORMS=cpu python benchmarks/bench_memory_analysis.py [--durations 60 120]

Nothing runs: each variant of DASS-small (random init, abstract; batch 1, eval, fp32, scan `auto`)
is lowered and compiled for the fbank of each duration, and XLA's `memory_analysis()` of the
compiled forward gives its temporary buffers (`temp_size_in_bytes`, the activations XLA plans for;
the params are arguments). The growth between the first and last duration, per second of audio,
is the memory a long input costs beyond the params. Variants: the default (the VSS MLP over
chunks of `mlp_token_chunk` tokens in inference), the MLP unchunked (`mlp_token_chunk=0`, what
DASS computes), and the MLP at a quarter of its hidden width (`mlp_ratio=1.0`, not DASS-small's
params: it shows what the MLP's hidden activations cost). Prints a markdown table. A few minutes
on a 2-core CPU (two compiles per variant).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from dass_jax.constants import NUM_MEL_BINS
from dass_jax.models import DASS, DassConfig

MIB = 2**20
VARIANTS = {
  "default (MLP over token chunks)": {},
  "MLP unchunked (mlp_token_chunk=0)": {"mlp_token_chunk": 0},
  "MLP hidden width / 4 (mlp_ratio=1.0)": {"mlp_ratio": 1.0},
}


def frames_for(seconds: float) -> int:
  """Kaldi frames of `seconds` of 16 kHz audio (25 ms windows every 10 ms)."""
  return 1 + (int(round(seconds * 16000)) - 400) // 160


def temp_bytes(config: DassConfig, frames: int) -> int:
  """temp_size_in_bytes of the compiled eval forward of `config` on (1, frames, 128)."""
  model = DASS(config)
  x = jax.ShapeDtypeStruct((1, frames, NUM_MEL_BINS), jnp.float32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, NUM_MEL_BINS))))
  forward = jax.jit(lambda p, x: model.apply(p, x, train=False))
  return int(forward.lower(params, x).compile().memory_analysis().temp_size_in_bytes)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--durations", type=float, nargs="+", default=[60.0, 120.0])
  args = parser.parse_args()
  if len(args.durations) < 2:
    parser.error("--durations needs at least two durations")
  first, last = min(args.durations), max(args.durations)
  print(
    f"DASS-small eval forward, batch 1, fp32, scan auto; XLA memory analysis on "
    f"{jax.default_backend()} ({os.cpu_count()} CPUs), jax {jax.__version__}\n"
  )
  cells = " | ".join(f"temp at {d:g} s (MiB)" for d in args.durations)
  print(f"| variant | {cells} | MiB per second of audio |")
  print("|---|" + "---:|" * (len(args.durations) + 1))
  for name, overrides in VARIANTS.items():
    config = DassConfig.small(**overrides)
    temps = {d: temp_bytes(config, frames_for(d)) for d in args.durations}
    slope = (temps[last] - temps[first]) / (last - first) / MIB
    cells = " | ".join(f"{temps[d] / MIB:.0f}" for d in args.durations)
    print(f"| {name} | {cells} | {slope:.2f} |", flush=True)


if __name__ == "__main__":
  main()
