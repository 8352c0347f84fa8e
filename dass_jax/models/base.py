"""The base of every model config: a frozen dataclass with a JSON round trip.

A config names its architecture in the class attribute `model_type` (the key of
`dass_jax.models.MODELS` and of `config.json` in a converted checkpoint), and in `RUNTIME_FIELDS`
the fields that choose how the model computes (scan implementation, compute dtype, chunking,
train-time regularisation, batching conventions) rather than what its params compute: the only
fields `dass_jax.load_model(path, **overrides)` lets a caller change on a saved checkpoint
(tests/test_checkpoint.py checks that each leaves the params tree unchanged). Configs validate their
fields when they are built (`__post_init__`), so a bad value fails with a message naming the valid
choices before any model is traced.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


class ModelConfig:
  """JSON round trip shared by the model configs (subclasses are frozen dataclasses)."""

  model_type: ClassVar[str]
  # Fields that may differ from the checkpoint's when loading it (see the module docstring).
  RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset()

  def example_input_shape(self) -> tuple[int, ...]:
    """The shape of a small valid model input (batch 1), for abstract initialisation."""
    raise NotImplementedError

  def to_dict(self) -> dict[str, Any]:
    return {"model_type": self.model_type, **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names - {"model_type"}
    if unknown:
      raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: v for k, v in d.items() if k in names})


def check_choice(value: Any, choices, field: str) -> None:
  """Raises ValueError naming the valid choices unless `value` is one of `choices`."""
  choices = list(choices)
  if value not in choices:
    raise ValueError(f"{field} must be one of {choices}, got {value!r}")


def check_patch_transformer(config: Any) -> None:
  """Raises ValueError unless a patch-transformer config (AST, SSLAM) splits `hidden_size` evenly
  into `num_heads` and its input (`num_mel_bins` x `max_length`) holds at least one patch."""
  if config.hidden_size % config.num_heads:
    raise ValueError(
      f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}"
    )
  for name in ("num_mel_bins", "max_length"):
    if getattr(config, name) < config.patch_size:
      raise ValueError(
        f"{name}={getattr(config, name)} is smaller than patch_size={config.patch_size}"
      )
