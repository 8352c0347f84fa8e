"""Offline compile of the Pallas kernels for sm_80 and sm_90a on a machine without a GPU.

    python benchmarks/offline_compile.py                 # the DASS/AuM set, markdown to stdout
    python benchmarks/offline_compile.py --set ci        # one small configuration (the CI test)
    python benchmarks/offline_compile.py --num-warps 1,2,4   # also compile other warp counts

1. Extraction (this environment): each configuration's forward + backward is lowered for CUDA
   (`pallas_kernels.triton_lowering`); every Triton custom call's module is re-printed as TTIR
   text by jaxlib's own Triton dialect and written to --out with a manifest (identical modules
   once).
2. Compilation (the separate environment with the pinned triton, `scripts/triton_venv.sh`,
   created when missing): `benchmarks/triton_ptxas.py` runs Triton's NVIDIA stages to PTX and
   cubin with the module's num_warps and num_stages as XLA would pass them, then the bundled
   `ptxas -v` for sm_80 and sm_90a.
3. A markdown table per kernel: registers per thread, spill stores/loads, shared memory
   (ptxas's static smem and Triton's own allocation), `bar.sync` count in the PTX, whether all
   global loads/stores are `asm sideeffect` in the LLVM IR, and the warps per SM the
   registers allow (theoretical occupancy: 65 536 registers and at most 32 CTAs and 64 warps
   per SM on both A100 and H100).

Caveat: on a GPU, XLA compiles these modules with the Triton fork it links, not this wheel, so
the figures are those of an upstream Triton of the same generation; the GPU check
(`scripts/gpu_check.sh`) measures the real thing. Exit status 1 if a module fails to compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp

from pallas_kernels.triton_lowering import (
  lower_for,
  scan_kernel_call,
  ss2d_kernel_call,
  triton_calls,
  ttir_text,
)

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "work_dirs" / "triton_venv"
ARCHS = (80, 90)
REGISTERS_PER_SM, MAX_CTAS_PER_SM, MAX_WARPS_PER_SM = 65536, 32, 64


@dataclasses.dataclass(frozen=True)
class Config:
  """One lowering: a kernel family at one shape and dtype."""

  label: str
  kernel: str  # "ss2d" (fused) or "scan"
  shape: tuple  # ss2d: (batch, H, W, d, N, rank); scan: (batch, K, d, N, L)
  dtype: str
  chunk_size: int | None = None

  def call(self):
    build = ss2d_kernel_call if self.kernel == "ss2d" else scan_kernel_call
    return build(*self.shape, jnp.dtype(self.dtype), chunk_size=self.chunk_size)

  @property
  def n(self) -> int:
    return self.shape[4] if self.kernel == "ss2d" else self.shape[3]


def _dass_stage(stage: int, frames: int, dtype: str) -> Config:
  d = 96 << (stage - 1)
  height, width = 32 >> (stage - 1), -(frames // -(4 << (stage - 1)))
  label = f"DASS stage {stage}, {frames} frames ({height}x{width}), fused"
  return Config(label, "ss2d", (12, height, width, d, 1, -(d // -16)), dtype)


SETS = {
  # DASS-small's SS2D blocks at batch 12 x 1024 frames (fused route, what DASS runs), stage 1 at
  # 1028 frames (padded chunks), the plain scan at stage 1 (the unfused route), AuM-base's scan.
  "dass": [
    *(_dass_stage(s, 1024, dt) for dt in ("float32", "bfloat16") for s in (1, 2, 3, 4)),
    _dass_stage(1, 1028, "float32"),
    *(
      Config("DASS stage 1, plain scan (unfused route)", "scan", (12, 4, 96, 1, 8192), dt)
      for dt in ("float32", "bfloat16")
    ),
    *(
      Config("AuM-base scan (K=2, d 1536, N 16, L 513)", "scan", (12, 2, 1536, 16, 513), dt)
      for dt in ("float32", "bfloat16")
    ),
  ],
  # One small configuration: the fused family, forward and backward, in 3 chunks.
  "ci": [
    Config("fused SS2D, 8x12 map, d 96, chunks of 32", "ss2d", (1, 8, 12, 96, 1, 6), "float32", 32)
  ],
}


def extract(configs, out: Path) -> list[dict]:
  """Lowers each configuration for CUDA and writes its Triton modules; returns the manifest."""
  out.mkdir(parents=True, exist_ok=True)
  modules, seen = [], {}
  for i, config in enumerate(configs):
    fn, args = config.call()
    for call in triton_calls(lower_for("cuda", fn, *args)):
      if call.digest in seen:
        seen[call.digest]["configs"].append(config.label)
        continue
      path = out / f"{i:02d}_{call.name}_{call.digest}.ttir"
      path.write_text(ttir_text(call))
      module = {
        "id": path.stem,
        "ttir": str(path),
        "name": call.name,
        "config": config.label,
        "configs": [config.label],
        "dtype": config.dtype,
        "n": config.n,
        "grid": list(call.grid),
        "num_warps": call.num_warps,
        "num_stages": call.num_stages,
      }
      seen[call.digest] = module
      modules.append(module)
  (out / "manifest.json").write_text(json.dumps({"modules": modules}, indent=1))
  return modules


def ensure_triton_venv(venv: Path = VENV) -> Path:
  """The pinned-triton environment's python (scripts/triton_venv.sh creates it if missing)."""
  subprocess.run(["bash", str(REPO / "scripts" / "triton_venv.sh"), str(venv)], check=True)
  return venv / "bin" / "python"


def compile_modules(python: Path, out: Path, num_warps: str = "") -> dict:
  """Runs benchmarks/triton_ptxas.py in the triton environment; returns its results."""
  cmd = [str(python), str(REPO / "benchmarks" / "triton_ptxas.py"), str(out / "manifest.json")]
  cmd += [str(out / "results.json"), *(f"--arch={a}" for a in ARCHS)]
  if num_warps:
    cmd.append(f"--num-warps={num_warps}")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
  return json.loads((out / "results.json").read_text())


def resident_warps(registers: int, warps_per_cta: int) -> int:
  """Warps per SM the register file allows (per-warp allocation in units of 256 registers)."""
  per_warp = -(-registers * 32 // 256) * 256
  ctas = min(MAX_CTAS_PER_SM, REGISTERS_PER_SM // (per_warp * warps_per_cta))
  return min(MAX_WARPS_PER_SM, ctas * warps_per_cta)


def _cells(row: dict) -> list[str]:
  if "error" in row:
    return ["failed", "", "", ""]
  spill = f"{row['spill_stores']}/{row['spill_loads']}"
  return [
    str(row["registers"]),
    spill,
    str(resident_warps(row["registers"], row["num_warps"])),
    f"{row['smem_bytes']}/{row['triton_shared_bytes']}",
  ]


def markdown(modules: list[dict], results: dict) -> list[str]:
  """One row per module (at the manifest's num_warps) and, if compiled, a warp-count sweep."""
  by_key = {(r["id"], r["arch"], r["num_warps"]): r for r in results["results"]}
  arch_cols = [
    f"sm_{a}{'a' if a == 90 else ''} {c}"
    for a in ARCHS
    for c in ("regs", "spill st/ld (B)", "warps/SM", "smem/Triton shared (B)")
  ]
  header = ["configuration", "kernel", "dtype", "N", "programs", "num_warps", *arch_cols]
  header += ["bar.sync", "global ld/st sideeffect"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for m in modules:
    rows = [by_key[m["id"], a, m["num_warps"]] for a in ARCHS]
    cells = [m["config"], f"`{m['name']}`", m["dtype"], str(m["n"])]
    cells += [str(m["grid"][0] * m["grid"][1] * m["grid"][2]), str(m["num_warps"])]
    for row in rows:
      cells += _cells(row)
    first = rows[-1]
    side = f"{first.get('global_accesses_sideeffect', 0)}/{first.get('global_accesses', 0)}"
    cells += [str(first.get("barriers", "")), side]
    lines.append("| " + " | ".join(cells) + " |")
  sweep = sorted({w for (_, _, w) in by_key} - {m["num_warps"] for m in modules})
  if sweep:
    lines += ["", "num_warps sweep (sm_90a: regs, spill st/ld, warps/SM, bar.sync):", ""]
    counts = sorted({w for (_, _, w) in by_key})
    lines.append(
      "| configuration | kernel | dtype | " + " | ".join(f"{w} warps" for w in counts) + " |"
    )
    lines.append("|" + "---|" * (3 + len(counts)))
    for m in modules:
      cells = [m["config"], f"`{m['name']}`", m["dtype"]]
      for w in counts:
        row = by_key.get((m["id"], 90, w), {"error": "missing"})
        if "error" in row:
          cells.append("failed")
        else:
          regs, warps = row["registers"], resident_warps(row["registers"], w)
          spill = f"{row['spill_stores']}/{row['spill_loads']}"
          cells.append(f"{regs}, {spill}, {warps}, {row['barriers']}")
      lines.append("| " + " | ".join(cells) + " |")
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--set", default="dass", choices=sorted(SETS))
  parser.add_argument("--out", type=Path, default=REPO / "work_dirs" / "offline_compile")
  parser.add_argument("--venv", type=Path, default=VENV)
  parser.add_argument("--num-warps", default="", help="also compile these warp counts, e.g. 1,2,4")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  modules = extract(SETS[args.set], args.out / args.set)
  extracted = time.perf_counter() - start
  python = ensure_triton_venv(args.venv)
  version = subprocess.run(
    [str(python), "-c", "import triton; print(triton.__version__)"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()
  results = compile_modules(python, args.out / args.set, args.num_warps)
  print(f"# Offline Triton compile ({args.set} set)")
  print(
    f"{len(modules)} modules from {len(SETS[args.set])} configurations; jax lowering in "
    f"{extracted:.0f} s, triton {version} + its bundled ptxas, total "
    f"{time.perf_counter() - start:.0f} s, "
    f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
  )
  print()
  print("\n".join(markdown(modules, results)))
  failed = [r for r in results["results"] if "error" in r]
  for row in failed:
    print(f"\nfailed: {row['id']} sm_{row['arch']} num_warps {row['num_warps']}: {row['error']}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
