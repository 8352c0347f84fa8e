"""AST (AudioSet config, random weights) forward time per 10 s clip: Flax vs transformers PyTorch.

    JAX_PLATFORMS=cpu python benchmarks/bench_ast.py [--batch-sizes 1 4] [--repeats 5]

One `transformers.ASTForAudioClassification(ASTConfig())` is built with random weights and
converted with `convert_torch.ast`, so both frameworks run the same model; the script checks their
logits agree before timing. Flax: `jax.jit` of `apply`, timed after one warm-up call, with
`block_until_ready`. PyTorch: eval mode under `torch.inference_mode()` with its default (SDPA)
attention, also after a warm-up call. Each entry is the median over `--repeats` calls divided by
the batch size. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import numpy as np
from timing import median_seconds  # benchmarks/timing.py, beside this script

from convert_torch.ast import config_from_transformers, convert_state_dict
from dass_jax.models import AST


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--frames", type=int, default=1024)
  args = parser.parse_args()

  import torch
  import transformers

  torch.manual_seed(0)
  hf = transformers.ASTForAudioClassification(transformers.ASTConfig(num_labels=527)).eval()
  config = config_from_transformers(hf.config.to_dict())
  sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  params = jax.device_put(convert_state_dict(sd, config))
  model = AST(config)
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x))

  rows = []
  rng = np.random.default_rng(0)
  for batch in args.batch_sizes:
    x = rng.standard_normal((batch, args.frames, config.num_mel_bins), dtype=np.float32)
    xt = torch.from_numpy(x)
    x_dev = jax.device_put(x)
    with torch.inference_mode():
      ref = hf(xt).logits.numpy()
      got = np.asarray(forward(params, x_dev))
      rel = float(np.abs(got - ref).max() / np.abs(ref).max())
      t_jax = median_seconds(
        lambda x_dev=x_dev: forward(params, x_dev).block_until_ready(), args.repeats, warmup=1
      )
      t_torch = median_seconds(lambda xt=xt: hf(xt).logits, args.repeats, warmup=1)
    rows.append((batch, 1e3 * t_jax / batch, 1e3 * t_torch / batch, t_torch / t_jax, rel))

  cpu = platform.processor() or platform.machine()
  print(
    f"AST AudioSet config ({hf.num_parameters():,} params), "
    f"{args.frames} frames x {config.num_mel_bins} mel, fp32; {cpu}, {os.cpu_count()} CPUs, "
    f"load average "
    f"{os.getloadavg()[0]:.1f}; jax {jax.__version__} ({jax.default_backend()}), "
    f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
    f"median of {args.repeats}\n"
  )
  print("| batch | Flax jit (ms/clip) | PyTorch (ms/clip) | PyTorch / Flax | logits max rel diff |")
  print("|---:|---:|---:|---:|---:|")
  for batch, ms_jax, ms_torch, ratio, rel in rows:
    print(f"| {batch} | {ms_jax:.1f} | {ms_torch:.1f} | {ratio:.2f} | {rel:.1e} |")


if __name__ == "__main__":
  main()
