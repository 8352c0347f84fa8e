"""DASS-small on CPU: dass-jax against the original PyTorch code, side by side in one process.

    JAX_PLATFORMS=cpu python benchmarks/bench_vs_original.py --dass-repo PATH \
        [--frames 1024 4096 10240] [--train-frames 1024] [--impls auto associative] \
        [--repeats 5] [--threads 2]

PATH is a checkout of the authors' repository (github.com/Saurabhbhati/DASS); nothing of it is
copied into this project. Its model code imports timm, fvcore, torchvision, triton and wget for
things a CPU forward pass never runs (pretrained downloads, FLOP counts, Triton kernels); each of
those that is not installed gets a minimal stand-in in `sys.modules` (timm's DropPath,
trunc_normal_ and to_2tuple are re-implemented, the rest are empty names). The original has no CPU
path of its own: a CPU user runs VMamba's pure-PyTorch cross-scan and cross-merge
(`src/models/csms6s.py`) in place of the Triton ones and VMamba's chunked pure-PyTorch scan
`selective_scan_easy` (`kernels/selective_scan/test_selective_scan_easy.py`, chunk 64; that file
cannot be imported whole, so the function is compiled from its source) in place of the CUDA scan.
The script wires in exactly those, then builds `DASS(label_dim=527, imagenet_pretrain=False,
audioset_pretrain=False, model_size='small')` under `torch.manual_seed(0)` and converts its
state dict with `convert_torch.dass.torch_to_flax`, so both sides run the same random weights.

Forward: eval mode, batch 1, fp32; PyTorch under `torch.inference_mode()` with `--threads`
threads, JAX as a jitted `apply`. Each time is the median of `--repeats` calls, timed in
blocks (`timing.blockwise_medians`: one untimed call, then the timed calls in a row; with
`--rounds` > 1 the blocks take turns in alternating order). The logits' relative error
||ours - original|| / ||original|| is printed beside.
Training step: forward + backward + Adam update (lr 1e-4) of every parameter on BCE-with-logits
against fixed random targets, train mode (drop path 0.2 as configured), batch 1.
Prints markdown tables and the conditions (CPU count, load average before and after, versions).
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from timing import blockwise_medians  # benchmarks/timing.py, beside this script
from train_step import ADAM_LR, TrainStep  # benchmarks/train_step.py

from convert_torch.dass import torch_to_flax
from dass_jax.models import DASS, DassConfig

ORIGINAL_SCAN_CHUNK = 64  # selective_scan_easy's default, the chunk a CPU user runs
NUM_CLASSES = 527
MEL_BINS = 128


# ------------------------------------------------------------------------------------------------
# The original code, made importable on a CPU machine.
# ------------------------------------------------------------------------------------------------
def _module(name: str, **attrs) -> types.ModuleType:
  module = types.ModuleType(name)
  module.__dict__.update(attrs)
  sys.modules[name] = module
  return module


def _missing(name: str) -> bool:
  try:
    __import__(name)
  except ImportError:
    return True
  return False


def _unavailable(what: str):
  def call(*args, **kwargs):
    raise RuntimeError(f"{what} is a benchmark stand-in and is never called on the CPU path")

  return call


def install_stand_ins() -> list[str]:
  """Stand-ins for the original's imports that are not installed; returns their names."""
  from torch import nn

  installed = []
  if _missing("timm"):

    class DropPath(nn.Module):
      """timm's DropPath: zero whole samples with probability p, scale the rest by 1/(1-p)."""

      def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

      def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
          return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
          mask.div_(keep)
        return x * mask

    def to_2tuple(x):
      return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    layers = _module(
      "timm.models.layers",
      DropPath=DropPath,
      trunc_normal_=nn.init.trunc_normal_,
      to_2tuple=to_2tuple,
    )
    vision_transformer = _module("timm.models.vision_transformer", PatchEmbed=None)
    models = _module("timm.models", layers=layers, vision_transformer=vision_transformer)
    _module("timm", models=models, create_model=_unavailable("timm.create_model"))
    installed.append("timm")
  if _missing("fvcore"):
    names = ("FlopCountAnalysis", "flop_count_str", "flop_count", "parameter_count")
    fvcore_nn = _module("fvcore.nn", **{n: _unavailable(f"fvcore.nn.{n}") for n in names})
    _module("fvcore", nn=fvcore_nn)
    installed.append("fvcore")
  if _missing("torchvision"):
    tv_models = _module("torchvision.models", VisionTransformer=_unavailable("VisionTransformer"))
    _module("torchvision", models=tv_models)
    installed.append("torchvision")
  if _missing("triton"):
    # PyTorch loads its compiler stack lazily (torch.optim does) and takes any `triton` module it
    # then finds for the real one: load it first, while there is none.
    import torch._dynamo  # noqa: F401

    language = _module("triton.language", constexpr=object)
    _module("triton", jit=lambda fn=None, **kwargs: fn, language=language)
    installed.append("triton")
  if _missing("wget"):
    _module("wget", download=_unavailable("wget.download"))
    installed.append("wget")
  return installed


def load_selective_scan_easy(repo: Path, chunksize: int):
  """VMamba's `selective_scan_easy` (the first definition in its test file), compiled alone."""
  import math

  import torch
  import torch.nn.functional as F
  from einops import rearrange, repeat

  path = repo / "kernels" / "selective_scan" / "test_selective_scan_easy.py"
  tree = ast.parse(path.read_text(), filename=str(path))
  node = next(
    n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "selective_scan_easy"
  )
  namespace = dict(torch=torch, F=F, math=math, rearrange=rearrange, repeat=repeat)
  exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
  scan = namespace["selective_scan_easy"]

  class EasyScan:
    """Stands in for `SelectiveScanOflex`: same `apply` signature, autograd through torch ops."""

    @staticmethod
    def apply(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, *unused):
      return scan(u, delta, A, B, C, D, delta_bias, delta_softplus, chunksize=chunksize)

  return EasyScan


def build_original(repo: Path):
  """The authors' DASS-small (random init, seed 0) on the CPU path described above."""
  import torch

  if not (repo / "src" / "models" / "vmamba.py").is_file():
    raise SystemExit(f"--dass-repo {repo}: no src/models/vmamba.py (not a DASS checkout?)")
  stand_ins = install_stand_ins()
  sys.path.insert(0, str(repo / "src"))
  import models  # the original package: src/models/__init__.py
  from models import csms6s, vmamba

  vmamba.CrossScanTriton, vmamba.CrossMergeTriton = csms6s.CrossScan, csms6s.CrossMerge
  vmamba.SelectiveScanOflex = load_selective_scan_easy(repo, ORIGINAL_SCAN_CHUNK)
  torch.manual_seed(0)
  model = models.DASS(
    label_dim=NUM_CLASSES,
    imagenet_pretrain=False,
    audioset_pretrain=False,
    model_size="small",
    verbose=False,
  )
  return model, stand_ins


# ------------------------------------------------------------------------------------------------
# The comparisons.
# ------------------------------------------------------------------------------------------------
def rel_err(ours, ref) -> float:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def forward_rows(torch_model, params, args) -> list[str]:
  import torch

  torch_model.eval()
  rows = []
  for frames in args.frames:
    x = np.random.default_rng(frames).standard_normal((1, frames, MEL_BINS), dtype=np.float32)
    xt, xj = torch.from_numpy(x), jnp.asarray(x)
    forwards = {
      impl: jax.jit(DASS(DassConfig.small(scan_impl=impl, num_classes=NUM_CLASSES)).apply)
      for impl in args.impls
    }
    with torch.inference_mode():
      ref = torch_model(xt).numpy()
      errors = {impl: rel_err(f({"params": params}, xj), ref) for impl, f in forwards.items()}
      calls = {
        impl: (lambda f=f, xj=xj: jax.block_until_ready(f({"params": params}, xj)))
        for impl, f in forwards.items()
      }
      calls["original"] = lambda xt=xt: torch_model(xt)
      times = blockwise_medians(calls, args.repeats, args.rounds)
    cells = [str(frames), f"{frames / 100:g}"]
    for impl in args.impls:
      cells += [f"{times[impl]:.3f}", f"{times['original'] / times[impl]:.2f}"]
    cells += [f"{times['original']:.3f}", " / ".join(f"{errors[i]:.1e}" for i in args.impls)]
    rows.append("| " + " | ".join(cells) + " |")
    print(rows[-1], flush=True)
  return rows


def train_step_row(torch_model, params, args) -> str:
  import torch

  frames = args.train_frames
  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, frames, MEL_BINS), dtype=np.float32)
  y = (rng.random((1, NUM_CLASSES)) < 0.05).astype(np.float32)

  torch_model.train()
  optimizer = torch.optim.Adam(torch_model.parameters(), lr=ADAM_LR)
  xt, yt = torch.from_numpy(x), torch.from_numpy(y)

  def torch_step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(torch_model(xt), yt)
    loss.backward()
    optimizer.step()
    return loss

  xj, yj = jnp.asarray(x), jnp.asarray(y)
  calls = {}
  for impl in args.impls:
    step = TrainStep(DASS(DassConfig.small(scan_impl=impl, num_classes=NUM_CLASSES)), params)
    calls[impl] = lambda step=step: step(xj, yj)
  calls["original"] = torch_step
  times = blockwise_medians(calls, args.repeats, args.rounds)
  cells = [str(frames)]
  for impl in args.impls:
    cells += [f"{times[impl]:.3f}", f"{times['original'] / times[impl]:.2f}"]
  cells.append(f"{times['original']:.3f}")
  return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dass-repo", type=Path, required=True, help="checkout of the original")
  parser.add_argument("--frames", type=int, nargs="*", default=[1024, 4096, 10240])
  parser.add_argument(
    "--train-frames", type=int, default=1024, help="frames of the training step; 0 skips it"
  )
  parser.add_argument("--impls", nargs="+", default=["auto", "associative"], help="our scans")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation")
  parser.add_argument("--rounds", type=int, default=1, help="blocks the repeats are split into")
  parser.add_argument("--threads", type=int, default=2, help="torch threads")
  args = parser.parse_args(argv)

  import torch

  torch.set_num_threads(args.threads)
  load_before = os.getloadavg()
  torch_model, stand_ins = build_original(args.dass_repo.resolve())
  sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  config, params = torch_to_flax(sd)
  params = jax.tree.map(jnp.asarray, params)
  assert config.depths == DassConfig.small().depths, config

  print(
    f"# DASS-small on CPU: dass-jax vs the original PyTorch code\n\n"
    f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
    f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
    f"({torch.get_num_threads()} threads); batch 1, fp32, median of {args.repeats} in "
    f"{args.rounds} round(s) of blocks; stand-ins for {stand_ins or 'nothing'}; original scan: "
    f"selective_scan_easy, chunk {ORIGINAL_SCAN_CHUNK}; load average before "
    f"{load_before[0]:.1f}\n",
    flush=True,
  )
  if args.frames:
    header = ["frames", "audio (s)"]
    for impl in args.impls:
      header += [f"dass-jax {impl} (s)", f"original / {impl}"]
    header += ["original (s)", f"logits rel. err. ({' / '.join(args.impls)})"]
    print("## Forward\n\n| " + " | ".join(header) + " |\n|" + "---:|" * len(header), flush=True)
    forward_rows(torch_model, params, args)
  if args.train_frames:
    header = ["frames"]
    for impl in args.impls:
      header += [f"dass-jax {impl} (s)", f"original / {impl}"]
    header.append("original (s)")
    print(
      "\n## Training step (forward + backward + Adam)\n\n| "
      + " | ".join(header)
      + " |\n|"
      + "---:|" * len(header),
      flush=True,
    )
    print(train_step_row(torch_model, params, args), flush=True)
  print(f"\nload average after {os.getloadavg()[0]:.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
