#!/usr/bin/env bash
# The README's test command (.ci/run calls it): installs exactly the pinned set of
# requirements-lock.txt (torch is the 2.13.0 CPU build), then runs ruff (lint + format check) and the
# whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c requirements-lock.txt "torch==2.13.0"
python -m pip install -q -c requirements-lock.txt -e ".[torch,test,dev,tfds,export]"
# The PyTorch reference of the Dasheng parity tests. Without its dependencies: they are an unpinned
# torch and torchaudio (whose PyPI build does not import beside the CPU torch); the tests stand in
# for torchaudio (torch_reference/torchaudio_double.py) and the test extra brings einops.
python -m pip install -q -c requirements-lock.txt --no-deps "dasheng==0.0.9"
# The ONNX converter of dass_jax.export, without its declared dependencies: it caps orbax-checkpoint
# below our pin and asks for libraries its converter never imports (pyproject.toml, [export]).
python -m pip install -q -c requirements-lock.txt --no-deps "jax2onnx==0.17.1"
# The separate pinned-triton environment of the offline compile test (tests/test_offline_compile.py;
# requirements-triton.txt): ~30 s and one 290 MB wheel the first time, nothing once it exists.
bash scripts/triton_venv.sh
ruff check .
ruff format --check .
python -m pytest -q -n 2 --dist loadfile --durations=30 "$@"
