"""scripts/gpu_check.sh --dry-run runs end to end on CPU, without the data or torch packages.

The real check needs an H100/H200 (README, "GPU check"); the dry run is the same script on
tiny shapes with the Pallas kernel interpreted. It runs in a subprocess in which the packages an
accelerator image lacks (test_imports.ABSENT) cannot be imported, and must write every section
of its report.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_imports import ABSENT

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"[0-9]+\.[0-9]+"


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path):
  report = tmp_path / "gpu_check.md"
  script = textwrap.dedent(f"""
    import runpy, sys

    class Absent:
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
          raise ImportError(f"{{name}} is absent in this test")

    sys.meta_path.insert(0, Absent())
    sys.argv = ["gpu_check.py", {str(report)!r}, "--dry-run"]
    runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
  """)
  proc = subprocess.run(
    [sys.executable, "-c", script],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  text = report.read_text()
  for section in (
    "## 1. GPU correctness tests",
    "## 2. Selective-scan benchmark",
    "## 3. Environment",
    "## 4. DASS training throughput",
    "## 5. Longest single DASS forward pass",
  ):
    assert section in text, section
  assert re.search(r"tests/test_pallas_gpu.py`: exit 0.*\n\n +\d+ skipped", text)  # CPU: skips
  assert "pallas_kernels.bench --quick --impl chunked" in text and "Failures" not in text
  rows = re.findall(r"^\| (float32|bfloat16) \| (\w+) \| (.*) \|$", text, re.M)
  assert [r[:2] for r in rows] == [("float32", "pallas"), ("bfloat16", "chunked")]
  for _, _, cells in rows:
    assert all(re.fullmatch(NUMBER, c.strip()) for c in cells.split("|")), cells
  assert re.search(rf"^\| \d+ \| {NUMBER} \| ran \| {NUMBER} \|", text, re.M)
  assert re.search(r"^Total \d+ s of the 480 s budget\.$", text, re.M)
