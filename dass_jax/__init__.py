"""DASS (Distilled Audio State-Space models) in JAX/Flax (Linen)."""

from dass_jax.checkpoint import build_model, load_model, save_converted
from dass_jax.config import AstConfig, DassConfig

__all__ = ["AstConfig", "DassConfig", "build_model", "load_model", "save_converted"]
