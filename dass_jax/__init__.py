"""DASS (Distilled Audio State-Space models) in JAX/Flax (Linen), with the models it is compared
with and distilled from.

  dass_jax.models      the models (DASS, AST, Dasheng, AuM) and their registry
  dass_jax.layers      the layers they share
  dass_jax.frontends   audio front ends (Kaldi fbank, Dasheng log-mel)
  dass_jax.checkpoint  converted checkpoints: save_converted / load_model
"""

from dass_jax.checkpoint import load_model, save_converted
from dass_jax.models import AstConfig, AumConfig, DassConfig, build_model

__all__ = ["AstConfig", "AumConfig", "DassConfig", "build_model", "load_model", "save_converted"]
