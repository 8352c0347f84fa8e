"""SSLAM (Alex et al., ICLR 2025): the ViT-B audio classifier that taught DASS v3, in Flax Linen.

    model = SSLAM(SslamConfig())                              # AudioSet: 128 mel x 1024 frames
    logits = model.apply({"params": params}, fbank)           # fbank: (batch, frames, 128)

SSLAM is an EAT / data2vec 2.0 encoder (their `AltBlock`s with layer_norm_first=False) fine-tuned
on AudioSet-2M (50.2 mAP). It reads exactly the AST/DASS input: Kaldi fbank of 16 kHz audio, 128
mel bins, 10 ms frames, normalised (x + 4.268) / (4.569 * 2) (`dass_jax.frontends.kaldi_fbank`);
the authors' inference pads or crops it to 1024 frames, as the DASS dataloader does.

Computation (torch: NCHW (batch, 1, frames, mel), time is H, frequency W):
  (batch, frames, mel) -> NHWC (batch, frames, mel, 1)
  -> patch conv 16x16, stride 16, no padding -> (batch, T, F, D), T = frames // 16, F = mel // 16
  -> tokens (batch, T*F, D) time-major (index t*F + f) + fixed 2-D sin-cos positions (no param)
  -> prepend the classification token (no position) -> LayerNorm (`embed_norm`)
  -> num_layers post-norm blocks (`layers.TransformerBlock(post_norm=True)`):
     x = LN(x + attn(x)); x = LN(x + mlp(x)), exact GELU, qkv bias, LayerNorm eps 1e-6; no final
     norm
  -> classification token -> LayerNorm (`head_norm`, eps 1e-6) -> Dense (`head`) -> logits.
Positions (`sincos_positions`): token (t, f) gets [sin(f w_k), cos(f w_k)] over the first D/2
channels and [sin(t w_k), cos(t w_k)] over the last D/2, w_k = 10000^(-k / (D/4)), k < D/4 (MAE's
`get_2d_sincos_pos_embed` with the grid axes as data2vec builds it: the first half encodes the
frequency index). The original stores this table for 768 time patches (12288 frames) in its
checkpoints; here it is computed for the input's grid. A checkpoint trained in fp16 stores it
rounded to float16, which `pos_embed_dtype='float16'` reproduces.

Length: the positions fit any number of frames (>= 16; frames beyond a multiple of 16 are ignored
by the patch conv, as in torch). `max_length` (1024) is the clip length of training and of the
authors' inference: `dass_jax.predict` pads or crops to it (`models.fixed_length`), training a
SSLAM student takes clips of that length; as a teacher the model runs on the batch as it comes.

Params tree (D = hidden_size, M = mlp_dim, P = patch_size, C = num_classes, i = block index):
  patch_embed/{kernel (P, P, 1, D), bias (D,)}, cls_token (1, 1, D), embed_norm/{scale, bias}
  blocks_i/attn/qkv/{kernel (D, 3D), bias}   output columns [q | k | v], each head-major
  blocks_i/attn/out/{kernel (D, D), bias}, blocks_i/norm1/{scale, bias}
  blocks_i/mlp/fc1/{kernel (D, M), bias}, blocks_i/mlp/fc2/{kernel (M, D), bias}, blocks_i/norm2
  head_norm/{scale, bias} (D,), head/{kernel (D, C), bias (C,)}
`convert_torch/sslam.py` maps the fairseq and Hugging Face checkpoints onto it.

Intermediates: applied with `mutable=["intermediates"]`, the model sows `hidden_states` (the
normalised embeddings, then each block's output, (batch, 1 + T*F, D)) and `pooled` (batch, D), the
classification token before `head_norm`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dass_jax import attention
from dass_jax.constants import NUM_MEL_BINS
from dass_jax.layers import (
  DTYPES,
  TransformerBlock,
  compute_dtype,
  dense,
  layer_norm,
  patch_conv,
)
from dass_jax.layers import trunc_normal_init as init
from dass_jax.models.base import ModelConfig, check_choice, check_patch_transformer

POS_EMBED_DTYPES = ("float32", "float16")
SINCOS_RATE = 10000.0


@dataclasses.dataclass(frozen=True)
class SslamConfig(ModelConfig):
  """SSLAM / EAT ViT classifier. Defaults: the released SSLAM AS2M model (ViT-B/16, 527 classes).

  Attributes:
    num_classes: classifier outputs (527 for AudioSet).
    hidden_size: token width D (a multiple of 4: the positions split it in four).
    num_layers: post-norm transformer blocks.
    num_heads: attention heads (head dim D / num_heads).
    mlp_dim: hidden width of the block MLP.
    patch_size: square patch side and stride of the patch-embedding conv.
    num_mel_bins: input frequency bins.
    max_length: frames of a training clip; `predict` pads or crops inputs to it.
    layer_norm_eps: eps of the embedding and block LayerNorms.
    head_layer_norm_eps: eps of the classifier head's LayerNorm (`fc_norm`).
    pos_embed_dtype: 'float32', or 'float16' for a checkpoint that stores its position table in
      half precision (fairseq fp16 training halves it with the weights).
    dropout_rate: dropout after the embeddings, the attention output and the MLP (train only).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
    attention_impl: how attention runs ('auto', 'xla', 'cudnn', 'blocked';
      `dass_jax.attention`): a choice of speed, not of the model.
  """

  model_type: ClassVar[str] = "sslam"
  RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"dropout_rate", "dtype"})

  num_classes: int = 527
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 16
  num_mel_bins: int = NUM_MEL_BINS
  max_length: int = 1024
  layer_norm_eps: float = 1e-6
  head_layer_norm_eps: float = 1e-6
  pos_embed_dtype: str = "float32"
  dropout_rate: float = 0.0
  dtype: str = "float32"
  attention_impl: str = "auto"

  def __post_init__(self):
    check_choice(self.dtype, DTYPES, "SslamConfig.dtype")
    check_choice(self.attention_impl, attention.IMPLEMENTATIONS, "SslamConfig.attention_impl")
    check_choice(self.pos_embed_dtype, POS_EMBED_DTYPES, "SslamConfig.pos_embed_dtype")
    if self.hidden_size % 4:
      raise ValueError(f"hidden_size must be a multiple of 4 (2-D sin-cos), got {self.hidden_size}")
    check_patch_transformer(self)

  def example_input_shape(self) -> tuple[int, ...]:
    return (1, self.max_length, self.num_mel_bins)

  @property
  def grid(self) -> tuple[int, int]:
    """(time patches, frequency patches) of a `max_length`-frame input."""
    return self.max_length // self.patch_size, self.num_mel_bins // self.patch_size


def sincos_frequencies(dim: int) -> np.ndarray:
  """(dim // 4,) float32 w_k = 1 / 10000^(k / (dim / 4)), computed in float32 as MAE does."""
  exponent = np.arange(dim // 4, dtype=np.float32) / np.float32(dim / 4)
  return (np.float32(1.0) / np.float32(SINCOS_RATE) ** exponent).astype(np.float32)


def sincos_positions(time: int, freq: int, dim: int, dtype: str = "float32") -> jax.Array:
  """(time * freq, dim) fixed positions of a time x freq patch grid, row t * freq + f.

  Columns [0, dim/4): sin(f w_k); [dim/4, dim/2): cos(f w_k); [dim/2, 3dim/4): sin(t w_k);
  [3dim/4, dim): cos(t w_k) (`sincos_frequencies`). Angles are float32 products, as the
  original's; `dtype='float16'` rounds the table to half precision and back. Computed inside the
  jit (no table constant is embedded in the program).
  """
  check_choice(dtype, POS_EMBED_DTYPES, "pos_embed_dtype")
  omega = sincos_frequencies(dim)

  def axis(positions: jax.Array) -> jax.Array:
    angles = positions[:, None] * omega
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)

  t = jnp.repeat(jnp.arange(time, dtype=jnp.float32), freq)
  f = jnp.tile(jnp.arange(freq, dtype=jnp.float32), time)
  table = jnp.concatenate([axis(f), axis(t)], axis=-1)
  return table.astype(jnp.float16).astype(jnp.float32) if dtype == "float16" else table


class SSLAM(nn.Module):
  """(batch, frames >= patch_size, num_mel_bins) normalised fbank -> (batch, classes) fp32 logits,
  read from the classification token; see the module docstring. `train=True` turns dropout on
  (rng stream 'dropout') when the config has a `dropout_rate`."""

  config: SslamConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    if x.ndim != 3 or x.shape[-1] != cfg.num_mel_bins or x.shape[1] < cfg.patch_size:
      raise ValueError(
        f"SSLAM expects (batch, frames >= {cfg.patch_size}, {cfg.num_mel_bins}) fbank features, "
        f"got shape {tuple(x.shape)}"
      )
    batch, dim, p = x.shape[0], cfg.hidden_size, cfg.patch_size
    x = patch_conv(dim, (p, p), (p, p), "patch_embed", dtype)(x[..., None].astype(dtype))
    time, freq = x.shape[1], x.shape[2]
    x = x.reshape(batch, time * freq, dim)
    x = x + sincos_positions(time, freq, dim, cfg.pos_embed_dtype).astype(dtype)
    cls = self.param("cls_token", init, (1, 1, dim), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (batch, 1, dim)), x], axis=1)
    x = layer_norm("embed_norm", cfg.layer_norm_eps, dtype)(x)
    x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)
    self.sow("intermediates", "hidden_states", x)
    for i in range(cfg.num_layers):
      x = TransformerBlock(
        cfg.num_heads,
        cfg.mlp_dim,
        cfg.layer_norm_eps,
        True,
        cfg.dropout_rate,
        dtype,
        cfg.attention_impl,
        post_norm=True,
        name=f"blocks_{i}",
      )(x, train)
      self.sow("intermediates", "hidden_states", x)
    pooled = x[:, 0]
    self.sow("intermediates", "pooled", pooled)
    pooled = layer_norm("head_norm", cfg.head_layer_norm_eps, dtype)(pooled)
    return dense(cfg.num_classes, "head", dtype)(pooled).astype(jnp.float32)


def hidden_states(intermediates: Any, config: SslamConfig) -> jax.Array:
  """The last hidden state as a time sequence, (batch, time patches, D): the last block's patch
  tokens (the classification token dropped), laid out time-major over the (time, frequency)
  patch grid, averaged over frequency. From `apply(..., mutable=["intermediates"])`."""
  x = intermediates["hidden_states"][-1][:, 1:]
  freq = config.num_mel_bins // config.patch_size
  return jnp.mean(x.reshape(x.shape[0], x.shape[1] // freq, freq, x.shape[2]), axis=2)


def with_max_length(params: Any, config: SslamConfig, max_length: int) -> tuple[Any, SslamConfig]:
  """(params, config) for clips of `max_length` frames: the positions are computed for any grid,
  so only the config's `max_length` changes and the params come back as they are."""
  return params, dataclasses.replace(config, max_length=max_length)
