#!/usr/bin/env bash
# Creates the separate environment of the offline Triton compile (requirements-triton.txt) in
# work_dirs/triton_venv, or another folder given as $1; does nothing when it is already there with
# the pinned version. Costs one ~290 MB wheel download and ~1.1 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-work_dirs/triton_venv}"
pinned="$(sed -n 's/^triton==//p' requirements-triton.txt)"
if "$venv/bin/python" -c "import sys, triton; sys.exit(triton.__version__ != '$pinned')" 2>/dev/null
then
  exit 0
fi
python -m venv --clear "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-triton.txt
"$venv/bin/python" -c "import triton; print('triton', triton.__version__, 'in $venv')"
