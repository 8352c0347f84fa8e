"""Compiles extracted Triton modules (TTIR text) to PTX and cubin; reports ptxas's resource use.

Runs in the separate environment with the pinned `triton` (scripts/triton_venv.sh), not in the
project's: it imports only the standard library and `triton`. `benchmarks/offline_compile.py`
writes the inputs and calls it:

    work_dirs/triton_venv/bin/python benchmarks/triton_ptxas.py MANIFEST.json RESULTS.json \\
        [--arch 80 --arch 90] [--num-warps 1,2,4]

MANIFEST.json: {"modules": [{"id", "ttir" (a path), "num_warps", "num_stages"}, ...]}.
For each module and each compute capability it runs Triton's NVIDIA stages (`triton.compile`:
TTIR -> TTGIR -> LLVM IR -> PTX -> cubin), then the wheel's bundled `ptxas -v` on the PTX for
sm_80 / sm_90a, and records registers per thread, spill stores/loads and stack frame bytes,
static shared memory (ptxas's `smem`, and the shared memory Triton itself allocates),
`bar.sync` barriers in the PTX, and whether every global load/store in the LLVM IR is an
`asm sideeffect` (what keeps LLVM from reordering them: see pallas_plumbing.sync_program).
With --num-warps, every module is also compiled with each listed warp count (the value XLA
will use is the manifest's). RESULTS.json: {"triton": version, "results": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PTXAS_USED = re.compile(r"Used (\d+) registers")
PTXAS_SPILL = re.compile(
  r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
PTXAS_SMEM = re.compile(r"(\d+) bytes smem")
GLOBAL_ASM = re.compile(r"call [^\n]*asm (sideeffect )?\"[^\"]*(?:ld|st)\.global")


def gpu_name(arch: int) -> str:
  """ptxas's --gpu-name: sm_90a on Hopper (what Triton targets there), sm_XY elsewhere."""
  return f"sm_{arch}a" if arch == 90 else f"sm_{arch}"


def ptxas_info(ptxas: str, ptx: str, arch: int) -> dict:
  """ptxas -v's resource lines for the (single-kernel) PTX."""
  with tempfile.TemporaryDirectory() as tmp:
    src = Path(tmp, "kernel.ptx")
    src.write_text(ptx)
    proc = subprocess.run(
      [ptxas, "-v", f"--gpu-name={gpu_name(arch)}", "-o", str(Path(tmp, "k.cubin")), str(src)],
      capture_output=True,
      text=True,
      check=True,
    )
  text = proc.stdout + proc.stderr
  spill = PTXAS_SPILL.search(text)
  smem = PTXAS_SMEM.search(text)
  return {
    "registers": int(PTXAS_USED.search(text).group(1)),
    "stack_bytes": int(spill.group(1)),
    "spill_stores": int(spill.group(2)),
    "spill_loads": int(spill.group(3)),
    "smem_bytes": int(smem.group(1)) if smem else 0,
  }


def compile_module(path: str, arch: int, num_warps: int, num_stages: int) -> dict:
  import triton
  from triton.backends.compiler import GPUTarget
  from triton.backends.nvidia import compiler as nvidia

  kernel = triton.compile(
    path,
    target=GPUTarget("cuda", arch, 32),
    options={"num_warps": num_warps, "num_stages": num_stages, "num_ctas": 1},
  )
  ptx, llir = kernel.asm["ptx"], kernel.asm["llir"]
  kinds = GLOBAL_ASM.findall(llir)
  info = ptxas_info(nvidia.get_ptxas(arch).path, ptx, arch)
  return {
    **info,
    "triton_shared_bytes": int(kernel.metadata.shared),
    "barriers": len(re.findall(r"\bbar(?:rier)?\.sync\b", ptx)),
    "global_accesses": len(kinds),
    "global_accesses_sideeffect": sum(1 for k in kinds if k),
    "cubin_bytes": len(kernel.asm["cubin"]),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("manifest", type=Path)
  parser.add_argument("results", type=Path)
  parser.add_argument("--arch", type=int, action="append", help="compute capability x10")
  parser.add_argument("--num-warps", default="", help="extra warp counts to compile, e.g. 1,2,4")
  args = parser.parse_args(argv)
  os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default; states it
  with tempfile.TemporaryDirectory(prefix="triton_cache_") as cache:
    os.environ.setdefault("TRITON_CACHE_DIR", cache)  # nothing left behind
    return _compile_all(args)


def _compile_all(args) -> int:
  import triton

  archs = args.arch or [80, 90]
  extra = [int(w) for w in args.num_warps.split(",") if w]
  modules = json.loads(args.manifest.read_text())["modules"]
  results = []
  for module in modules:
    for warps in sorted({module["num_warps"], *extra}):
      for arch in archs:
        row = {"id": module["id"], "arch": arch, "num_warps": warps}
        try:
          row.update(compile_module(module["ttir"], arch, warps, module["num_stages"]))
        except Exception as err:  # reported per module; the caller decides what fails
          row["error"] = f"{type(err).__name__}: {str(err)[:500]}"
        results.append(row)
        print(json.dumps(row), flush=True)
  args.results.write_text(json.dumps({"triton": triton.__version__, "results": results}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
