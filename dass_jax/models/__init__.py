"""The models of the package and their registry.

Every model is a Flax Linen module built from a frozen config dataclass (`models.base.ModelConfig`);
`MODELS` maps the config's `model_type` (the key stored in a converted checkpoint's config.json) to
its `ModelSpec`. What a model eats is part of the spec, so that prediction, training and the length
study feed each model the right input:

  "fbank"     normalised Kaldi fbank, (batch, frames, 128) float32 (AST, DASS)
  "waveform"  16 kHz mono samples, (batch, samples) float32 (Dasheng)

    from dass_jax import models
    model = models.build_model(models.DassConfig.small())
    spec = models.spec_of(config)          # spec.input_kind, spec.config_class, spec.module_class
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dass_jax.models.ast import AST, AstConfig
from dass_jax.models.base import ModelConfig
from dass_jax.models.dasheng import Dasheng, DashengConfig
from dass_jax.models.dass import DASS, DassConfig

INPUT_KINDS = ("fbank", "waveform")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model: its config class, its Linen module class and what it takes as input."""

  config_class: type[ModelConfig]
  module_class: type
  input_kind: str


MODELS: dict[str, ModelSpec] = {
  "dass": ModelSpec(DassConfig, DASS, "fbank"),
  "ast": ModelSpec(AstConfig, AST, "fbank"),
  "dasheng": ModelSpec(DashengConfig, Dasheng, "waveform"),
}


def spec_of(config: ModelConfig) -> ModelSpec:
  """The registry entry of a config instance."""
  spec = MODELS.get(getattr(config, "model_type", None))
  if spec is None or not isinstance(config, spec.config_class):
    raise TypeError(f"no registered model for config type {type(config).__name__}")
  return spec


def build_model(config: ModelConfig):
  """The Flax module for a config (DassConfig -> DASS, AstConfig -> AST, ...)."""
  return spec_of(config).module_class(config)


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
  """Builds the config named by d['model_type'] (one of MODELS)."""
  model_type = d.get("model_type")
  if model_type not in MODELS:
    raise ValueError(f"model_type must be one of {sorted(MODELS)}, got {model_type!r}")
  return MODELS[model_type].config_class.from_dict(d)


__all__ = [
  "AST",
  "DASS",
  "INPUT_KINDS",
  "MODELS",
  "AstConfig",
  "Dasheng",
  "DashengConfig",
  "DassConfig",
  "ModelConfig",
  "ModelSpec",
  "build_model",
  "config_from_dict",
  "spec_of",
]
