"""SSLAM parity: the Flax model vs its PyTorch twin on the released ViT-B/16 size, random weights.

    JAX_PLATFORMS=cpu python benchmarks/parity_sslam.py [--audio FILE ...] [--seed 0]

One `torch_reference.sslam_torch.SslamTwin()` (ViT-B/16, 527 classes, positions for 768 time
patches) gets random weights (its init moved by N(0, 0.02^2)), is written as the authors' fairseq
checkpoint (weights under "model") in float32 and in float16, and converted by
`python -m convert_torch sslam`'s code path (`convert_torch.sslam.convert`). Both models then read
the same normalised fbank, padded / cropped to 1024 frames as the authors' inference does:
Gaussian noise, and each recording given with --audio (default: CPython's test recording
`test/audiodata/pluck-pcm16.wav`, when installed). For the float16 file the twin holds the same
float16-rounded weights. Prints a markdown table: ‖out − ref‖/‖ref‖ and max |out − ref| of the
527 logits (tests/numerics.py measures), and max |ref|.
"""

from __future__ import annotations

import argparse
import sysconfig
import tempfile
from pathlib import Path

import jax
import numpy as np

from convert_torch.sslam import convert
from dass_jax.frontends.kaldi_fbank import audio_features
from dass_jax.models import SSLAM

PLUCK = Path(sysconfig.get_paths()["stdlib"]) / "test" / "audiodata" / "pluck-pcm16.wav"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--audio", nargs="*", default=[str(PLUCK)] if PLUCK.is_file() else [])
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  import torch

  from torch_reference.sslam_torch import SslamTwin, fairseq_state_dict, perturb_

  torch.manual_seed(args.seed)
  twin = perturb_(SslamTwin(), seed=args.seed + 1, scale=0.02)
  inputs = {"noise": np.random.default_rng(args.seed).standard_normal((1024, 128), np.float32)}
  for path in args.audio:
    inputs[Path(path).name] = audio_features(path, target_frames=1024)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for dtype in ("float32", "float16"):
      cast = (lambda t: t.half()) if dtype == "float16" else (lambda t: t)
      path = Path(tmp) / f"checkpoint_{dtype}.pt"
      torch.save({"model": {k: cast(v) for k, v in fairseq_state_dict(twin).items()}}, path)
      config, params, _, _ = convert(path)
      reference = SslamTwin()
      reference.load_state_dict({k: cast(v).float() for k, v in twin.state_dict().items()})
      forward = jax.jit(SSLAM(config).apply)
      for name, x in inputs.items():
        with torch.no_grad():
          ref = reference.eval()(torch.from_numpy(x[None])).numpy().astype(np.float64)
        out = np.asarray(forward({"params": params}, x[None]), np.float64)
        rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        rows.append((dtype, name, rel, np.abs(out - ref).max(), np.abs(ref).max()))
  print(f"jax {jax.__version__}, torch {torch.__version__}, {jax.devices()[0].platform}")
  print("| checkpoint | input | rel err | max abs err | max abs logit |")
  print("|---|---|---|---|---|")
  for dtype, name, rel, err, scale in rows:
    print(f"| fairseq {dtype} | {name} | {rel:.2e} | {err:.2e} | {scale:.3g} |")


if __name__ == "__main__":
  main()
