"""A plain-torch test double for the two torchaudio transforms the `dasheng` package uses.

Why a double: `dasheng==0.0.9` builds its front end from `torchaudio.transforms.MelSpectrogram`
and `torchaudio.transforms.AmplitudeToDB`, but PyPI's torchaudio is a CUDA build linked against
libtorch_cuda and does not import beside the CPU torch this project pins (the working torchaudio
route costs several GB of other torch wheels). The parity tests therefore install `dasheng` with
`--no-deps` and put this module in `sys.modules["torchaudio"]` while they import and run it
(`installed()`), so that the package's own model code is the reference and only the two
transforms are stood in for. The double is itself checked against librosa (tests/test_dasheng_
frontend.py: `librosa.filters.mel(htk=True, norm=None)`, `librosa.stft(center=True,
pad_mode="reflect")` with a periodic Hann window, and `librosa.power_to_db`).

What the double computes, as torchaudio 2.x does with the arguments dasheng passes (anything else
is refused rather than approximated):
  MelSpectrogram  torch.stft(center, reflect padding, periodic Hann window of win_length, onesided)
                  -> |X|^power -> (..., freq, time) @ fb, fb = triangular filters on the HTK mel
                  scale (2595 log10(1 + f / 700)) over linspace(0, sr // 2, n_fft // 2 + 1) Hz, no
                  normalisation, all in float32 with torch's own ops (torchaudio's recipe);
                  buffers `spectrogram.window` and `mel_scale.fb`, the names in dasheng's
                  state dicts (`front_end.0.spectrogram.window`, `front_end.0.mel_scale.fb`).
  AmplitudeToDB   10 log10(clamp(x, 1e-10)) (power) or 20 log10 (magnitude), then the top_db
                  floor: for 2-D and 3-D input one maximum over the whole tensor (so a (batch,
                  mel, time) batch shares one floor), for 4-D and more one per leading index.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types
from collections.abc import Iterator

import torch

AMIN = 1e-10


def _hz_to_mel(freq: float) -> float:
  return 2595.0 * math.log10(1.0 + freq / 700.0)


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
  return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def melscale_fbanks(
  n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> torch.Tensor:
  """HTK-mel triangular filters without normalisation, (n_freqs, n_mels) float32."""
  all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
  m_pts = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
  f_pts = _mel_to_hz(m_pts)
  f_diff = f_pts[1:] - f_pts[:-1]
  slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
  down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
  up = slopes[:, 2:] / f_diff[1:]
  return torch.max(torch.zeros(1), torch.min(down, up))


class Spectrogram(torch.nn.Module):
  """Power spectrogram (..., time) -> (..., n_fft // 2 + 1, frames); buffer `window`."""

  def __init__(self, n_fft: int, win_length: int, hop_length: int, power: float, center: bool):
    super().__init__()
    self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
    self.power, self.center = power, center
    self.register_buffer("window", torch.hann_window(win_length))

  def forward(self, waveform: torch.Tensor) -> torch.Tensor:
    shape = waveform.size()
    spec = torch.stft(
      waveform.reshape(-1, shape[-1]),
      n_fft=self.n_fft,
      hop_length=self.hop_length,
      win_length=self.win_length,
      window=self.window,
      center=self.center,
      pad_mode="reflect",
      normalized=False,
      onesided=True,
      return_complex=True,
    )
    spec = spec.reshape(shape[:-1] + spec.shape[-2:])
    return spec.abs().pow(self.power)


class MelScale(torch.nn.Module):
  """(..., freq, time) -> (..., n_mels, time) with the buffer `fb` (freq, n_mels)."""

  def __init__(self, n_mels: int, sample_rate: int, f_min: float, f_max: float, n_stft: int):
    super().__init__()
    self.register_buffer("fb", melscale_fbanks(n_stft, f_min, f_max, n_mels, sample_rate))

  def forward(self, spec: torch.Tensor) -> torch.Tensor:
    return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(torch.nn.Module):
  """torchaudio.transforms.MelSpectrogram for the arguments dasheng uses (see the module doc)."""

  def __init__(
    self,
    sample_rate: int = 16000,
    n_fft: int = 400,
    win_length: int | None = None,
    hop_length: int | None = None,
    f_min: float = 0.0,
    f_max: float | None = None,
    pad: int = 0,
    n_mels: int = 128,
    power: float = 2.0,
    normalized: bool = False,
    center: bool = True,
    pad_mode: str = "reflect",
    norm: str | None = None,
    mel_scale: str = "htk",
  ):
    super().__init__()
    unsupported = {
      "pad": (pad, 0),
      "normalized": (normalized, False),
      "pad_mode": (pad_mode, "reflect"),
      "norm": (norm, None),
      "mel_scale": (mel_scale, "htk"),
    }
    for name, (value, supported) in unsupported.items():
      if value != supported:
        raise NotImplementedError(f"torchaudio double: MelSpectrogram({name}={value!r})")
    win_length = win_length or n_fft
    hop_length = hop_length or win_length // 2
    f_max = f_max or float(sample_rate // 2)
    self.spectrogram = Spectrogram(n_fft, win_length, hop_length, power, center)
    self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1)

  def forward(self, waveform: torch.Tensor) -> torch.Tensor:
    return self.mel_scale(self.spectrogram(waveform))


class AmplitudeToDB(torch.nn.Module):
  """torchaudio.transforms.AmplitudeToDB (ref 1.0, amin 1e-10; the floor as the module doc)."""

  def __init__(self, stype: str = "power", top_db: float | None = None):
    super().__init__()
    if stype not in ("power", "magnitude"):
      raise ValueError(f"stype must be 'power' or 'magnitude', got {stype!r}")
    if top_db is not None and top_db < 0:
      raise ValueError("top_db must be positive")
    self.multiplier = 10.0 if stype == "power" else 20.0
    self.top_db = top_db

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x_db = self.multiplier * torch.log10(torch.clamp(x, min=AMIN))
    if self.top_db is None:
      return x_db
    shape = x_db.size()
    packed = shape[-3] if x_db.dim() > 2 else 1
    x_db = x_db.reshape(-1, packed, shape[-2], shape[-1])
    floor = (x_db.amax(dim=(-3, -2, -1)) - self.top_db).view(-1, 1, 1, 1)
    return torch.max(x_db, floor).reshape(shape)


def module() -> types.ModuleType:
  """A `torchaudio` module object whose `transforms` holds the two doubles."""
  transforms = types.ModuleType("torchaudio.transforms")
  transforms.MelSpectrogram = MelSpectrogram
  transforms.AmplitudeToDB = AmplitudeToDB
  package = types.ModuleType("torchaudio")
  package.__doc__ = __doc__
  package.transforms = transforms
  return package


@contextlib.contextmanager
def installed() -> Iterator[types.ModuleType]:
  """Puts the double in sys.modules as `torchaudio` for the duration of the block.

  Modules imported inside the block keep their reference to the double afterwards; entries that
  were in sys.modules before are restored on exit.
  """
  package = module()
  names = {"torchaudio": package, "torchaudio.transforms": package.transforms}
  saved = {name: sys.modules.get(name) for name in names}
  sys.modules.update(names)
  try:
    yield package
  finally:
    for name, previous in saved.items():
      if previous is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = previous
