"""scripts/gpu_check.sh --dry-run runs end to end on CPU, without the packages an accelerator
image lacks, and its exit status reports failures and cut sections.

The real check needs an H100/H200 (docs/gpu.md); the dry run is the same script on tiny shapes
with the Pallas kernel interpreted. It runs in a subprocess in which the packages an
accelerator image lacks (test_imports.ABSENT, orbax included) cannot be imported, and must write
every section of its report and exit 0. Two short runs of section 1 alone, pointed at a test
file of this test's making, check that a failing test and a section cut by the time budget
each make the exit status 1, with what ran before the cut kept in the report and the log.
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


def _run_check(report, *args, timeout=900):
  script = textwrap.dedent(f"""
    import runpy, sys

    class Absent:
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
          raise ImportError(f"{{name}} is absent in this test")

    sys.meta_path.insert(0, Absent())
    sys.argv = ["gpu_check.py", {str(report)!r}, "--dry-run", *{list(args)!r}]
    runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
  """)
  return subprocess.run(
    [sys.executable, "-c", script],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
  )


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path):
  report = tmp_path / "gpu_check.md"
  # A budget no loaded CI machine runs out of: a cut section would fail the run (tested below).
  proc = _run_check(report, "--budget-s", "5000", timeout=1500)
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
  # CPU: every GPU test skips; each result is in the live log.
  assert re.search(r"test_pallas_gpu.py`; .*\n\nexit 0, \d+ s; results so far: \d+ skipped", text)
  assert "SKIPPED" in (tmp_path / "gpu_check.tests.log").read_text()
  assert (tmp_path / "gpu_check.junit.xml").is_file()
  assert "pallas_kernels.bench --quick --impl chunked" in text and "Failures" not in text
  assert "- scan `auto` on this backend: chunked (no kernel self-check off GPU)" in text
  rows = re.findall(r"^\| (fp32\(highest\)|TF32|bf16) \| (\w+) \| (.*) \|$", text, re.M)
  assert [r[:2] for r in rows] == [("fp32(highest)", "pallas"), ("bf16", "chunked")]
  for _, _, cells in rows:
    assert all(re.fullmatch(NUMBER, c.strip()) for c in cells.split("|")), cells
  assert re.search(rf"^\| \d+ \| {NUMBER} \| ran \| {NUMBER} \|", text, re.M)
  assert re.search(r"^Total \d+ s of the 5000 s budget\.$", text, re.M)
  assert text.rstrip().endswith("Every section ran to its end without a failure.")


def test_failing_test_gives_exit_status_1(tmp_path):
  tests = tmp_path / "test_kernels.py"
  tests.write_text("def test_passes():\n  pass\n\n\ndef test_fails():\n  assert 1 == 2\n")
  report = tmp_path / "report.md"
  proc = _run_check(report, "--sections", "tests", "--tests", str(tests), timeout=300)
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  text = report.read_text()
  assert "exit 1" in text and "1 failed, 1 passed" in text
  assert re.search(r"^ +FAILED \S+::test_fails$", text, re.M)
  assert text.rstrip().endswith("Failed or cut: tests (exit 1).")


def test_section_cut_by_the_budget_gives_exit_status_1(tmp_path):
  """Section 1 gets 30 % of a 40 s budget; its second test sleeps past it. The first test's
  result, written when it finished, is in the log and the report."""
  tests = tmp_path / "test_slow.py"
  tests.write_text(
    "import time\n\n\ndef test_quick():\n  pass\n\n\ndef test_slow():\n  time.sleep(120)\n"
  )
  report = tmp_path / "report.md"
  proc = _run_check(
    report, "--sections", "tests", "--tests", str(tests), "--budget-s", "40", timeout=300
  )
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  text = report.read_text()
  assert "cut after 12 s (time budget)" in text and "results so far: 1 passed" in text
  assert "test_quick PASSED" in (tmp_path / "report.tests.log").read_text()
  assert text.rstrip().endswith("Failed or cut: tests (cut after 12 s (time budget)).")
