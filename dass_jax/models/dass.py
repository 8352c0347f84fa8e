"""DASS backbone (VMamba VSSM, forward_type 'v05_noz') in Flax Linen, channels-last.

    model = DASS(DassConfig.small())
    logits = model.apply({"params": params}, fbank)        # fbank: (batch, frames, 128)

The input is (batch, frames, mel) exactly as the original `DASS.forward`, which turns it into an
NCHW map (batch, 1, H=mel, W=frames). Here the map is NHWC: (batch, mel, frames, channels), so H is
frequency and W is time, as in the original. Spatial sizes follow PyTorch exactly: every stride-2
3x3 conv pads (1, 1) on both sides, giving out = floor((n + 2 - 3) / 2) + 1 = ceil(n / 2).

Parameter mapping (torch `state_dict` of `DataParallel(DASS)` -> Flax `params` tree)
-------------------------------------------------------------------------------------
Every torch key starts with `module.v.`; Flax paths are relative to `variables["params"]`.
i is the stage (0..3), j the block within the stage; in the table the block prefix
`B.` is torch `layers.i.blocks.j.` and `B/` is Flax `layers_i/blocks_j/`. Transforms:
  conv   : OIHW -> HWIO, `w.transpose(2, 3, 1, 0)`
  linear : (out, in) -> (in, out), `w.T` (also the 2-D Linear2d weights in_proj/out_proj/fc1/fc2)
  ln     : LayerNorm / LN2D `weight` -> `scale`, `bias` -> `bias`, both unchanged (C,)
  copy   : unchanged

| torch key (after `module.v.`)       | Flax path                              | transform   |
|-------------------------------------|----------------------------------------|-------------|
| patch_embed.0.{weight,bias}         | patch_embed/conv0/{kernel,bias}        | conv/copy   |
| patch_embed.2.{weight,bias}         | patch_embed/norm0/{scale,bias}         | ln          |
| patch_embed.5.{weight,bias}         | patch_embed/conv1/{kernel,bias}        | conv/copy   |
| patch_embed.7.{weight,bias}         | patch_embed/norm1/{scale,bias}         | ln          |
| B.norm.{weight,bias}                | B/norm/{scale,bias}                    | ln          |
| B.op.x_proj_weight                  | B/op/x_proj_weight                     | copy        |
| B.op.dt_projs_weight                | B/op/dt_projs_weight                   | copy        |
| B.op.dt_projs_bias                  | B/op/dt_projs_bias                     | copy        |
| B.op.A_logs                         | B/op/A_logs                            | copy        |
| B.op.Ds                             | B/op/Ds                                | copy        |
| B.op.out_norm.{weight,bias}         | B/op/out_norm/{scale,bias}             | ln          |
| B.op.in_proj.weight                 | B/op/in_proj/kernel                    | linear      |
| B.op.conv2d.weight                  | B/op/conv2d/kernel                     | conv        |
| B.op.out_proj.weight                | B/op/out_proj/kernel                   | linear      |
| B.norm2.{weight,bias}               | B/norm2/{scale,bias}                   | ln          |
| B.mlp.fc1.{weight,bias}             | B/mlp/fc1/{kernel,bias}                | linear/copy |
| B.mlp.fc2.{weight,bias}             | B/mlp/fc2/{kernel,bias}                | linear/copy |
| layers.i.downsample.1.{weight,bias} | layers_i/downsample/conv/{kernel,bias} | conv/copy   |
| layers.i.downsample.3.{weight,bias} | layers_i/downsample/norm/{scale,bias}  | ln          |
| classifier.norm.{weight,bias}       | classifier/norm/{scale,bias}           | ln          |
| classifier.head.{weight,bias}       | classifier/head/{kernel,bias}          | linear/copy |

Shapes (d = d_inner of the stage, K = 4, R = dt_rank, N = d_state): x_proj_weight (K, R+2N, d),
dt_projs_weight (K, d, R), dt_projs_bias (K, d), A_logs (K*d, N), Ds (K*d,); conv2d is depthwise,
torch (d, 1, 3, 3) -> Flax (3, 3, 1, d). `downsample` exists for stages 0..2 only (the last stage
has none, as in torch).

The SS2D scan parameters keep their torch names and layouts (k-major, c = k*d + e): copied 1:1.
The config is recoverable from shapes: dims from `layers.i.blocks.0.norm.weight`, depths from the
block indices, d_state from `A_logs.shape[1]`, dt_rank from `dt_projs_weight.shape[2]`, num_classes
from `classifier.head.weight.shape[0]`, mlp_ratio from `fc1.weight.shape[0] / d`.

Intermediates
-------------
Applied with `mutable=["intermediates"]`, the modules `sow` their activations; `torch_activations`
turns that collection into the fixture's names (`patch_embed`, `layers.0.blocks.1`, `layers.0`,
`layers.3.blocks.0.op.dts`, `classifier.norm`, `classifier.pooled`, ...). Feature maps are NHWC
(batch, H, W, C); the SS2D scan values dts/Bs/Cs/ys are in the torch scan layout (batch, K, ., L).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dass_jax.constants import NUM_MEL_BINS
from dass_jax.layers import (
  DTYPES,
  compute_dtype,
  gelu,
  layer_norm,
  torch_default_init,
  trunc_normal_init,
  uniform_init,
)
from dass_jax.models.base import ModelConfig, check_choice
from dass_jax.models.vss_block import VSSBlock
from pallas_kernels import ScanImpl


@dataclasses.dataclass(frozen=True)
class DassConfig(ModelConfig):
  """DASS backbone configuration.

  Attributes:
    num_classes: classifier outputs (527 for AudioSet).
    depths: VSS blocks per stage.
    dims: channels per stage (patch embed gives dims[0]; each downsample doubles).
    d_state: SSM state size N (DASS uses 1).
    ssm_ratio: d_inner / d_model (DASS uses 1.0).
    dt_rank: rank R of the dt projection; 0 means ceil(d / 16) per stage.
    mlp_ratio: hidden / d in the VSS MLP.
    mlp_token_chunk: in inference, the VSS MLP runs over chunks of this many tokens one after
      another when a stage has more (its hidden activations are the largest tensors of a long
      input; `layers.Mlp.token_chunk`); 0 never chunks. Training never chunks.
    drop_path_rate: stochastic-depth rate, linearly increasing over all blocks.
    in_chans: input channels of the first conv (1 for fbank).
    num_mel_bins: input frequency bins.
    scan_impl: selective-scan implementation ('auto', 'pallas', 'chunked', 'associative',
      'sequential'; see `pallas_kernels.dispatch`).
    scan_interpret: run the Pallas kernel in Pallas interpret mode (CPU tests of the whole model
      with scan_impl='pallas'); the other implementations ignore it.
    dtype: compute dtype ('float32' or 'bfloat16'); params and scan state stay float32.
  """

  model_type: ClassVar[str] = "dass"
  RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset(
    {"mlp_token_chunk", "drop_path_rate", "scan_impl", "scan_interpret", "dtype"}
  )

  num_classes: int = 527
  depths: tuple[int, ...] = (2, 2, 8, 2)
  dims: tuple[int, ...] = (96, 192, 384, 768)
  d_state: int = 1
  ssm_ratio: float = 1.0
  dt_rank: int = 0
  mlp_ratio: float = 4.0
  mlp_token_chunk: int = 65536
  drop_path_rate: float = 0.2
  in_chans: int = 1
  num_mel_bins: int = NUM_MEL_BINS
  scan_impl: str = "auto"
  scan_interpret: bool = False
  dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
    object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
    if len(self.depths) != len(self.dims):
      raise ValueError(f"depths {self.depths} and dims {self.dims} differ in length")
    check_choice(self.scan_impl, [impl.value for impl in ScanImpl], "DassConfig.scan_impl")
    check_choice(self.dtype, DTYPES, "DassConfig.dtype")
    if self.in_chans != 1:
      raise ValueError(f"DASS takes one fbank channel, the config has in_chans={self.in_chans}")

  def example_input_shape(self) -> tuple[int, ...]:
    return (1, 16, self.num_mel_bins)

  def stage_dt_rank(self, stage: int) -> int:
    return self.dt_rank or math.ceil(self.dims[stage] / 16)

  @classmethod
  def small(cls, **overrides) -> DassConfig:
    return cls(**{"depths": (2, 2, 8, 2), "drop_path_rate": 0.2, **overrides})

  @classmethod
  def medium(cls, **overrides) -> DassConfig:
    return cls(**{"depths": (2, 2, 20, 2), "drop_path_rate": 0.3, **overrides})


# Symmetric padding of PyTorch's Conv2d(k=3, s=2, p=1); XLA 'SAME' would pad (0, 1) on even sizes.
CONV_PAD = ((1, 1), (1, 1))


def conv3x3_s2(features: int, in_features: int, dtype, name: str) -> nn.Conv:
  """A stride-2 3x3 conv with bias, PyTorch's symmetric padding and PyTorch's default init."""
  return nn.Conv(
    features,
    (3, 3),
    strides=(2, 2),
    padding=CONV_PAD,
    use_bias=True,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=torch_default_init,
    bias_init=uniform_init((in_features * 9) ** -0.5),
    name=name,
  )


class PatchEmbed(nn.Module):
  """Patch embed v2: conv0 (s2) -> LN -> GELU -> conv1 (s2) -> LN; total stride 4.

  (batch, H, W, in_chans) -> (batch, ceil(ceil(H/2)/2), ceil(ceil(W/2)/2), embed_dim); sows
  'output'.
  """

  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    half = self.embed_dim // 2
    x = conv3x3_s2(half, x.shape[-1], self.dtype, "conv0")(x)
    x = layer_norm("norm0")(x)
    x = gelu(x.astype(self.dtype))
    x = conv3x3_s2(self.embed_dim, half, self.dtype, "conv1")(x)
    x = layer_norm("norm1")(x)
    self.sow("intermediates", "output", x)
    return x


class Downsample(nn.Module):
  """Downsample v3: conv (3x3, s2, p1, bias) -> LN. (batch, H, W, C) -> (batch, H', W', out_dim)."""

  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = conv3x3_s2(self.out_dim, x.shape[-1], self.dtype, "conv")(x)
    return layer_norm("norm")(x)


class Stage(nn.Module):
  """`layers.i`: VSS blocks `blocks_j`, then `downsample` unless it is the last stage.

  Sows its output (after the downsample) as 'output'.

  Attributes:
    config: model config.
    index: stage number i.
    drop_path_rates: one stochastic-depth rate per block of this stage.
  """

  config: DassConfig
  index: int
  drop_path_rates: tuple[float, ...]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x (batch, H, W, dims[i]) -> (batch, H', W', dims[i+1]) (H' = ceil(H/2)) or unchanged."""
    cfg = self.config
    for j, rate in enumerate(self.drop_path_rates):
      x = VSSBlock(cfg, cfg.stage_dt_rank(self.index), drop_path_rate=rate, name=f"blocks_{j}")(
        x, train
      )
    if self.index + 1 < len(cfg.dims):
      x = Downsample(cfg.dims[self.index + 1], dtype=compute_dtype(cfg.dtype), name="downsample")(x)
    self.sow("intermediates", "output", x)
    return x


class Classifier(nn.Module):
  """LN over channels -> mean over (H, W) -> Linear. (batch, H, W, C) -> (batch, num_classes) fp32.

  Sows 'norm_out' (NHWC) and 'pooled' (batch, C).
  """

  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = layer_norm("norm")(x)
    self.sow("intermediates", "norm_out", x)
    pooled = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "pooled", pooled)
    logits = nn.Dense(
      self.num_classes,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=trunc_normal_init,
      name="head",
    )(pooled)
    return logits.astype(jnp.float32)


def drop_path_schedule(depths: tuple[int, ...], rate: float) -> list[tuple[float, ...]]:
  """Per-stage stochastic-depth rates, linear from 0 to `rate` over all blocks (timm/VMamba)."""
  rates = np.linspace(0.0, rate, sum(depths)).tolist()
  out, start = [], 0
  for depth in depths:
    out.append(tuple(rates[start : start + depth]))
    start += depth
  return out


class DASS(nn.Module):
  """DASS audio classifier: (batch, frames, num_mel_bins) fbank -> (batch, num_classes) fp32 logits.

  `train=True` enables stochastic depth, which draws from the 'dropout' rng stream whenever
  `config.drop_path_rate > 0`.
  """

  config: DassConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    if x.ndim != 3 or x.shape[-1] != cfg.num_mel_bins or x.shape[1] < 1:
      raise ValueError(
        f"DASS expects fbank input (batch, frames >= 1, {cfg.num_mel_bins}), "
        f"got shape {tuple(x.shape)}"
      )
    dtype = compute_dtype(cfg.dtype)
    # (B, T, M) -> torch NCHW (B, 1, M, T) -> NHWC (B, H=M, W=T, 1).
    x = jnp.swapaxes(x, 1, 2)[..., None].astype(dtype)
    x = PatchEmbed(cfg.dims[0], dtype=dtype, name="patch_embed")(x)
    for i, rates in enumerate(drop_path_schedule(cfg.depths, cfg.drop_path_rate)):
      x = Stage(cfg, i, rates, name=f"layers_{i}")(x, train)
    return Classifier(cfg.num_classes, dtype=dtype, name="classifier")(x)


def hidden_states(intermediates: Any, config: DassConfig) -> jax.Array:
  """The last hidden state as a time sequence, (batch, time tokens, dims[-1]): the classifier's
  normalised last-stage map (batch, H = mel, W = time, C) averaged over frequency, whose mean over
  time is the classifier's `pooled` vector. From `apply(..., mutable=["intermediates"])`."""
  del config
  return jnp.mean(intermediates["classifier"]["norm_out"][-1], axis=1)


_INDEXED = re.compile(r"^(layers|blocks)_(\d+)$")


def torch_activations(intermediates: Any) -> dict[str, jax.Array]:
  """Flattens a sown 'intermediates' collection to the fixture's dotted activation names.

  Path parts `layers_i`/`blocks_j` become `layers.i`/`blocks.j`; a leaf named `output` stands for
  its module's output (`layers.0.blocks.1`), any other leaf is appended with a trailing `_out`
  removed (`op/in_proj_out` -> `op.in_proj`, `classifier/norm_out` -> `classifier.norm`).
  """
  flat = {}
  leaves = jax.tree_util.tree_flatten_with_path(
    intermediates, is_leaf=lambda v: isinstance(v, tuple)
  )[0]
  for path, value in leaves:
    parts = [_INDEXED.sub(r"\1.\2", p.key) for p in path]
    leaf = parts.pop()
    if leaf != "output":
      parts.append(leaf[: -len("_out")] if leaf.endswith("_out") else leaf)
    flat[".".join(parts)] = value[-1]
  return flat
