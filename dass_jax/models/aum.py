"""Audio Mamba (AuM, Erol et al. 2024, arXiv 2406.03344) in Flax Linen: bidirectional Mamba blocks
over spectrogram patches with a middle class token.

    model = AuM(AumConfig.small())                           # AudioSet: 128 mel x 1024 frames
    logits = model.apply({"params": params}, fbank)           # fbank: (batch, frames, 128)

The input is the AST/DASS Kaldi fbank normalised as (x - mean) / (2 std), (batch, frames, mel).
Computation, as `AudioMamba.forward` of kaistmm/Audio-Mamba-AuM with its released settings (middle
class token, absolute position embeddings, RMSNorm with fused add-norm and an fp32 residual):
  (batch, frames, mel) -> NHWC (batch, mel, frames, 1) [torch: NCHW (batch, 1, mel, frames)]
  -> patch conv P x P, stride P, bias -> (batch, N, D) tokens, index f * T + t (frequency-major),
     N = F x T = `config.grid` (frames beyond T * P are ignored, as the strided conv does)
  -> [cls, p_0, ..., p_{N-1}] + pos_embed (1, 1 + N, D): row 0 of the embedding is the class
     token's (the original inserts the token at N // 2, moves it to the front to add the
     embedding and moves it back)
  -> the class token moved to the middle: [p_0 .. p_{N//2 - 1}, cls, p_{N//2} .. p_{N-1}]
  -> `depth` blocks `layers_i`: residual = tokens (block 0) or residual + h, kept in float32;
     h = mixer(RMSNorm(residual)) in the compute dtype
  -> norm_f(residual + h) -> token N // 2 -> head (Dense) -> float32 logits.

Mixer (Mamba as modified by Vision Mamba for two directions; E = expand * D, R = dt_rank,
S = d_state):
  [x | z] = in_proj(h)                             Dense D -> 2E, no bias
  u = SiLU(causal depthwise conv1d(x) + bias)      kernel d_conv, left padding d_conv - 1
  [dt | B | C] = x_proj(u)                         Dense E -> R + 2S, no bias
  delta = dt @ dt_proj.kernel                      its bias enters the scan as delta_bias
  y = selective_scan(u, delta, A = -exp(A_log), B, C, D, delta_bias = dt_proj.bias, softplus)
  v1 (Fo-Bi, `bimamba_type='v1'`, the base checkpoints): the backward scan runs over flip(u),
     flip(delta), flip(B), flip(C) with A_b = -exp(A_b_log) and the same D and delta_bias, and is
     flipped back: out = out_proj(y_f * SiLU(z) + y_b * SiLU(z)), no halving (the fork's
     `bimamba_inner_fn`; its `if_devide_out` does not apply to v1).
  v2 (Bi-Bi, `bimamba_type='v2'`, the small checkpoints): a whole second branch on the flipped
     [x | z] with conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b, flipped back:
     out = out_proj((y_f * SiLU(z) + y_b * SiLU(z)) / 2) (`if_devide_out=True`, AudioMamba's
     default).
Both directions run as one `pallas_kernels.selective_scan` call with K = 2 groups (forward
channels first), through `config.scan_impl` (`auto`: the Pallas GPU kernel where supported).

Params tree (D = embed_dim, E = d_inner, P = patch_size, C = num_classes, K = d_conv):
  patch_embed/{kernel (P, P, 1, D), bias (D,)}
  cls_token (1, 1, D), pos_embed (1, 1 + N, D)
  layers_i/norm/scale (D,)
  layers_i/mixer/in_proj/kernel (D, 2E)            output columns [x | z]
  layers_i/mixer/conv1d/{kernel (K, 1, E), bias (E,)}
  layers_i/mixer/x_proj/kernel (E, R + 2S)         output columns [dt | B | C]
  layers_i/mixer/dt_proj/{kernel (R, E), bias (E,)}
  layers_i/mixer/A_log (E, S), D (E,), A_b_log (E, S)
  layers_i/mixer/{conv1d_b, x_proj_b, dt_proj_b, D_b}   v2 only, shaped as the forward ones
  layers_i/mixer/out_proj/kernel (E, D)
  norm_f/scale (D,), head/{kernel (D, C), bias (C,)}
`convert_torch/aum.py` maps the released PyTorch state dicts onto it.

Input length: the position embeddings fix the patch grid, so an input must have the frames of
`config.max_length` (up to P - 1 more, which the conv ignores). The released models were trained on
1024 frames (10.24 s); `with_max_length` resamples the embeddings for another length as the AuM
loader does (`resample_pos_embed`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dass_jax.constants import NUM_MEL_BINS
from dass_jax.layers import (
  DTYPES,
  DropPath,
  a_log_init,
  compute_dtype,
  dense,
  dt_bias_init,
  patch_conv,
  resize_pos_embed_grid,
  rms_norm,
  torch_default_init,
  trunc_normal_init,
  uniform_init,
)
from dass_jax.models.ast import LENGTH_EXTENSIONS
from dass_jax.models.base import ModelConfig, check_choice
from pallas_kernels import ScanImpl
from pallas_kernels.sharding import sharded_selective_scan

BIMAMBA_TYPES = ("v1", "v2")  # Fo-Bi, Bi-Bi
NUM_PREFIX_TOKENS = 1  # the class token's row at the front of pos_embed


@dataclasses.dataclass(frozen=True)
class AumConfig(ModelConfig):
  """Audio Mamba configuration. Defaults are AuM-base on AudioSet (`AumConfig.base()`).

  Attributes:
    num_classes: classifier outputs (527 for AudioSet).
    embed_dim: token width D (base 768, small 384).
    depth: Mamba blocks (24 in every released model).
    bimamba_type: 'v1' (Fo-Bi: one branch, a second scan over the reversed sequence) or 'v2'
      (Bi-Bi: a complete second branch on the reversed sequence); see the module docstring.
    d_state: SSM state size S.
    d_conv: kernel size of the causal depthwise conv1d.
    expand: d_inner / embed_dim.
    dt_rank: rank R of the dt projection; 0 means ceil(embed_dim / 16).
    patch_size: side P of the square, non-overlapping patches (conv stride P).
    num_mel_bins: input frequency bins.
    max_length: input frames the position embeddings are sized for (1024: 10.24 s).
    norm_eps: eps of the RMSNorms.
    drop_path_rate: stochastic depth on the mixer outputs, linear over the blocks (train only).
    scan_impl: selective-scan implementation ('auto', 'pallas', 'associative', 'sequential').
    scan_interpret: run the Pallas kernel in interpret mode (CPU tests; only with 'pallas').
    dtype: compute dtype ('float32' or 'bfloat16'); params, residual stream and scan state stay
      float32.
  """

  model_type: ClassVar[str] = "aum"
  RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset(
    {"drop_path_rate", "scan_impl", "scan_interpret", "dtype"}
  )

  num_classes: int = 527
  embed_dim: int = 768
  depth: int = 24
  bimamba_type: str = "v1"
  d_state: int = 16
  d_conv: int = 4
  expand: int = 2
  dt_rank: int = 0
  patch_size: int = 16
  num_mel_bins: int = NUM_MEL_BINS
  max_length: int = 1024
  norm_eps: float = 1e-5
  drop_path_rate: float = 0.0
  scan_impl: str = "auto"
  scan_interpret: bool = False
  dtype: str = "float32"

  def __post_init__(self):
    check_choice(self.bimamba_type, BIMAMBA_TYPES, "AumConfig.bimamba_type")
    check_choice(self.scan_impl, [impl.value for impl in ScanImpl], "AumConfig.scan_impl")
    check_choice(self.dtype, DTYPES, "AumConfig.dtype")
    for name in ("num_classes", "embed_dim", "depth", "d_state", "d_conv", "expand", "patch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"AumConfig.{name} must be positive, got {getattr(self, name)}")
    if self.dt_rank < 0:
      raise ValueError(f"AumConfig.dt_rank must be >= 0 (0: ceil(D / 16)), got {self.dt_rank}")
    for name in ("num_mel_bins", "max_length"):
      if getattr(self, name) < self.patch_size:
        raise ValueError(
          f"AumConfig.{name}={getattr(self, name)} is smaller than patch_size={self.patch_size}"
        )
    if not 0.0 <= self.drop_path_rate < 1.0:
      raise ValueError(f"AumConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

  def example_input_shape(self) -> tuple[int, ...]:
    return (1, self.max_length, self.num_mel_bins)

  @property
  def grid(self) -> tuple[int, int]:
    """(frequency patches, time patches) of the patch-embedding conv."""
    return (self.num_mel_bins // self.patch_size, self.max_length // self.patch_size)

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @property
  def d_inner(self) -> int:
    return self.expand * self.embed_dim

  @property
  def ssm_rank(self) -> int:
    """The dt rank R in use: `dt_rank`, or ceil(embed_dim / 16) when it is 0."""
    return self.dt_rank or math.ceil(self.embed_dim / 16)

  @classmethod
  def base(cls, **overrides) -> AumConfig:
    """AuM-base (Fo-Bi, D 768, 24 blocks): 92.11 M params with 527 classes at 128 x 1024."""
    return cls(**{"embed_dim": 768, "depth": 24, "bimamba_type": "v1", **overrides})

  @classmethod
  def small(cls, **overrides) -> AumConfig:
    """AuM-small (Bi-Bi, D 384, 24 blocks): 25.54 M params with 527 classes at 128 x 1024."""
    return cls(**{"embed_dim": 384, "depth": 24, "bimamba_type": "v2", **overrides})


class CausalConv1d(nn.Module):
  """Causal depthwise conv1d with bias over (batch, L, E): y_t = b + sum_k w_k * x_{t-K+1+k}.

  torch `Conv1d(E, E, K, groups=E, padding=K - 1)(x)[..., :L]`. Params in Flax Conv layout:
  kernel (K, 1, E) (torch weight (E, 1, K) transposed), bias (E,). Computed as K shifted
  multiply-adds (XLA's grouped convolution is ~50x slower on CPU).
  """

  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels, taps, length = x.shape[-1], self.kernel_size, x.shape[1]
    kernel = self.param("kernel", torch_default_init, (taps, 1, channels), jnp.float32)
    bias = self.param("bias", uniform_init(taps**-0.5), (channels,), jnp.float32)
    kernel, bias = kernel[:, 0].astype(self.dtype), bias.astype(self.dtype)
    padded = jnp.pad(x, ((0, 0), (taps - 1, 0), (0, 0)))
    out = bias + kernel[0] * padded[:, :length]
    for k in range(1, taps):
      out = out + kernel[k] * padded[:, k : k + length]
    return out


class DtProj(nn.Module):
  """Mamba's dt_proj: (…, R) -> (…, E) without its bias, which is returned for the scan.

  Params: kernel (R, E) = torch weight.T, U(+-R^-1/2); bias (E,), `dt_bias_init`.
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, dt: jax.Array) -> tuple[jax.Array, jax.Array]:
    rank = dt.shape[-1]
    kernel = self.param("kernel", uniform_init(rank**-0.5), (rank, self.features), jnp.float32)
    bias = self.param("bias", dt_bias_init, (self.features,), jnp.float32)
    return dt @ kernel.astype(self.dtype), bias


def _ssm_inputs(cfg: AumConfig, x: jax.Array, suffix: str, dtype) -> tuple[jax.Array, ...]:
  """One direction's scan inputs from x (batch, L, E): u, delta (batch, L, E), B, C (batch, L, S)
  and delta_bias (E,). Creates conv1d{suffix}, x_proj{suffix}, dt_proj{suffix} in the caller."""
  e, s, r = cfg.d_inner, cfg.d_state, cfg.ssm_rank
  u = nn.silu(CausalConv1d(cfg.d_conv, dtype, name="conv1d" + suffix)(x))
  x_proj = dense(r + 2 * s, "x_proj" + suffix, dtype, False, kernel_init=torch_default_init)
  x_dbl = x_proj(u)
  dt, b_ssm, c_ssm = jnp.split(x_dbl, [r, r + s], axis=-1)
  delta, delta_bias = DtProj(e, dtype, name="dt_proj" + suffix)(dt)
  return u, delta, b_ssm, c_ssm, delta_bias


def _channels_first(forward: jax.Array, backward: jax.Array) -> jax.Array:
  """Two (batch, L, C) arrays -> (batch, 2C, L): the scan's K-major layout, forward first."""
  return jnp.swapaxes(jnp.concatenate([forward, backward], axis=-1), 1, 2)


class BiMamba(nn.Module):
  """The AuM mixer: Mamba with both directions ('v1' Fo-Bi or 'v2' Bi-Bi). (batch, L, D) -> same.

  See the module docstring for the computation and the params.
  """

  config: AumConfig

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    e, s = cfg.d_inner, cfg.d_state
    f32 = jnp.float32
    xz = dense(2 * e, "in_proj", dtype, use_bias=False, kernel_init=torch_default_init)(h)
    x, z = jnp.split(xz, 2, axis=-1)
    a_log = self.param("A_log", a_log_init, (e, s), f32)
    d_skip = self.param("D", nn.initializers.ones, (e,), f32)
    a_b_log = self.param("A_b_log", a_log_init, (e, s), f32)
    u, delta, b_ssm, c_ssm, bias = _ssm_inputs(cfg, x, "", dtype)
    if cfg.bimamba_type == "v1":
      flip = lambda v: jnp.flip(v, axis=1)
      u_b, delta_b, b_b, c_b = flip(u), flip(delta), flip(b_ssm), flip(c_ssm)
      d_b, bias_b = d_skip, bias
    else:
      u_b, delta_b, b_b, c_b, bias_b = _ssm_inputs(cfg, jnp.flip(x, axis=1), "_b", dtype)
      d_b = self.param("D_b", nn.initializers.ones, (e,), f32)
    # Split over the batch axes of the mesh set by `jax.set_mesh` (the plain call without one).
    y = sharded_selective_scan(
      _channels_first(u, u_b),
      _channels_first(delta, delta_b),
      -jnp.exp(jnp.concatenate([a_log, a_b_log], axis=0)),
      jnp.stack([b_ssm, b_b], axis=1).swapaxes(2, 3),
      jnp.stack([c_ssm, c_b], axis=1).swapaxes(2, 3),
      jnp.concatenate([d_skip, d_b]),
      jnp.concatenate([bias, bias_b]),
      delta_softplus=True,
      impl=cfg.scan_impl,
      interpret=cfg.scan_interpret,
    )
    y_f, y_b = jnp.split(jnp.swapaxes(y, 1, 2), 2, axis=-1)  # y_b in reversed time order
    gate = nn.silu(z)
    out = y_f * gate + jnp.flip(y_b, axis=1) * gate
    if cfg.bimamba_type == "v2":
      out = out / 2
    out_proj = dense(cfg.embed_dim, "out_proj", dtype, False, kernel_init=_out_proj_init(cfg))
    return out_proj(out)


def _out_proj_init(cfg: AumConfig):
  """Mamba's out_proj init: torch's default U(+-1/sqrt(fan_in)) divided by sqrt(depth)."""
  return nn.initializers.variance_scaling(1.0 / (3.0 * cfg.depth), "fan_in", "uniform")


class AumBlock(nn.Module):
  """`layers_i`: residual += drop_path(h) (fp32; residual = h in block 0), then
  h = mixer(RMSNorm(residual)). Returns (h in the compute dtype, residual in float32).

  Attributes:
    config: model config.
    drop_path_rate: stochastic-depth rate on the incoming h (0 for block 0).
  """

  config: AumConfig
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(
    self, hidden: jax.Array, residual: jax.Array | None, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    if residual is None:
      residual = hidden.astype(jnp.float32)
    else:
      residual = residual + DropPath(self.drop_path_rate)(hidden, train).astype(jnp.float32)
    h = rms_norm("norm", cfg.norm_eps, dtype)(residual)
    return BiMamba(cfg, name="mixer")(h), residual


class AuM(nn.Module):
  """AuM classifier: (batch, frames, num_mel_bins) fbank -> (batch, num_classes) fp32 logits.

  `train=True` enables stochastic depth ('dropout' rng stream) when `config.drop_path_rate > 0`.
  Sows 'last_hidden_state' (batch, 1 + N, D), the normalised tokens with the class token in the
  middle, and 'pooled' (batch, D), that class token, fed to the head.
  """

  config: AumConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    _check_input(cfg, x.shape)
    batch, dim, p = x.shape[0], cfg.embed_dim, cfg.patch_size
    # (B, T, M) -> torch NCHW (B, 1, M, T) -> NHWC (B, M, T, 1): H is frequency, W is time.
    x = jnp.swapaxes(x, 1, 2)[..., None].astype(dtype)
    x = patch_conv(dim, (p, p), (p, p), "patch_embed", dtype, nn.initializers.lecun_normal())(x)
    x = x.reshape(batch, -1, dim)  # (B, F*T, D), index f * T + t as torch flatten(2)
    cls = self.param("cls_token", trunc_normal_init, (1, 1, dim), jnp.float32)
    pos = self.param(
      "pos_embed", trunc_normal_init, (1, NUM_PREFIX_TOKENS + cfg.num_patches, dim), jnp.float32
    )
    tokens = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, dim)), x.astype(jnp.float32)], 1)
    tokens = tokens + pos
    middle = cfg.num_patches // 2
    tokens = jnp.concatenate([tokens[:, 1 : middle + 1], tokens[:, :1], tokens[:, middle + 1 :]], 1)

    hidden, residual = tokens, None
    rates = np.linspace(0.0, cfg.drop_path_rate, cfg.depth).tolist()
    for i in range(cfg.depth):
      rate = rates[i - 1] if i else 0.0  # the original's [0] + linspace(0, rate, depth)
      hidden, residual = AumBlock(cfg, rate, name=f"layers_{i}")(hidden, residual, train)
    residual = residual + DropPath(cfg.drop_path_rate)(hidden, train).astype(jnp.float32)
    x = rms_norm("norm_f", cfg.norm_eps, dtype)(residual)
    self.sow("intermediates", "last_hidden_state", x)
    pooled = x[:, middle]
    self.sow("intermediates", "pooled", pooled)
    return dense(cfg.num_classes, "head", dtype)(pooled).astype(jnp.float32)


def hidden_states(intermediates: Any, config: AumConfig) -> jax.Array:
  """The last hidden state as a time sequence, (batch, time patches, D): the patch tokens of
  `last_hidden_state` (the middle class token dropped) on their (frequency, time) grid, averaged
  over frequency. From `apply(..., mutable=["intermediates"])`."""
  x = intermediates["last_hidden_state"][-1]
  middle = config.num_patches // 2
  x = jnp.concatenate([x[:, :middle], x[:, middle + 1 :]], axis=1)
  freq = config.grid[0]
  return jnp.mean(x.reshape(x.shape[0], freq, x.shape[1] // freq, x.shape[2]), axis=1)


def _check_input(cfg: AumConfig, shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `shape` is (batch, frames, num_mel_bins) giving `cfg.grid`."""
  if len(shape) != 3 or shape[-1] != cfg.num_mel_bins or shape[0] < 1:
    raise ValueError(
      f"AuM expects (batch, frames, {cfg.num_mel_bins}) fbank features, got shape {tuple(shape)}"
    )
  p, time_patches = cfg.patch_size, cfg.grid[1]
  if shape[1] // p != time_patches:
    lo = time_patches * p
    raise ValueError(
      f"AuM position embeddings are sized for {time_patches} time patches "
      f"(max_length={cfg.max_length}: inputs of {lo}..{lo + p - 1} frames), got {shape[1]} "
      f"frames ({shape[1] // p} patches); pad or crop the features to max_length, or resample "
      f"the position embeddings with dass_jax.models.aum.with_max_length"
    )


def resample_pos_embed(
  pos_embed: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int]
) -> jax.Array:
  """Resamples AuM position embeddings to another patch grid, as the AuM checkpoint loader does.

  The patch rows are viewed as a (freq, time) grid of D-vectors and resized bilinearly with
  half-pixel centres and antialiasing, i.e. torch `F.interpolate(mode="bilinear",
  antialias=True, align_corners=False)` (AuM's `resample_abs_pos_embed`); when shrinking, the
  triangle filter is widened by the scale, so every old row contributes. The class token's row 0
  is kept. The same grid returns the embeddings unchanged.

  Args:
    pos_embed: (1, 1 + F*T, D), patch rows in frequency-major order.
    grid: (F, T) of `pos_embed`.
    new_grid: (F', T') wanted.

  Returns:
    (1, 1 + F'*T', D) in the dtype of `pos_embed`.
  """
  return resize_pos_embed_grid(
    pos_embed, grid, new_grid, prefix_tokens=NUM_PREFIX_TOKENS, antialias=True
  )


def with_max_length(params: Any, config: AumConfig, max_length: int) -> tuple[dict, AumConfig]:
  """Adapts AuM params to inputs of `max_length` frames by resampling the position embeddings.

  Returns `(params, config)`: a shallow copy of the params dict with a new `pos_embed` and the
  config with `max_length` replaced; every other param is shared. This is what the AuM loader does
  when a checkpoint is built for another spectrogram size; how well a model trained on 10 s
  transfers to other lengths is an empirical question (its authors report degradation on
  minutes-long input).
  """
  new_config = dataclasses.replace(config, max_length=max_length)
  new_params = dict(params)
  new_params["pos_embed"] = resample_pos_embed(params["pos_embed"], config.grid, new_config.grid)
  return new_params, new_config


def for_length(
  params: Any, config: AumConfig, frames: int, extension: str
) -> tuple[dict, AumConfig] | None:
  """(params, config) that run inputs of `frames` frames, or None where `extension` refuses.

  The length study's adapter (the vocabulary of `dass_jax.models.ast.LENGTH_EXTENSIONS`). AuM has
  learned embeddings only: 'refuse' keeps its own grid (None for inputs of another time-patch
  count); 'interpolate' and 'sine' resample the embeddings to the input's grid with
  `with_max_length`, as the AuM loader does. ('sine' is the DASS authors' substitution for AST's
  embeddings; AuM has no sinusoidal form, so it is resampled under that setting too.)
  """
  check_choice(extension, LENGTH_EXTENSIONS, "length extension")
  new_config = dataclasses.replace(config, max_length=frames)
  if new_config.grid == config.grid:
    return params, config
  if extension == "refuse":
    return None
  return with_max_length(params, config, frames)
