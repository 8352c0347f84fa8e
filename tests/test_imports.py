"""`dass_jax` and `pallas_kernels` import with jax, flax and numpy alone.

Accelerator images often lack the audio and data libraries, and torch is only for conversion; a
subprocess makes every such import fail and then imports the inference-side modules.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ABSENT = (
  "torch",
  "transformers",
  "safetensors",
  "librosa",
  "soundfile",
  "soxr",
  "grain",
  "ml_collections",
  "tensorboardX",
  "matplotlib",
  "tensorflow_datasets",
  "orbax",  # imported by the checkpoint functions when they run (dass_jax.checkpoint._orbax)
)
MODULES = (
  "dass_jax",
  "dass_jax.models",
  "dass_jax.layers",
  "dass_jax.frontends.kaldi_fbank",
  "dass_jax.predict",
  "dass_jax.embed",
  "dass_jax.hear",  # hear-eval-kit imports it; torch only in load_model
  "dass_jax.export",  # jax2onnx / onnx only when an ONNX file is written
  "dass_jax.onnx_model",
  "dass_jax.timeline",
  "dass_jax.cache",
  "convert_torch.published",  # what load_model reads to tell a published name from a folder
  "pallas_kernels",
)


# The ONNX prediction path (`python -m dass_jax.predict --onnx`) runs where JAX is not installed.
WITHOUT_JAX = ("jax", "jaxlib", "flax", "optax", "orbax", "chex")
JAX_FREE_MODULES = (
  "dass_jax",
  "dass_jax.onnx_model",
  "dass_jax.predict",
  "dass_jax.frontends.kaldi_fbank",
  "dass_jax.audio",
  "dass_jax.timeline",
  "dass_jax.labels",
)


def _import_with_absent(absent, modules) -> subprocess.CompletedProcess:
  script = textwrap.dedent(f"""
    import importlib, sys

    class Absent:
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {absent!r}:
          raise ImportError(f"{{name}} is absent in this test")

    sys.meta_path.insert(0, Absent())
    for module in {modules!r}:
      importlib.import_module(module)
    print("imported", len({modules!r}))
  """)
  return subprocess.run(
    [sys.executable, "-c", script],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
  )


def test_inference_modules_import_without_data_or_torch_packages():
  out = _import_with_absent(ABSENT, MODULES)
  assert out.returncode == 0, out.stderr
  assert f"imported {len(MODULES)}" in out.stdout


def test_onnx_prediction_modules_import_without_jax():
  out = _import_with_absent(WITHOUT_JAX, JAX_FREE_MODULES)
  assert out.returncode == 0, out.stderr
  assert f"imported {len(JAX_FREE_MODULES)}" in out.stdout
