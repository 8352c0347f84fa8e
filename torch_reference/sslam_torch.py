"""A PyTorch twin of SSLAM (EAT / data2vec 2.0 ViT classifier) for parity tests.

Written from the published architecture (SSLAM, ICLR 2025; EAT, IJCAI 2024; data2vec 2.0):
  fbank (B, T, 128) -> (B, 1, T, 128) -> Conv2d(1, D, 16, stride 16) -> (B, T/16 * 8, D) tokens,
  time-major -> + fixed 2-D sin-cos positions (stored as a (1, rows, D) parameter for 768 time
  patches, as the released checkpoints store them; the first T/16 * 8 rows are used) -> prepend
  the classification token -> LayerNorm -> blocks: x = LN1(x + attn(x)); x = LN2(x + mlp(x))
  (softmax in float32, exact GELU) -> token 0 -> LayerNorm (fc_norm) -> Linear (head).

The module tree gives the bare key layout; `fairseq_state_dict` and `hf_state_dict` rename it to
the two released layouts (`convert_torch.sslam` documents both; E = modality_encoders.IMAGE,
P = fixed_positional_encoder.positions):

  bare (this module)   fairseq checkpoint["model"]               Hugging Face (EATModel)
  patch_embed.*        model.E.local_encoder.proj.*              model.local_encoder.proj.*
  cls_token            model.E.extra_tokens                      model.extra_tokens
  positions            model.E.P                                 model.P
  embed_norm.*         model.E.context_encoder.norm.*            model.pre_norm.*
  blocks.i.*           model.blocks.i.*                          model.blocks.i.*
  fc_norm.*, head.*    fc_norm.*, head.*                         model.fc_norm.*, model.head.*
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

FAIRSEQ_ENCODER = "model.modality_encoders.IMAGE."
_FAIRSEQ = {
  "patch_embed.": FAIRSEQ_ENCODER + "local_encoder.proj.",
  "cls_token": FAIRSEQ_ENCODER + "extra_tokens",
  "positions": FAIRSEQ_ENCODER + "fixed_positional_encoder.positions",
  "embed_norm.": FAIRSEQ_ENCODER + "context_encoder.norm.",
  "blocks.": "model.blocks.",
  "fc_norm.": "fc_norm.",
  "head.": "head.",
}
_HF = {
  "patch_embed.": "model.local_encoder.proj.",
  "cls_token": "model.extra_tokens",
  "positions": "model.fixed_positional_encoder.positions",
  "embed_norm.": "model.pre_norm.",
  "blocks.": "model.blocks.",
  "fc_norm.": "model.fc_norm.",
  "head.": "model.head.",
}


def sincos_table(time: int, freq: int, dim: int) -> np.ndarray:
  """(time * freq, dim) float32: row t * freq + f is [sin f w, cos f w, sin t w, cos t w] over
  w_k = 10000^(-k / (dim / 4)), k < dim / 4, computed in float32 with numpy."""
  quarter = dim // 4
  omega = np.arange(quarter, dtype=np.float32) / np.float32(quarter)
  omega = np.float32(1.0) / np.float32(10000.0) ** omega
  t, f = np.meshgrid(
    np.arange(time, dtype=np.float32), np.arange(freq, dtype=np.float32), indexing="ij"
  )

  def axis(positions):
    angles = np.outer(positions.reshape(-1), omega).astype(np.float32)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([axis(f), axis(t)], axis=1).astype(np.float32)


class Attention(nn.Module):
  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    batch, length, dim = x.shape
    q, k, v = (
      self.qkv(x).reshape(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
    )
    scores = (q * (dim // self.heads) ** -0.5) @ k.transpose(-2, -1)
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return self.proj((weights @ v).transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class PostNormBlock(nn.Module):
  def __init__(self, dim: int, heads: int, hidden: int, eps: float):
    super().__init__()
    self.attn = Attention(dim, heads)
    self.norm1 = nn.LayerNorm(dim, eps=eps)
    self.mlp = Mlp(dim, hidden)
    self.norm2 = nn.LayerNorm(dim, eps=eps)

  def forward(self, x):
    x = self.norm1(x + self.attn(x))
    return self.norm2(x + self.mlp(x))


class SslamTwin(nn.Module):
  """SSLAM classifier; forward (B, frames, num_mel_bins) normalised fbank -> (B, classes) logits.

  `max_time_patches` rows of positions per frequency patch are stored (768 in the releases).
  """

  def __init__(
    self,
    num_classes: int = 527,
    dim: int = 768,
    depth: int = 12,
    heads: int = 12,
    mlp_dim: int = 3072,
    patch: int = 16,
    num_mel_bins: int = 128,
    max_time_patches: int = 768,
    eps: float = 1e-6,
  ):
    super().__init__()
    self.freq = num_mel_bins // patch
    self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
    table = sincos_table(max_time_patches, self.freq, dim)
    self.positions = nn.Parameter(torch.from_numpy(table)[None], requires_grad=False)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.embed_norm = nn.LayerNorm(dim, eps=eps)
    self.blocks = nn.ModuleList(PostNormBlock(dim, heads, mlp_dim, eps) for _ in range(depth))
    self.fc_norm = nn.LayerNorm(dim, eps=eps)
    self.head = nn.Linear(dim, num_classes)

  def forward(self, fbank):
    x = self.patch_embed(fbank[:, None]).flatten(2).transpose(1, 2)
    x = x + self.positions[:, : x.shape[1]]
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = self.embed_norm(x)
    for block in self.blocks:
      x = block(x)
    return self.head(self.fc_norm(x[:, 0]))


def perturb_(model: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
  """Moves every trainable parameter off its init (LayerNorm 1/0, zero token) reproducibly;
  the fixed positions stay as they are."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in sorted(model.named_parameters()):
      if p.requires_grad:
        p.add_(scale * torch.randn(p.shape, generator=gen))
  return model.eval()


def _renamed(model: nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
  out = {}
  for key, value in model.state_dict().items():
    prefix = next(p for p in names if key.startswith(p))
    out[names[prefix] + key[len(prefix) :]] = value
  return out


def fairseq_state_dict(model: SslamTwin) -> dict[str, torch.Tensor]:
  """The twin's tensors under the fairseq checkpoint's "model" keys."""
  return _renamed(model, _FAIRSEQ)


def hf_state_dict(model: SslamTwin) -> dict[str, torch.Tensor]:
  """The twin's tensors under the Hugging Face EATModel keys."""
  return _renamed(model, _HF)
