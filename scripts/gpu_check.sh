#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): kernel tests, the scan benchmarks, DASS-small training
# throughput and the longest single forward pass, into one markdown report (plus REPORT.tests.log,
# REPORT.junit.xml and REPORT.bench*.log beside it), in at most 9 minutes on one H100/H200.
# Exit status 1 if any test, timing or row failed or any section was cut by the time budget.
# `--dry-run` runs the same script with tiny shapes on CPU.
#   scripts/gpu_check.sh REPORT.md [--dry-run] [--budget-s 540] [--steps 10]
#                                  [--sections tests,bench,environment,throughput,longest]
# Needs jax (CUDA), flax, optax, numpy and pytest; the repository need not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 benchmarks/gpu_check.py "$@"
