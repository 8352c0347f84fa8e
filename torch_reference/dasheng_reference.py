"""The `dasheng` package (pinned 0.0.9) as the PyTorch reference of dass_jax's Dasheng.

The encoder is the package's own `dasheng.pretrained.pretrained.Dasheng`, imported with
`torch_reference.torchaudio_double` standing in for torchaudio (see that module for why); the
AudioSet classifier on top is the one of the authors' README (`outputlayer` = LayerNorm(D) ->
Linear(D, classes) on the mean of all tokens), returning logits (the README applies the sigmoid).

`dasheng` is installed without its dependencies (`pip install --no-deps dasheng==0.0.9`; it needs
`einops` besides torch); `import_dasheng` raises ImportError when it is missing, so tests can skip
with that reason.

State-dict layouts this module writes (the three the converter reads):
  encoder     `{"model": state_dict, "config": {...}}` as the released `dasheng_*.pt`: front-end
              buffers `front_end.0.spectrogram.window`, `front_end.0.mel_scale.fb`, `init_bn.1.*`,
              `patch_embed.proj.*`, `time_pos_embed`, `freq_pos_embed`, `blocks.{i}.*`, `norm.*`
  hf          the Hugging Face `model.safetensors`: the encoder keys under `encoder.`, without
              the `front_end.*` buffers
  classifier  a flat state dict: the encoder keys plus `outputlayer.0.*` (LayerNorm) and
              `outputlayer.1.*` (Linear), as `dasheng_audioset_mAP497.pt`
"""

from __future__ import annotations

import importlib

import torch

from torch_reference import torchaudio_double

REQUIRED_VERSION = "0.0.9"


def import_dasheng():
  """The `Dasheng` encoder class of the installed `dasheng` package (imported under the double).

  Raises:
    ImportError: `dasheng` (or its `einops` dependency) is not installed, or not version 0.0.9.
  """
  from importlib import metadata

  try:
    version = metadata.version("dasheng")
  except metadata.PackageNotFoundError as e:
    raise ImportError(
      f"the dasheng package is not installed (pip install --no-deps dasheng=={REQUIRED_VERSION} "
      "einops)"
    ) from e
  if version != REQUIRED_VERSION:
    raise ImportError(f"dasheng {version} is installed; the reference is {REQUIRED_VERSION}")
  with torchaudio_double.installed():
    pretrained = importlib.import_module("dasheng.pretrained.pretrained")
  return pretrained.Dasheng


class DashengClassifier(torch.nn.Module):
  """dasheng's encoder + the README's AudioSet head: (B, T) -> (embeddings, logits)."""

  def __init__(self, embed_dim: int, depth: int, num_heads: int, num_classes: int = 527, **kw):
    super().__init__()
    encoder_class = import_dasheng()
    self.encoder = encoder_class(embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kw)
    self.outputlayer = torch.nn.Sequential(
      torch.nn.LayerNorm(embed_dim), torch.nn.Linear(embed_dim, num_classes)
    )

  def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    embeddings = self.encoder(waveforms)
    return embeddings, self.outputlayer(embeddings.mean(1))


def randomize_(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
  """Moves every parameter and the BatchNorm statistics off their defaults, reproducibly.

  Parameters get N(0, scale^2) added; BatchNorm running means N(-40, 10^2) dB-like values and
  variances U(50, 400), so the front end's normalisation is far from the identity.
  """
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in sorted(model.named_parameters()):
      p.add_(scale * torch.randn(p.shape, generator=gen))
    for name, buf in sorted(model.named_buffers()):
      if name.endswith("running_mean"):
        buf.copy_(-40.0 + 10.0 * torch.randn(buf.shape, generator=gen))
      elif name.endswith("running_var"):
        buf.copy_(50.0 + 350.0 * torch.rand(buf.shape, generator=gen))
  return model.eval()


def encoder_checkpoint(model: DashengClassifier) -> dict:
  """The released encoder `.pt` layout: {"model": encoder state dict, "config": {...}}."""
  enc = model.encoder
  config = {"embed_dim": enc.embed_dim, "depth": len(enc.blocks), "target_length": 1008}
  return {"model": dict(enc.state_dict()), "config": config}


def hf_state_dict(model: DashengClassifier) -> dict[str, torch.Tensor]:
  """The Hugging Face layout: `encoder.` + encoder keys, without the front-end buffers."""
  encoder = model.encoder.state_dict()
  return {f"encoder.{k}": v for k, v in encoder.items() if not k.startswith("front_end")}


def classifier_state_dict(model: DashengClassifier) -> dict[str, torch.Tensor]:
  """The AudioSet classifier layout: flat encoder keys plus `outputlayer.*`."""
  head = {f"outputlayer.{k}": v for k, v in model.outputlayer.state_dict().items()}
  return {**model.encoder.state_dict(), **head}
