"""docs/parity.md's table of measured values: runs the parity tests, tabulates their measurements.

    python scripts/parity_table.py                 # run the tests, rewrite docs/parity.md's table
    python scripts/parity_table.py --print         # run them, print the table only
    python scripts/parity_table.py --from rows.jsonl --print   # tabulate rows recorded earlier

Every parity test reports its measured errors through `tests/numerics.py`'s `record` (one JSON line
per comparison into $DASS_JAX_PARITY_JSON). This script runs those tests with that variable set,
groups the lines by check (a parametrized check's row is its worst value over the cases) and writes
a markdown table with the measured error, the bound the test asserts and the number of
comparisons, headed by the date, commit, device and versions, between the markers
`<!-- parity-table:begin -->` and `<!-- parity-table:end -->` of docs/parity.md. A failing test
makes the script fail without touching the page. About 6 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "parity.md"
BEGIN, END = "<!-- parity-table:begin -->", "<!-- parity-table:end -->"
# The tests that compare with PyTorch code (the authors' code, its twins, the reference packages).
TESTS = (
  "tests/test_dass_golden.py",
  "tests/test_scan_reference.py",
  "tests/test_predict.py::test_acceptance_cli_logits_match_torch",
  "tests/test_convert_ast.py",
  "tests/test_aum_model.py",
  "tests/test_dasheng_model.py",
  "tests/test_dasheng_frontend.py",
  "tests/test_features.py",
)


def run_tests(rows_path: str) -> None:
  env = {**os.environ, "DASS_JAX_PARITY_JSON": rows_path, "JAX_PLATFORMS": "cpu"}
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
  proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
  if proc.returncode != 0:
    raise SystemExit(f"the parity tests failed (exit {proc.returncode}); docs/parity.md unchanged")


def tabulate(rows: list[dict]) -> list[str]:
  """Markdown rows: check, measure, worst measured value, bound, comparisons (first-seen order)."""
  checks: dict[str, list[dict]] = {}
  for row in rows:
    checks.setdefault(row["check"], []).append(row)
  lines = [
    "| check | measure | measured (worst) | test bound | comparisons |",
    "|---|---|---:|---:|---:|",
  ]
  for check, group in checks.items():
    worst = max(group, key=lambda r: r["err"])
    note = f" (`{worst['worst_name']}`)" if worst.get("worst_name") else ""
    extra = f"; max abs {worst['max_abs']:.1e}" if "max_abs" in worst else ""
    lines.append(
      f"| {check}{note} | {worst['measure']} | {worst['err']:.1e}{extra} | {worst['bound']:g} "
      f"| {len(group)} |"
    )
  return lines


def _versions() -> str:
  import jax
  import numpy

  text = f"Python {platform.python_version()}, jax {jax.__version__}, numpy {numpy.__version__}"
  try:
    import torch

    text += f", torch {torch.__version__}"
  except ImportError:
    pass
  return text


def _cpu() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
  except OSError:
    pass
  return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def header() -> str:
  commit = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
  ).stdout.strip()
  date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
  return (
    f"Measured {date} by `python scripts/parity_table.py` at commit {commit or '?'}; "
    f"{_cpu()}, fp32; {_versions()}."
  )


def write_page(table: list[str]) -> None:
  text = PAGE.read_text()
  if BEGIN not in text or END not in text:
    raise SystemExit(f"{PAGE} lacks the markers {BEGIN} / {END}")
  before, rest = text.split(BEGIN, 1)
  after = rest.split(END, 1)[1]
  body = "\n".join([header(), "", *table])
  from dass_jax import files

  files.write_text(PAGE, f"{before}{BEGIN}\n{body}\n{END}{after}")


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--from", dest="rows", help="a JSON-lines file recorded earlier")
  parser.add_argument("--print", action="store_true", help="print the table, leave the page")
  args = parser.parse_args()
  if args.rows:
    rows_path = args.rows
  else:
    rows_path = tempfile.mkstemp(suffix=".jsonl")[1]
    run_tests(rows_path)
  rows = [json.loads(line) for line in Path(rows_path).read_text().splitlines() if line.strip()]
  if not rows:
    raise SystemExit("no measured values recorded")
  table = tabulate(rows)
  if args.print:
    print("\n".join([header(), "", *table]))
  else:
    write_page(table)
    print(f"wrote {len(table) - 2} rows into {PAGE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
