#!/usr/bin/env bash
# Installs everything the tests need (torch pinned to the CPU build) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[torch,test]"
python -m pytest -q -n 2 --dist loadfile --durations=30 "$@"
