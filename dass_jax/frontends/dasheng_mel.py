"""Dasheng's front end in JAX: 16 kHz waveforms -> log-mel power spectrogram in dB.

The reference is the front end inside `dasheng==0.0.9` (`AudioTransformerMAE_Encoder.front_end`):

    torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=512,
        hop_length=160, f_min=0, f_max=8000, n_mels=64, center=True)
    torchaudio.transforms.AmplitudeToDB(top_db=120)

with torchaudio's defaults: frames centred by reflect-padding n_fft // 2 = 256 samples at both ends
(so frames = 1 + samples // 160, frame k centred on sample 160 k), a periodic Hann window
(0.5 - 0.5 cos(2 pi n / 512)), power spectrum |X|^2 over the 257 one-sided bins, triangular
filters equally spaced on the HTK mel scale (2595 log10(1 + f / 700)) from 0 to 8000 Hz without
normalisation, then 10 log10(max(x, 1e-10)) and a floor at (maximum - 120 dB). The BatchNorm that
dasheng applies next (`init_bn`) holds parameters and lives in the model
(`dass_jax.models.dasheng`); `batch_norm` here is its inference form.

The floor is the one non-local step. torchaudio's AmplitudeToDB takes a single maximum over a
2-D or 3-D input, so dasheng called on a (batch, samples) tensor floors every clip at the loudest
clip of the batch minus 120 dB. `apply_floor(scope="batch")` does exactly that;
`scope="clip"` takes each clip's own maximum, which is what dasheng computes for that clip alone
(batch 1) and makes a clip's result independent of the other clips in its batch.

Long recordings. Every frame depends only on its own 512 samples (the recording's two ends are
reflect-padded), so the power spectrogram could be made block by block; the floor needs the
maximum over the whole recording, so a streamed front end would keep the pre-floor dB frames
(256 bytes each, 25.6 kB per second) and floor them after the last one. `dass_jax.predict`
streams the decoding instead: the audio is decoded block by block into the whole 16 kHz waveform
(64 kB per second) and the model takes it in one pass, so the floor is exactly the recording's
own maximum and every frame is what the `dasheng` package computes for that recording.

Layout: (batch, frames, 64) float32, time major, as the package's other features. Filters and
window are computed in float64 and rounded once to float32; they equal librosa's
(`librosa.filters.mel(htk=True, norm=None)`) and torchaudio's float32 arithmetic to 5.2e-6 and
1.9e-7 (max abs), which is why `check_buffers` accepts a checkpoint's copies within
`BUFFER_ATOL`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dass_jax.constants import SAMPLE_RATE

N_FFT = 512
WIN_LENGTH = 512
HOP_LENGTH = 160
N_MELS = 64
F_MIN = 0.0
F_MAX = 8000.0
TOP_DB = 120.0
AMIN = 1e-10
BN_EPS = 1e-5
FLOOR_SCOPES = ("clip", "batch")
# Shortest input that gives one 4-frame token: 1 + samples // 160 >= 4 (and > 256 for reflect).
MIN_SAMPLES = 3 * HOP_LENGTH
# A checkpoint's window / filterbank buffers may differ from ours by float32 rounding (see above).
BUFFER_ATOL = 1e-5


def num_frames(samples: int) -> int:
  """Frames of a waveform of `samples` samples: 1 + samples // 160 (centred frames)."""
  return 1 + samples // HOP_LENGTH


def hz_to_mel(freq_hz):
  """HTK mel scale: 2595 log10(1 + f / 700)."""
  return 2595.0 * np.log10(1.0 + np.asarray(freq_hz, np.float64) / 700.0)


def mel_to_hz(mels):
  """Inverse of `hz_to_mel`."""
  return 700.0 * (10.0 ** (np.asarray(mels, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=4)
def mel_filterbank(
  n_freqs: int = N_FFT // 2 + 1,
  n_mels: int = N_MELS,
  f_min: float = F_MIN,
  f_max: float = F_MAX,
  sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
  """HTK-mel triangular filters over the rfft bins, no normalisation (torchaudio's `fb`).

  Returns:
    (n_freqs, n_mels) float32, read-only: column m rises from filter edge m to its centre m + 1
    and falls to edge m + 2 of n_mels + 2 points equally spaced in mel from f_min to f_max.
  """
  freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
  edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
  widths = np.diff(edges)
  slopes = edges[None, :] - freqs[:, None]
  rising = -slopes[:, :-2] / widths[:-1]
  falling = slopes[:, 2:] / widths[1:]
  fb = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
  fb.setflags(write=False)
  return fb


@functools.lru_cache(maxsize=4)
def hann_window(length: int = WIN_LENGTH) -> np.ndarray:
  """Periodic Hann window 0.5 - 0.5 cos(2 pi n / length) (torch.hann_window), float32."""
  window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)
  window.setflags(write=False)
  return window


def check_buffers(window: np.ndarray | None, fb: np.ndarray | None) -> list[str]:
  """Compares a checkpoint's front-end buffers with ours; returns the problems (empty: they fit).

  Args:
    window: `front_end.0.spectrogram.window` (512,), or None when absent.
    fb: `front_end.0.mel_scale.fb` (257, 64), or None when absent.
  """
  problems = []
  for name, got, want in (
    ("front_end.0.spectrogram.window", window, hann_window()),
    ("front_end.0.mel_scale.fb", fb, mel_filterbank()),
  ):
    if got is None:
      continue
    got = np.asarray(got)
    if got.shape != want.shape:
      problems.append(f"{name}: shape {tuple(got.shape)}, the Dasheng front end has {want.shape}")
      continue
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    if not err <= BUFFER_ATOL:
      problems.append(
        f"{name}: differs from the Dasheng front end by {err:.3g} (max abs > {BUFFER_ATOL:g}); "
        "the checkpoint was trained with another window or mel filterbank"
      )
  return problems


def check_waveforms(shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `shape` is (batch, samples >= MIN_SAMPLES)."""
  if len(shape) != 2 or shape[1] < MIN_SAMPLES:
    raise ValueError(
      f"Dasheng expects (batch, samples) 16 kHz waveforms of at least {MIN_SAMPLES} samples "
      f"(one 40 ms token), got shape {tuple(shape)}"
    )


def power_mel(waveforms: jax.Array) -> jax.Array:
  """(batch, samples) 16 kHz waveforms -> (batch, frames, 64) mel power, float32.

  Centred frames (reflect padding by n_fft // 2), periodic Hann window, |rfft|^2, HTK mel filters.
  """
  check_waveforms(waveforms.shape)
  frames = num_frames(waveforms.shape[1])
  pad = N_FFT // 2
  x = jnp.pad(waveforms.astype(jnp.float32), ((0, 0), (pad, pad)), mode="reflect")
  index = np.arange(frames)[:, None] * HOP_LENGTH + np.arange(WIN_LENGTH)[None, :]
  spectrum = jnp.fft.rfft(x[:, index] * jnp.asarray(hann_window()), n=N_FFT, axis=-1)
  power = spectrum.real**2 + spectrum.imag**2
  fb = jnp.asarray(mel_filterbank())
  return jnp.einsum("bfk,km->bfm", power, fb, precision=jax.lax.Precision.HIGHEST)


def power_to_db(power: jax.Array) -> jax.Array:
  """10 log10(max(power, 1e-10)): dB re 1.0, before the top_db floor."""
  return 10.0 * jnp.log10(jnp.maximum(power, AMIN))


def apply_floor(db: jax.Array, top_db: float = TOP_DB, scope: str = "clip") -> jax.Array:
  """max(db, maximum - top_db) over (batch, frames, mel) dB values.

  Args:
    db: (batch, frames, mel) dB.
    top_db: dynamic range kept below the maximum.
    scope: 'clip' (each clip's own maximum) or 'batch' (one maximum over the whole batch, as
      torchaudio's AmplitudeToDB on a (batch, mel, frames) tensor); see the module docstring.
  """
  if scope not in FLOOR_SCOPES:
    raise ValueError(f"floor scope must be one of {FLOOR_SCOPES}, got {scope!r}")
  axes = (0, 1, 2) if scope == "batch" else (1, 2)
  return jnp.maximum(db, jnp.max(db, axis=axes, keepdims=True) - top_db)


def log_mel_db(waveforms: jax.Array, top_db: float = TOP_DB, scope: str = "clip") -> jax.Array:
  """The whole front end before BatchNorm: (batch, samples) -> (batch, frames, 64) dB."""
  return apply_floor(power_to_db(power_mel(waveforms)), top_db, scope)


def batch_norm(
  db: jax.Array,
  mean: jax.Array,
  var: jax.Array,
  scale: jax.Array,
  bias: jax.Array,
  eps: float = BN_EPS,
) -> jax.Array:
  """Inference BatchNorm over the mel axis: (db - mean) / sqrt(var + eps) * scale + bias.

  `db` is (..., 64); the statistics and affine parameters are (64,) (dasheng's `init_bn.1`).
  """
  return (db - mean) / jnp.sqrt(var + eps) * scale + bias
