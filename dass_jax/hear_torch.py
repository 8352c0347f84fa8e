"""The torch side of `dass_jax.hear`: a `torch.nn.Module` around a JAX `Embedder` (needs torch,
the [torch] extra). It holds no torch parameters; `.to(device)` only says where results go."""

from __future__ import annotations

import numpy as np
import torch

from dass_jax.embed import Embedder


class HearModel(torch.nn.Module):
  """A HEAR model: `sample_rate`, `scene_embedding_size`, `timestamp_embedding_size` (ints), and
  the embeddings of (n_sounds, n_samples) audio tensors."""

  def __init__(self, embedder: Embedder):
    super().__init__()
    self.embedder = embedder
    self.sample_rate = int(embedder.sample_rate)
    self.scene_embedding_size = int(embedder.dim)
    self.timestamp_embedding_size = int(embedder.dim)

  def _inputs(self, audio: torch.Tensor) -> np.ndarray:
    if audio.ndim != 2:
      raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    waveforms = audio.detach().to("cpu", torch.float32).numpy()
    return self.embedder.model_input(waveforms)

  def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, frames, times = self.embedder.embed_inputs(self._inputs(audio))
    embeddings = torch.from_numpy(np.ascontiguousarray(frames, np.float32)).to(audio.device)
    stamps = torch.from_numpy(np.tile(times, (frames.shape[0], 1))).to(audio.device)
    return embeddings, stamps

  def scene_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
    scene, _, _ = self.embedder.embed_inputs(self._inputs(audio))
    scene = np.ascontiguousarray(scene, np.float32)
    return torch.from_numpy(scene).to(audio.device)

  def forward(self, audio: torch.Tensor) -> torch.Tensor:
    """The scene embeddings (a Module is callable)."""
    return self.scene_embeddings(audio)
