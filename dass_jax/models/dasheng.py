"""Dasheng (Dinkel et al., Interspeech 2024) in Flax Linen: a ViT audio encoder on raw 16 kHz audio,
with the AudioSet classifier head of its authors' fine-tuned model.

    model = Dasheng(DashengConfig.base())                     # 527 AudioSet classes
    logits = model.apply({"params": params}, waveforms)       # waveforms: (batch, samples)
    tokens = model.apply({"params": params}, waveforms, method=Dasheng.embed)

Computation, as `dasheng==0.0.9` (`dasheng.pretrained.pretrained.Dasheng.forward`) followed by the
classifier of the authors' README (`outputlayer` = LayerNorm -> Linear on the token mean):
  waveforms (B, T) -> `dass_jax.frontends.dasheng_mel`: 64-bin log-mel power in dB, frames
  1 + T // 160 (10 ms hop), floored at max - top_db -> inference BatchNorm over the mel axis
  (`init_bn`) -> (B, frames, 64)
  -> patch conv 64 x 4 (all mel bins x 4 frames), stride (64, 4), no padding: one token per 40 ms,
  N = frames // 4 (trailing frames that do not fill a token are dropped, as torch's conv does)
  -> the tokens are cut into chunks of `chunk_tokens` (252 = 1008 frames = 10.08 s); every chunk
  runs on its own: + time_pos_embed[:length] (restarting at 0 in each chunk) + freq_pos_embed ->
  `depth` pre-norm blocks (LayerNorm eps 1e-6, fused-qkv attention, exact-GELU MLP) -> LayerNorm
  (`norm`); the last chunk keeps its own length (no padding) -> concatenated: (B, N, D) embeddings
  -> mean over all N tokens -> LayerNorm eps 1e-5 (`head_norm`) -> Dense (`head`): (B, C) logits.
Inputs of any length >= 480 samples (one token) run in one pass; chunks never see each other, so
memory grows linearly with the duration.

What the entry points return (all take `params` only):
  __call__(waveforms)             (B, C) float32 logits; with num_classes=0 (an encoder without a
                                  classifier) the pooled (B, D) token mean instead
  embed(waveforms)                (B, N, D) embeddings, dasheng's `forward` output
  spectrogram(waveforms)          (B, frames, 64) BatchNorm'ed log-mel, the encoder's input
  encode(spectrogram)             (B, N, D) embeddings of a spectrogram
`__call__` also sows `embeddings` (B, N, D) and `pooled` (B, D) in "intermediates"
(`model.apply(..., mutable=["intermediates"])`), so one pass gives both.

The dB floor (`config.db_floor`): 'clip' (default) floors every clip at its own maximum, what
dasheng computes for one clip, so that batched prediction, timelines, evaluation and cached
teacher logits equal clip-at-a-time results; 'batch' shares one maximum over the batch, exactly
what dasheng computes for a batched (B, T) call (torchaudio's AmplitudeToDB on 3-D input). The two
agree whenever no mel bin of the batch lies more than top_db below the loudest clip's maximum.

Params tree (D = embed_dim, M = mlp_dim, C = num_classes, K = chunk_tokens, i = block index):
  init_bn/{mean, var, scale, bias}           (64,) BatchNorm running statistics and affine; the
                                             statistics are held fixed (stop_gradient, and
                                             `FROZEN_PARAMS` in training)
  patch_embed/{kernel (64, 4, 1, D), bias (D,)}
  time_pos_embed (K, D), freq_pos_embed (D,)
  blocks_i/norm1, blocks_i/attn/{qkv, out}, blocks_i/norm2, blocks_i/mlp/{fc1, fc2}
                                             (`dass_jax.layers.TransformerBlock`; qkv output
                                             columns [q | k | v], each head-major)
  norm/{scale, bias} (D,)
  head_norm/{scale, bias} (D,), head/{kernel (D, C), bias (C,)}   (only when num_classes > 0)
`convert_torch/dasheng.py` documents the mapping from the PyTorch checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from dass_jax import attention
from dass_jax.constants import SAMPLE_RATE
from dass_jax.frontends import dasheng_mel
from dass_jax.layers import DTYPES, TransformerBlock, compute_dtype, dense, layer_norm
from dass_jax.layers import trunc_normal_init as init
from dass_jax.models.base import ModelConfig, check_choice

PATCH_FRAMES = 4  # frames per token (40 ms); the patch covers all 64 mel bins.
# Params that hold statistics, not weights: training leaves them as they are (the registry's
# `ModelSpec.frozen`; the module already stops their gradients, but weight decay would move them).
# A model trained from scratch gets them from data first (`init_statistics`).
FROZEN_PARAMS = ("init_bn/mean", "init_bn/var")


@dataclasses.dataclass(frozen=True)
class DashengConfig(ModelConfig):
  """Dasheng encoder (+ optional AudioSet classifier head).

  Defaults are Dasheng-base with the 527-class AudioSet head (85.85 M params; the encoder alone,
  num_classes=0, 85.45 M). `base()`, `b06()` and `b12()` give the published sizes; any other
  embed_dim / depth / num_heads / mlp_dim is a custom size.

  Attributes:
    num_classes: classifier outputs (527 for AudioSet); 0 for an encoder without a head.
    embed_dim: token width D.
    depth: transformer blocks.
    num_heads: attention heads (head dim D / num_heads).
    mlp_dim: hidden width of the block MLP (4 D in every published model).
    chunk_tokens: tokens per independently encoded chunk, = the time position embeddings
      (252 = 1008 frames = 10.08 s).
    top_db: dynamic range kept below the maximum of the log-mel spectrogram.
    db_floor: 'clip' or 'batch': which maximum the top_db floor is taken from (module docstring).
    layer_norm_eps: eps of the block and final encoder LayerNorms.
    head_layer_norm_eps: eps of the classifier head's LayerNorm (torch default).
    dtype: encoder compute dtype ('float32' or 'bfloat16'); the front end and params stay float32.
    attention_impl: how attention runs ('auto', 'xla', 'cudnn', 'blocked';
      `dass_jax.attention`): a choice of speed, not of the model.
  """

  model_type: ClassVar[str] = "dasheng"
  RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"db_floor", "dtype"})

  num_classes: int = 527
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  chunk_tokens: int = 252
  top_db: float = dasheng_mel.TOP_DB
  db_floor: str = "clip"
  layer_norm_eps: float = 1e-6
  head_layer_norm_eps: float = 1e-5
  dtype: str = "float32"
  attention_impl: str = "auto"

  def __post_init__(self):
    check_choice(self.dtype, DTYPES, "DashengConfig.dtype")
    check_choice(self.attention_impl, attention.IMPLEMENTATIONS, "DashengConfig.attention_impl")
    check_choice(self.db_floor, dasheng_mel.FLOOR_SCOPES, "DashengConfig.db_floor")
    for name in ("embed_dim", "depth", "num_heads", "mlp_dim", "chunk_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"DashengConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.num_classes < 0:
      raise ValueError(f"DashengConfig.num_classes must be >= 0, got {self.num_classes}")
    if self.embed_dim % self.num_heads:
      raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
    if not self.top_db > 0:
      raise ValueError(f"DashengConfig.top_db must be positive, got {self.top_db}")

  def example_input_shape(self) -> tuple[int, ...]:
    return (1, SAMPLE_RATE)

  @classmethod
  def base(cls, **overrides) -> DashengConfig:
    """Dasheng-base: D 768, 12 blocks, 12 heads (85.45 M encoder params)."""
    return cls(**{"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_dim": 3072, **overrides})

  @classmethod
  def b06(cls, **overrides) -> DashengConfig:
    """Dasheng-0.6B: D 1280, 32 blocks, 16 heads (630.3 M encoder params)."""
    return cls(**{"embed_dim": 1280, "depth": 32, "num_heads": 16, "mlp_dim": 5120, **overrides})

  @classmethod
  def b12(cls, **overrides) -> DashengConfig:
    """Dasheng-1.2B: D 1536, 40 blocks, 24 heads (1134.0 M encoder params)."""
    return cls(**{"embed_dim": 1536, "depth": 40, "num_heads": 24, "mlp_dim": 6144, **overrides})


def init_statistics(params, config: DashengConfig, waveforms: jax.Array):
  """`params` with init_bn's mean and variance set to those of `waveforms`' log-mel dB.

  dasheng trains its BatchNorm in train mode, whose running statistics converge to the per-mel-bin
  mean and variance of the (floored) dB spectrogram of its data; here they are held fixed, so a
  model trained from scratch takes them from a batch of its training data (`experiments.train`
  uses the first batch) instead of keeping the initial 0 and 1 on dB values of tens of dB.

  Args:
    params: Dasheng params.
    config: the model's config (top_db and db_floor of the front end).
    waveforms: (batch, samples) 16 kHz training audio.
  """
  db = dasheng_mel.log_mel_db(waveforms, config.top_db, config.db_floor)
  stats = {"mean": jnp.mean(db, axis=(0, 1)), "var": jnp.var(db, axis=(0, 1))}
  return {**params, "init_bn": {**params["init_bn"], **stats}}


def hidden_states(intermediates, config: DashengConfig) -> jax.Array:
  """The embeddings (batch, N, D), one per 40 ms, as sown by `__call__` (= `Dasheng.embed`)."""
  del config
  return intermediates["embeddings"][-1]


class MelBatchNorm(nn.Module):
  """dasheng's `init_bn` in inference form over the last (mel) axis of (..., 64) dB values."""

  eps: float = dasheng_mel.BN_EPS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (dasheng_mel.N_MELS,)
    mean = jax.lax.stop_gradient(self.param("mean", nn.initializers.zeros, shape, jnp.float32))
    var = jax.lax.stop_gradient(self.param("var", nn.initializers.ones, shape, jnp.float32))
    scale = self.param("scale", nn.initializers.ones, shape, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, shape, jnp.float32)
    return dasheng_mel.batch_norm(x, mean, var, scale, bias, self.eps)


class Dasheng(nn.Module):
  """Dasheng: (batch, samples) 16 kHz waveforms -> (batch, num_classes) fp32 logits.

  See the module docstring for the other entry points (`embed`, `spectrogram`, `encode`).
  `train` is accepted for the common model interface; Dasheng has no dropout.
  """

  config: DashengConfig

  def setup(self):
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    self.init_bn = MelBatchNorm()
    self.patch_embed = nn.Conv(
      cfg.embed_dim,
      (dasheng_mel.N_MELS, PATCH_FRAMES),
      strides=(dasheng_mel.N_MELS, PATCH_FRAMES),
      padding="VALID",
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=init,
    )
    self.time_pos_embed = self.param(
      "time_pos_embed", init, (cfg.chunk_tokens, cfg.embed_dim), jnp.float32
    )
    self.freq_pos_embed = self.param("freq_pos_embed", init, (cfg.embed_dim,), jnp.float32)
    self.blocks = [
      TransformerBlock(
        cfg.num_heads, cfg.mlp_dim, cfg.layer_norm_eps, True, 0.0, dtype, cfg.attention_impl
      )
      for _ in range(cfg.depth)
    ]
    self.norm = layer_norm("norm", cfg.layer_norm_eps, dtype)
    if cfg.num_classes:
      self.head_norm = layer_norm("head_norm", cfg.head_layer_norm_eps, dtype)
      self.head = dense(cfg.num_classes, "head", dtype)

  def spectrogram(self, waveforms: jax.Array) -> jax.Array:
    """(B, samples) -> (B, frames, 64) float32: log-mel dB, floored, BatchNorm'ed."""
    cfg = self.config
    db = dasheng_mel.log_mel_db(waveforms, cfg.top_db, cfg.db_floor)
    return self.init_bn(db)

  def encode(self, spectrogram: jax.Array) -> jax.Array:
    """(B, frames, 64) normalised log-mel -> (B, frames // 4, D) embeddings, chunk by chunk."""
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    if spectrogram.ndim != 3 or spectrogram.shape[-1] != dasheng_mel.N_MELS:
      raise ValueError(
        f"Dasheng.encode expects (batch, frames, {dasheng_mel.N_MELS}) spectrograms, got shape "
        f"{tuple(spectrogram.shape)}"
      )
    if spectrogram.shape[1] < PATCH_FRAMES:
      raise ValueError(
        f"Dasheng needs at least {PATCH_FRAMES} frames (one 40 ms token), got "
        f"{spectrogram.shape[1]}"
      )
    batch, dim, chunk = spectrogram.shape[0], cfg.embed_dim, cfg.chunk_tokens
    # (B, F, M) -> NHWC (B, M, F, 1), i.e. torch's (B, 1, M, F): H is mel, W is time.
    x = jnp.swapaxes(spectrogram, 1, 2)[..., None].astype(dtype)
    x = self.patch_embed(x).reshape(batch, -1, dim)  # (B, N, D): one mel patch per time step
    full, rest = divmod(x.shape[1], chunk)
    pieces = []
    if full:
      chunks = x[:, : full * chunk].reshape(batch * full, chunk, dim)
      pieces.append(self._encode_chunk(chunks).reshape(batch, full * chunk, dim))
    if rest:
      pieces.append(self._encode_chunk(x[:, full * chunk :]))
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)

  def _encode_chunk(self, x: jax.Array) -> jax.Array:
    """(b, t <= chunk_tokens, D) tokens of one chunk each -> (b, t, D) after the blocks."""
    dtype = compute_dtype(self.config.dtype)
    x = x + self.time_pos_embed[: x.shape[1]].astype(dtype)
    x = x + self.freq_pos_embed.astype(dtype)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)

  def embed(self, waveforms: jax.Array) -> jax.Array:
    """(B, samples) -> (B, N, D) embeddings, N = (1 + samples // 160) // 4."""
    return self.encode(self.spectrogram(waveforms))

  def __call__(self, waveforms: jax.Array, train: bool = False) -> jax.Array:
    del train
    tokens = self.embed(waveforms)
    self.sow("intermediates", "embeddings", tokens)
    pooled = jnp.mean(tokens.astype(jnp.float32), axis=1)
    self.sow("intermediates", "pooled", pooled)
    if not self.config.num_classes:
      return pooled
    dtype = compute_dtype(self.config.dtype)
    return self.head(self.head_norm(pooled.astype(dtype))).astype(jnp.float32)
