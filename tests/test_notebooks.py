"""The Colab notebooks in colab/, executed headless with nbclient in smoke mode.

Checked here:
  * every notebook runs top to bottom in a fresh `python3` kernel with
    DASS_JAX_NOTEBOOK_SMOKE=1, cwd = the repository root, JAX on CPU, a private DASS_JAX_CACHE
    and HF_HUB_OFFLINE=1 (CI has no network); any failing cell fails the test with its traceback
    (a notebook whose experiments module is missing or broken fails here, it is never skipped);
  * the inference and parity notebooks default to the published DASS-small
    (`published.DEFAULT_DASS`, in their settings cell) and, offline, say that they fall back to
    the demo checkpoint and name the weights they use;
  * each executed notebook shows the figures it promises (spectrogram, top-label bars and label
    timeline; logit scatter; live training plot; NIAH plot), and prints its key numbers (the
    parity notebook's max abs difference, the training table, the NIAH table);
  * the committed notebooks carry no outputs or execution counts, and their setup cell installs
    nothing when dass_jax is importable (the pip install sits behind `find_spec` and REPO_URL).
"""

import os
import re
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

from convert_torch.published import DEFAULT_DASS

REPO_ROOT = Path(__file__).resolve().parents[1]
COLAB = REPO_ROOT / "colab"
NOTEBOOKS = ("inference", "parity", "training", "niah")
PUBLISHED_DEFAULT = ("inference", "parity")  # notebooks whose default weights are published
# Generous: a cell that trains (training.ipynb) takes ~1 min on an idle 2-core CPU, several times
# that on a loaded one; the bound only catches a hung kernel.
CELL_TIMEOUT_S = 900
# (minimum number of images, regular expression the printed text must match)
EXPECTED = {
  "inference": (3, r"\d+ frames -> \d+ windows of \d+ frames every \d+"),
  "parity": (1, r"weights: DEMO.*\n.*max abs difference [0-9.e+-]+, relative [0-9.e+-]+"),
  "training": (1, r"student_kd\s+[0-9.]+\s+[0-9.]+"),
  "niah": (1, r"dass\s+zeros\s+\d+s\s+[0-9.]+"),
}


def _kernel_name() -> str:
  """'python3', installing the kernelspec of this interpreter for the user when it is missing."""
  try:
    KernelSpecManager().get_kernel_spec("python3")
  except NoSuchKernel:
    from ipykernel.kernelspec import install

    install(user=True, kernel_name="python3")
  return "python3"


def _read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(COLAB / f"{name}.ipynb", as_version=4)


def _outputs(nb: nbformat.NotebookNode) -> tuple[int, str]:
  """(number of image outputs, all printed text) of an executed notebook."""
  images, text = 0, []
  for cell in nb.cells:
    for output in cell.get("outputs", []):
      if output.output_type == "stream":
        text.append(output.text)
      elif "image/png" in output.get("data", {}):
        images += 1
  return images, "".join(text)


@pytest.mark.parametrize(
  "name",
  [
    pytest.param(name, marks=pytest.mark.slow) if name == "training" else name for name in NOTEBOOKS
  ],
)
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
  monkeypatch.setenv("DASS_JAX_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("DASS_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv(
    "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
  )
  nb = _read(name)
  client = NotebookClient(
    nb,
    timeout=CELL_TIMEOUT_S,
    kernel_name=_kernel_name(),
    resources={"metadata": {"path": str(REPO_ROOT)}},
  )
  client.execute()
  images, text = _outputs(nb)
  min_images, pattern = EXPECTED[name]
  assert images >= min_images, f"{name}: {images} figures shown, expected {min_images}"
  assert re.search(pattern, text), f"{name}: no line matching {pattern!r} in:\n{text[-3000:]}"
  assert "smoke mode: True" in text
  if name in PUBLISHED_DEFAULT:
    assert f"could not use CHECKPOINT='{DEFAULT_DASS}': " in text and "HF_HUB_OFFLINE" in text
    assert "weights: DEMO checkpoint" in text


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_installs_only_when_needed(name):
  nb = _read(name)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{name}: stored outputs"
  first_code = next(cell.source for cell in nb.cells if cell.cell_type == "code")
  assert 'REPO_URL = ""' in first_code
  guard = first_code.index('if importlib.util.find_spec("dass_jax") is None:')
  assert guard < first_code.index('"pip"') and guard < first_code.index('"git"')
  assert "DASS_JAX_NOTEBOOK_SMOKE" in first_code
  assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
  if name in PUBLISHED_DEFAULT:
    assert f"`{DEFAULT_DASS}`" in nb.cells[0].source
    settings = next(c.source for c in nb.cells if c.source.startswith("import tempfile"))
    assert f'CHECKPOINT = "{DEFAULT_DASS}"' in settings
