#!/usr/bin/env bash
# Drift check (not run by CI): the suite against the newest releases that pyproject.toml's ranges
# allow, in a fresh virtual environment, so that a breaking release is found on purpose.
#
#   bash scripts/test_latest.sh [pytest args]
#
# Prints the packages whose versions differ from requirements-lock.txt and writes the whole freeze
# to work_dirs/drift/freeze.txt; if the suite passes, that file can replace the lock's body.
# torch stays pinned to the 2.13.0 CPU build: an unpinned torch pulls gigabytes of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
out=work_dirs/drift
mkdir -p "$out"
venv="$out/venv"
rm -rf "$venv"
python -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q --upgrade --upgrade-strategy eager -e ".[torch,test,dev,tfds,export]"
"$py" -m pip install -q --no-deps "dasheng==0.0.9"  # see scripts/test.sh
"$py" -m pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$/torch==2.13.0/' > "$out/freeze.txt"
echo "== versions that differ from requirements-lock.txt (lock -> newest)"
"$py" - "$out/freeze.txt" <<'PY'
import sys
def pins(path):
  out = {}
  for line in open(path):
    line = line.strip()
    if line and not line.startswith("#") and "==" in line:
      name, version = line.split("==", 1)
      out[name.lower().replace("_", "-")] = version
  return out
lock, new = pins("requirements-lock.txt"), pins(sys.argv[1])
for name in sorted(set(lock) | set(new)):
  if lock.get(name) != new.get(name):
    print(f"  {name}: {lock.get(name, '-')} -> {new.get(name, '-')}")
PY
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$py" -m pytest -q -n 2 --dist loadfile "$@"
