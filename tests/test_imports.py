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
  "dass_jax.timeline",
  "dass_jax.cache",
  "convert_torch.published",  # what load_model reads to tell a published name from a folder
  "pallas_kernels",
)


def test_inference_modules_import_without_data_or_torch_packages():
  script = textwrap.dedent(f"""
    import importlib, sys

    class Absent:
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
          raise ImportError(f"{{name}} is absent in this test")

    sys.meta_path.insert(0, Absent())
    for module in {MODULES!r}:
      importlib.import_module(module)
    print("imported", len({MODULES!r}))
  """)
  out = subprocess.run(
    [sys.executable, "-c", script],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
  )
  assert out.returncode == 0, out.stderr
  assert f"imported {len(MODULES)}" in out.stdout
