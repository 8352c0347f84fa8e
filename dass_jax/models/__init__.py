"""The models of the package and their registry.

Every model is a Flax Linen module built from a frozen config dataclass (`models.base.ModelConfig`);
`MODELS` maps the config's `model_type` (the key stored in a converted checkpoint's config.json) to
its `ModelSpec`. What a model eats is part of the spec, so that prediction, training and the length
study feed each model the right input:

  "fbank"     normalised Kaldi fbank, (batch, frames, 128) float32 (AST, DASS, AuM, SSLAM)
  "waveform"  16 kHz mono samples, (batch, samples) float32 (Dasheng)

Models whose position embeddings fix the input length (AST, AuM) have a `max_length` config field
(frames) and give `spec.with_max_length(params, config, max_length) -> (params, config)`, which
resizes the embeddings for inputs of another length; `fixed_length(config)` is that length, or
None for a model that takes any length (DASS). SSLAM computes its positions for any length but,
like its authors' inference, is fed clips of its `max_length` (its `with_max_length` changes only
the config). `spec.frozen` names the params ('/'-joined paths)
that hold statistics rather than weights, which training must leave unchanged (Dasheng's
BatchNorm mean and variance), and `spec.init_statistics(params, config, inputs) -> params` sets
them from a batch of training inputs for a model trained from scratch. `spec.hidden_states(
intermediates, config) -> (batch, time steps, D)` reads the model's last hidden state, as a
sequence over time, from the `intermediates` collection of `model.apply(..., mutable=
["intermediates"])` (`dass_jax.embed` turns it into scene and timestamp embeddings); a new model
registers one function here.

    from dass_jax import models
    model = models.build_model(models.DassConfig.small())
    spec = models.spec_of(config)          # spec.input_kind, spec.config_class, spec.module_class
    models.fixed_length(config)            # frames the model's input must have, or None
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from dass_jax.models import ast, aum, dasheng, dass, sslam
from dass_jax.models.ast import AST, AstConfig
from dass_jax.models.aum import AuM, AumConfig
from dass_jax.models.base import ModelConfig
from dass_jax.models.dasheng import Dasheng, DashengConfig
from dass_jax.models.dass import DASS, DassConfig
from dass_jax.models.sslam import SSLAM, SslamConfig

INPUT_KINDS = ("fbank", "waveform")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model: its config class, its Linen module class, what it takes as input, for a
  model with a fixed input length how to adapt its params to another length, and the params that
  training leaves unchanged."""

  config_class: type[ModelConfig]
  module_class: type
  input_kind: str
  with_max_length: Callable[[Any, ModelConfig, int], tuple[Any, ModelConfig]] | None = None
  frozen: tuple[str, ...] = ()
  init_statistics: Callable[[Any, ModelConfig, Any], Any] | None = None
  hidden_states: Callable[[Any, ModelConfig], Any] | None = None


MODELS: dict[str, ModelSpec] = {
  "dass": ModelSpec(DassConfig, DASS, "fbank", hidden_states=dass.hidden_states),
  "ast": ModelSpec(AstConfig, AST, "fbank", ast.with_max_length, hidden_states=ast.hidden_states),
  "dasheng": ModelSpec(
    DashengConfig,
    Dasheng,
    "waveform",
    frozen=dasheng.FROZEN_PARAMS,
    init_statistics=dasheng.init_statistics,
    hidden_states=dasheng.hidden_states,
  ),
  "aum": ModelSpec(AumConfig, AuM, "fbank", aum.with_max_length, hidden_states=aum.hidden_states),
  "sslam": ModelSpec(
    SslamConfig, SSLAM, "fbank", sslam.with_max_length, hidden_states=sslam.hidden_states
  ),
}


def spec_of(config: ModelConfig) -> ModelSpec:
  """The registry entry of a config instance."""
  spec = MODELS.get(getattr(config, "model_type", None))
  if spec is None or not isinstance(config, spec.config_class):
    raise TypeError(f"no registered model for config type {type(config).__name__}")
  return spec


def fixed_length(config: ModelConfig) -> int | None:
  """Frames a model's input must have (its `max_length`), or None when any length works."""
  return config.max_length if spec_of(config).with_max_length is not None else None


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
  "SSLAM",
  "AstConfig",
  "AuM",
  "AumConfig",
  "Dasheng",
  "DashengConfig",
  "DassConfig",
  "ModelConfig",
  "ModelSpec",
  "SslamConfig",
  "build_model",
  "config_from_dict",
  "fixed_length",
  "spec_of",
]
