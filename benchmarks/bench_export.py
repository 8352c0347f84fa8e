"""DASS-small exported: onnxruntime vs our JAX forward vs the original PyTorch code, one process.

    JAX_PLATFORMS=cpu python benchmarks/bench_export.py --dass-repo PATH \
        [--frames 1024 4096] [--repeats 5] [--threads 2]

The original model is built exactly as in `bench_vs_original.py` (its `build_original`: the
authors' DASS-small, random init under seed 0, with the only CPU path its code has) and its weights
are converted into ours, so all three run the same weights. Per length: our DASS-small is exported
the way `python -m dass_jax.export --frames N` does it (`export.inference_config`: the loop scan,
no MLP token chunks) to ONNX (timed: jax2onnx conversion + serialisation) and to StableHLO
(timed: `jax.export` + serialize); the ONNX graph runs in onnxruntime (CPU provider, all graph
optimisations, `--threads` intra-op threads), ours as the jitted `apply` with the default config
(scan `auto` = chunked on CPU), the original under `torch.inference_mode()` with `--threads`
threads. Each time is the median of `--repeats` calls timed in blocks (`timing.blockwise_medians`).
Prints a markdown row per length with the logits' relative errors and the file sizes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_vs_original import MEL_BINS, NUM_CLASSES, build_original, rel_err
from timing import blockwise_medians  # benchmarks/timing.py, beside this script

from convert_torch.dass import torch_to_flax
from dass_jax import export
from dass_jax.models import DASS, DassConfig


def _export_files(params, frames: int, folder: Path) -> dict[str, float]:
  """Exports DASS-small at `frames` to both formats; returns seconds and sizes."""
  import onnx

  config = export.inference_config(DassConfig.small(num_classes=NUM_CLASSES))
  model = DASS(config)
  layout = export.input_layout(config, frames, False)
  start = time.perf_counter()
  proto = export.to_onnx(model, params, layout, export.metadata(config, layout))
  onnx.save(proto, folder / f"dass_small_{frames}.onnx")
  onnx_s = time.perf_counter() - start
  start = time.perf_counter()
  blob = export.to_stablehlo(model, params, layout)
  (folder / f"dass_small_{frames}.stablehlo").write_bytes(blob)
  shlo_s = time.perf_counter() - start
  return {
    "onnx_s": onnx_s,
    "stablehlo_s": shlo_s,
    "onnx_mb": (folder / f"dass_small_{frames}.onnx").stat().st_size / 2**20,
    "stablehlo_mb": len(blob) / 2**20,
  }


def _session(path: Path, threads: int):
  import onnxruntime as ort

  options = ort.SessionOptions()
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  options.intra_op_num_threads = threads
  options.log_severity_level = 3
  return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dass-repo", type=Path, required=True, help="checkout of the original")
  parser.add_argument("--frames", type=int, nargs="+", default=[1024, 4096])
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation")
  parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
  args = parser.parse_args(argv)

  import onnxruntime
  import torch

  torch.set_num_threads(args.threads)
  load_before = os.getloadavg()
  torch_model, stand_ins = build_original(args.dass_repo.resolve())
  torch_model.eval()
  sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  config, params = torch_to_flax(sd)
  assert config.depths == DassConfig.small().depths, config
  ours = jax.jit(DASS(DassConfig.small(num_classes=NUM_CLASSES)).apply)
  params = jax.tree.map(jnp.asarray, params)
  print(
    f"# DASS-small exported: onnxruntime vs dass-jax vs the original\n\n"
    f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__}, "
    f"onnxruntime {onnxruntime.__version__} ({args.threads} intra-op threads), torch "
    f"{torch.__version__} ({torch.get_num_threads()} threads); batch 1, fp32, median of "
    f"{args.repeats}; stand-ins for {stand_ins or 'nothing'}; load average before "
    f"{load_before[0]:.1f}\n",
    flush=True,
  )
  header = [
    "frames",
    "dass-jax (s)",
    "onnxruntime (s)",
    "jax / onnxruntime",
    "original (s)",
    "original / onnxruntime",
    "rel. err. ort vs jax / jax vs original",
    "export onnx / stablehlo (s)",
    "size onnx / stablehlo (MiB)",
  ]
  print("| " + " | ".join(header) + " |\n|" + "---:|" * len(header), flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    for frames in args.frames:
      files = _export_files(params, frames, Path(tmp))
      session = _session(Path(tmp) / f"dass_small_{frames}.onnx", args.threads)
      x = np.random.default_rng(frames).standard_normal((1, frames, MEL_BINS), dtype=np.float32)
      xt, xj = torch.from_numpy(x), jnp.asarray(x)
      feed = {session.get_inputs()[0].name: x}
      with torch.inference_mode():
        ref = torch_model(xt).numpy()
        jax_logits = np.asarray(ours({"params": params}, xj))
        ort_logits = session.run(None, feed)[0]
        times = blockwise_medians(
          {
            "jax": lambda xj=xj: jax.block_until_ready(ours({"params": params}, xj)),
            "ort": lambda feed=feed, session=session: session.run(None, feed),
            "original": lambda xt=xt: torch_model(xt),
          },
          args.repeats,
        )
      cells = [
        str(frames),
        f"{times['jax']:.3f}",
        f"{times['ort']:.3f}",
        f"{times['jax'] / times['ort']:.2f}",
        f"{times['original']:.3f}",
        f"{times['original'] / times['ort']:.2f}",
        f"{rel_err(ort_logits, jax_logits):.1e} / {rel_err(jax_logits, ref):.1e}",
        f"{files['onnx_s']:.0f} / {files['stablehlo_s']:.1f}",
        f"{files['onnx_mb']:.1f} / {files['stablehlo_mb']:.1f}",
      ]
      print("| " + " | ".join(cells) + " |", flush=True)
  print(f"\nload average after {os.getloadavg()[0]:.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
