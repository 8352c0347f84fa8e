#!/usr/bin/env bash
# The prepared GPU check (README, "GPU check"): kernel tests, the scan benchmark, DASS-small
# training throughput and the longest single forward pass, into one markdown report, in at most
# 8 minutes on one H100/H200. `--dry-run` runs the same script with tiny shapes on CPU.
#   scripts/gpu_check.sh REPORT.md [--dry-run] [--budget-s 480] [--steps 10]
# Needs jax (CUDA), flax, optax, numpy and pytest; the repository need not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 benchmarks/gpu_check.py "$@"
