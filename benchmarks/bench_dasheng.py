"""Dasheng-base forward (waveform -> AudioSet logits) per 10 s clip on the CPU: Flax vs PyTorch.

    JAX_PLATFORMS=cpu python benchmarks/bench_dasheng.py [--batch-sizes 1 4] [--repeats 5]

The PyTorch side is the `dasheng==0.0.9` package's own model (`Dasheng(embed_dim=768, depth=12,
num_heads=12)`, random weights) with the README's AudioSet head, its two torchaudio transforms
replaced by `torch_reference.torchaudio_double` (torch.stft + a filterbank matmul, as torchaudio
computes them; PyPI's torchaudio does not import beside the CPU torch). Its state dict is
converted with `convert_torch.dasheng`, so both frameworks run the same model; the script checks
their logits agree before timing. Flax: `jax.jit` of `apply` (front end included), timed after one
warm-up call, with `block_until_ready`. PyTorch: eval mode under `torch.inference_mode()`, also
after a warm-up call. Inputs are 10 s of noise at 16 kHz (160 000 samples, 250 tokens, one chunk);
the dB floor is batch-global on both sides ('batch', as the package). Each entry is the median
over `--repeats` calls divided by the batch size. Prints a markdown table.

    JAX_PLATFORMS=cpu python benchmarks/bench_dasheng.py --durations 60 300 600

Long inputs instead: one recording of each duration (batch 1) through each framework in a fresh
subprocess, which reports its peak RSS (`getrusage`), the first call (Flax: with compilation) and a
second call. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time

import jax
import numpy as np
from timing import median_seconds  # benchmarks/timing.py, beside this script

from convert_torch.dasheng import convert_state_dict, infer_config
from convert_torch.params import count_params
from dass_jax.models import Dasheng
from torch_reference import dasheng_reference


def _models():
  """(torch reference, Flax forward, Flax params) of one random Dasheng-base classifier."""
  import torch

  torch.manual_seed(0)
  reference = dasheng_reference.DashengClassifier(768, 12, 12, 527).eval()
  sd = {k: v.numpy() for k, v in dasheng_reference.classifier_state_dict(reference).items()}
  config = dataclasses.replace(infer_config(sd), db_floor="batch")
  params = jax.device_put(convert_state_dict(sd, config, "classifier"))
  model = Dasheng(config)
  return reference, jax.jit(lambda p, x: model.apply({"params": p}, x)), params


def _child(framework: str, seconds: float) -> dict:
  """One long recording through one framework: peak RSS, first and second call."""
  import torch

  reference, forward, params = _models()
  x = (0.1 * np.random.default_rng(0).standard_normal((1, int(seconds * 16000)))).astype(np.float32)
  if framework == "flax":
    run = lambda: forward(params, x).block_until_ready()
  else:
    del forward, params
    xt = torch.from_numpy(x)
    run = lambda: reference(xt)
  times = []
  with torch.inference_mode():
    for _ in range(2):
      start = time.perf_counter()
      run()
      times.append(time.perf_counter() - start)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
  return {"peak_gib": peak, "first_s": times[0], "second_s": times[1]}


def long_inputs(durations: list[float]) -> None:
  print(f"Dasheng-base, batch 1, fp32; load average {os.getloadavg()[0]:.1f}\n")
  print("| duration (s) | tokens | framework | peak GiB | first call (s) | second call (s) |")
  print("|---:|---:|---|---:|---:|---:|")
  for seconds in durations:
    for framework in ("flax", "pytorch"):
      cmd = [sys.executable, __file__, "--child", framework, "--seconds", str(seconds)]
      out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
      r = json.loads(out.strip().splitlines()[-1])
      tokens = (1 + int(seconds * 16000) // 160) // 4
      print(
        f"| {seconds:g} | {tokens} | {framework} | {r['peak_gib']:.2f} | {r['first_s']:.1f} | "
        f"{r['second_s']:.1f} |",
        flush=True,
      )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--durations", type=float, nargs="*", help="long-input mode (seconds)")
  parser.add_argument("--child", choices=("flax", "pytorch"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_child(args.child, args.seconds)))
    return
  if args.durations:
    long_inputs(args.durations)
    return

  import torch

  reference, forward, params = _models()

  samples = int(round(args.seconds * 16000))
  rows = []
  rng = np.random.default_rng(0)
  for batch in args.batch_sizes:
    x = (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)
    xt = torch.from_numpy(x)
    x_dev = jax.device_put(x)
    with torch.inference_mode():
      ref = reference(xt)[1].numpy()
      got = np.asarray(forward(params, x_dev))
      rel = float(np.abs(got - ref).max() / np.abs(ref).max())
      t_jax = median_seconds(
        lambda x_dev=x_dev: forward(params, x_dev).block_until_ready(), args.repeats, warmup=1
      )
      t_torch = median_seconds(lambda xt=xt: reference(xt), args.repeats, warmup=1)
    rows.append((batch, 1e3 * t_jax / batch, 1e3 * t_torch / batch, t_torch / t_jax, rel))

  cpu = platform.processor() or platform.machine()
  print(
    f"Dasheng-base + AudioSet head ({count_params(params):,} params), {args.seconds:g} s at "
    f"16 kHz ({samples} samples), fp32; {cpu}, {os.cpu_count()} CPUs, load average "
    f"{os.getloadavg()[0]:.1f}; jax {jax.__version__} ({jax.default_backend()}), "
    f"torch {torch.__version__} ({torch.get_num_threads()} threads), median of {args.repeats}\n"
  )
  print("| batch | Flax jit (ms/clip) | PyTorch (ms/clip) | PyTorch / Flax | logits max rel diff |")
  print("|---:|---:|---:|---:|---:|")
  for batch, ms_jax, ms_torch, ratio, rel in rows:
    print(f"| {batch} | {ms_jax:.1f} | {ms_torch:.1f} | {ratio:.2f} | {rel:.1e} |")


if __name__ == "__main__":
  main()
