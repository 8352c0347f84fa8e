"""Test cases that need several devices, run in a fresh process with simulated CPU devices.

A CPU process gets its device count from XLA_FLAGS once, when JAX initialises, and the pytest
process has already initialised with one device. A test file therefore defines its multi-device
cases as functions `case_<name>()` and runs each one as a script in a subprocess with
`--xla_force_host_platform_device_count`; the assertions run there and a failure shows up as
the subprocess's traceback:

    CASES = cases(globals())

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_on_4_cpu_devices(case):
      run_case(__file__, case, n_devices=4)

    if __name__ == "__main__":
      run_as_script(CASES)
"""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CASE_PREFIX = "case_"


def cases(namespace: dict) -> dict:
  """{name: function} of the `case_<name>` functions of a module namespace."""
  return {k[len(CASE_PREFIX) :]: v for k, v in namespace.items() if k.startswith(CASE_PREFIX)}


def run_case(test_file: str, case: str, n_devices: int, timeout: float = 600) -> None:
  """Runs `python test_file case` on `n_devices` simulated CPU devices; asserts it passed."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n_devices}"
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=flags.strip(),
    PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
  )
  proc = subprocess.run(
    [sys.executable, test_file, case],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert proc.returncode == 0, f"case {case} failed:\n{proc.stdout}\n{proc.stderr}"
  assert f"PASSED {case}" in proc.stdout


def run_as_script(all_cases: dict) -> None:
  """The `__main__` of a test file: runs the case named by argv[1]."""
  all_cases[sys.argv[1]]()
  print(f"PASSED {sys.argv[1]}")
