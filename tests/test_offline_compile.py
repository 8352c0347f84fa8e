"""The offline compile (benchmarks/offline_compile.py) on its one small configuration.

The fused SS2D family's four kernels (forward, backward, in three chunks) are lowered for CUDA
here, re-printed as TTIR, and compiled by the pinned triton in its own environment
(scripts/triton_venv.sh; scripts/test.sh creates it before the tests, ~30 s and a 290 MB
download once per machine, and this test creates it if it is missing) to PTX and cubin for
sm_80 and sm_90a, with ptxas -v. Checked: every module compiles for both targets with the
num_warps the lowering passes to XLA, without spills or local-memory stack, within the
register file; the barriers of `pallas_plumbing.sync_program` reach the PTX (one between the
forward's two routes; the backward's checkpoint/replay barriers); every global load and store
is an `asm sideeffect` (what keeps LLVM from moving it across them). ~15 s of CPU plus the
environment.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import offline_compile

ARCHS = {80, 90}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  out = tmp_path_factory.mktemp("offline_compile")
  modules = offline_compile.extract(offline_compile.SETS["ci"], out)
  python = offline_compile.ensure_triton_venv()
  return modules, offline_compile.compile_modules(python, out)


def test_every_kernel_compiles_for_sm80_and_sm90a(compiled):
  modules, results = compiled
  assert results["triton"] == "3.9.0"
  assert [m["name"] for m in modules] == [
    "ss2d_fused_fwd_chunk_states",
    "ss2d_fused_fwd",
    "ss2d_fused_bwd_chunk_carries",
    "ss2d_fused_bwd",
  ]
  rows = {(r["id"], r["arch"]): r for r in results["results"]}
  assert set(rows) == {(m["id"], a) for m in modules for a in ARCHS}
  for (module_id, arch), row in rows.items():
    assert "error" not in row, (module_id, arch, row.get("error"))
    assert row["num_warps"] == 1
    assert row["spill_stores"] == row["spill_loads"] == row["stack_bytes"] == 0, row
    assert 16 <= row["registers"] <= 255, row
    assert offline_compile.resident_warps(row["registers"], row["num_warps"]) >= 8, row
    assert row["cubin_bytes"] > 0


def test_memory_order_reaches_the_ptx(compiled):
  modules, results = compiled
  by_name = {m["name"]: m["id"] for m in modules}
  for row in results["results"]:
    assert row["global_accesses"] > 0
    assert row["global_accesses_sideeffect"] == row["global_accesses"], row
  barriers = {
    name: {r["barriers"] for r in results["results"] if r["id"] == module_id}
    for name, module_id in by_name.items()
  }
  assert barriers["ss2d_fused_fwd_chunk_states"] == {0}  # nothing read back: no barrier
  assert min(barriers["ss2d_fused_fwd"]) >= 1  # route 1 adds to route 0's tokens
  # Per route: after the checkpoint sweep, after each replay and each walk; between routes.
  assert min(barriers["ss2d_fused_bwd"]) >= 7


def test_markdown_table(compiled):
  modules, results = compiled
  lines = offline_compile.markdown(modules, results)
  assert lines[0].startswith("| configuration | kernel | dtype | N | programs | num_warps |")
  assert len(lines) == 2 + len(modules)
  assert all(" | 0/0 | " in line for line in lines[2:])  # no spills on either target
