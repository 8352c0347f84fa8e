"""Model configurations: a frozen dataclass per architecture, serialisable to JSON.

`DassConfig` describes the DASS backbone exactly as the original code builds it
(VMamba VSSM with forward_type='v05_noz', patch-embed v2, downsample v3, LayerNorm over channels).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

# Fbank normalisation used by AST and DASS for AudioSet: (x - mean) / (2 * std).
AUDIOSET_FBANK_MEAN = -4.2677393
AUDIOSET_FBANK_STD = 4.5689974
NUM_MEL_BINS = 128


class _ModelConfig:
  """JSON round trip shared by the model configs; `model_type` names the architecture."""

  model_type: ClassVar[str]

  def to_dict(self) -> dict[str, Any]:
    return {"model_type": self.model_type, **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names - {"model_type"}
    if unknown:
      raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass(frozen=True)
class DassConfig(_ModelConfig):
  """DASS backbone configuration.

  Attributes:
    num_classes: classifier outputs (527 for AudioSet).
    depths: VSS blocks per stage.
    dims: channels per stage (patch embed gives dims[0]; each downsample doubles).
    d_state: SSM state size N (DASS uses 1).
    ssm_ratio: d_inner / d_model (DASS uses 1.0).
    dt_rank: rank R of the dt projection; 0 means ceil(d / 16) per stage.
    mlp_ratio: hidden / d in the VSS MLP.
    drop_path_rate: stochastic-depth rate, linearly increasing over all blocks.
    in_chans: input channels of the first conv (1 for fbank).
    num_mel_bins: input frequency bins.
    scan_impl: selective-scan implementation ('auto', 'pallas', 'associative', 'sequential').
    dtype: compute dtype ('float32' or 'bfloat16'); params and scan state stay float32.
  """

  model_type: ClassVar[str] = "dass"

  num_classes: int = 527
  depths: tuple[int, ...] = (2, 2, 8, 2)
  dims: tuple[int, ...] = (96, 192, 384, 768)
  d_state: int = 1
  ssm_ratio: float = 1.0
  dt_rank: int = 0
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.2
  in_chans: int = 1
  num_mel_bins: int = NUM_MEL_BINS
  scan_impl: str = "auto"
  dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
    object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
    if len(self.depths) != len(self.dims):
      raise ValueError(f"depths {self.depths} and dims {self.dims} differ in length")

  def stage_dt_rank(self, stage: int) -> int:
    return self.dt_rank or math.ceil(self.dims[stage] / 16)

  @classmethod
  def small(cls, **overrides) -> DassConfig:
    return cls(**{"depths": (2, 2, 8, 2), "drop_path_rate": 0.2, **overrides})

  @classmethod
  def medium(cls, **overrides) -> DassConfig:
    return cls(**{"depths": (2, 2, 20, 2), "drop_path_rate": 0.3, **overrides})


@dataclasses.dataclass(frozen=True)
class AstConfig(_ModelConfig):
  """Audio Spectrogram Transformer (the teacher), as `transformers.ASTForAudioClassification`.

  Defaults are the AudioSet model: 16x16 patches, strides 10/10 over 128 mel x 1024 frames
  (12 x 101 = 1212 patches, plus class and distillation tokens), with transformers' LayerNorm eps.
  `AstConfig.original_repo()` gives the eps of the original AST code (timm ViT blocks 1e-6,
  `mlp_head` LayerNorm 1e-5).

  Attributes:
    num_classes: classifier outputs (527 for AudioSet).
    hidden_size: token width D.
    num_layers: transformer blocks.
    num_heads: attention heads (head dim D / num_heads).
    mlp_dim: hidden width of the block MLP.
    patch_size: square patch side of the patch-embedding conv.
    frequency_stride: conv stride over mel bins.
    time_stride: conv stride over frames.
    num_mel_bins: input frequency bins.
    max_length: input frames the position embeddings are sized for.
    qkv_bias: whether the query/key/value projections have biases.
    layer_norm_eps: eps of the block LayerNorms and the final encoder LayerNorm.
    head_layer_norm_eps: eps of the classifier head's LayerNorm.
    dropout_rate: dropout after the embeddings, the attention output and the MLP (train only).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """

  model_type: ClassVar[str] = "ast"

  num_classes: int = 527
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 16
  frequency_stride: int = 10
  time_stride: int = 10
  num_mel_bins: int = NUM_MEL_BINS
  max_length: int = 1024
  qkv_bias: bool = True
  layer_norm_eps: float = 1e-12
  head_layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.0
  dtype: str = "float32"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
        f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
      )
    for name, size in (("num_mel_bins", self.num_mel_bins), ("max_length", self.max_length)):
      if size < self.patch_size:
        raise ValueError(f"{name}={size} is smaller than patch_size={self.patch_size}")

  @property
  def grid(self) -> tuple[int, int]:
    """(frequency patches, time patches) of the patch-embedding conv (no padding)."""
    return (
      (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1,
      (self.max_length - self.patch_size) // self.time_stride + 1,
    )

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @classmethod
  def original_repo(cls, **overrides) -> AstConfig:
    """The LayerNorm eps of YuanGongND/ast (timm ViT 1e-6, `mlp_head` torch default 1e-5)."""
    return cls(**{"layer_norm_eps": 1e-6, "head_layer_norm_eps": 1e-5, **overrides})


CONFIG_TYPES = {"dass": DassConfig, "ast": AstConfig}


def config_from_dict(d: dict[str, Any]):
  """Builds the config named by d['model_type'] ('dass' or 'ast')."""
  model_type = d.get("model_type")
  if model_type not in CONFIG_TYPES:
    raise ValueError(f"model_type must be one of {sorted(CONFIG_TYPES)}, got {model_type!r}")
  return CONFIG_TYPES[model_type].from_dict(d)
