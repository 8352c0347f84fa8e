"""DASS (Distilled Audio State-Space models) in JAX/Flax (Linen), with the models it is compared
with and distilled from.

  dass_jax.models      the models (DASS, AST, Dasheng, AuM) and their registry
  dass_jax.layers      the layers they share
  dass_jax.frontends   audio front ends (Kaldi fbank, Dasheng log-mel)
  dass_jax.checkpoint  converted checkpoints: save_converted / load_model
"""

import importlib

# Exported lazily (PEP 562), so that the jax-free modules (`dass_jax.onnx_model`, the numpy fbank,
# `python -m dass_jax.predict --onnx`) import where JAX is not installed.
_EXPORTS = {
  "AstConfig": "dass_jax.models",
  "AumConfig": "dass_jax.models",
  "DassConfig": "dass_jax.models",
  "build_model": "dass_jax.models",
  "load_model": "dass_jax.checkpoint",
  "save_converted": "dass_jax.checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'dass_jax' has no attribute {name!r}")
  return getattr(importlib.import_module(_EXPORTS[name]), name)
