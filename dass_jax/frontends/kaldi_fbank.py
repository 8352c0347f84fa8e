"""Kaldi-compatible log-mel filterbank features, as the AST/DASS data pipeline computes them.

The reference is the AST/DASS dataloader::

    waveform = waveform - waveform.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        waveform, htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)

i.e. Kaldi's `compute-fbank-feats` with: 25 ms frames every 10 ms, snip_edges=True (only frames that
fit entirely), per-frame DC-offset removal, pre-emphasis 0.97 (the first sample is pre-emphasised
against itself), a symmetric Hann window (0.5 - 0.5 cos(2 pi n / (N - 1))), zero padding to the
next power of two (512 at 16 kHz), power spectrum, triangular filters equally spaced on Kaldi's mel
scale (1127 ln(1 + f / 700)) from 20 Hz to Nyquist (the Nyquist FFT bin gets no weight), and the
natural log of the filter energies floored at float32 epsilon (so silence gives ln(eps) = -15.942,
never -inf). With use_energy=False there is no energy column, so htk_compat has no effect.

Layout: features are (frames, mel_bins), time major, float32, as AST/DASS consume them.

Deliberate difference: torchaudio raises an error for a waveform shorter than one frame (400 samples
at 16 kHz); `fbank` zero-pads such a waveform (after DC removal) to one frame and returns 1 frame.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

import numpy as np

from dass_jax import audio as audio_lib
from dass_jax.constants import AUDIOSET_FBANK_MEAN, AUDIOSET_FBANK_STD, NUM_MEL_BINS, SAMPLE_RATE

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
LOG_FLOOR = float(np.finfo(np.float32).eps)
STREAM_BLOCK_SECONDS = 30.0  # seconds of audio decoded per step by `audio_features`.
_FRAMES_PER_CHUNK = 2048  # bounds fbank's float64 working memory (~20 s of audio per step).


def frame_geometry(sample_rate: int) -> tuple[int, int, int]:
  """Kaldi frame sizes at a sample rate: (window_size, window_shift, fft_size) in samples."""
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate}")
  window_size = int(sample_rate * FRAME_LENGTH_MS * 0.001)
  window_shift = int(sample_rate * FRAME_SHIFT_MS * 0.001)
  if window_size < 2 or window_shift < 1:
    raise ValueError(f"sample_rate {sample_rate} is too low for 25 ms / 10 ms frames")
  fft_size = 1 << (window_size - 1).bit_length()
  return window_size, window_shift, fft_size


def kaldi_mel(freq_hz):
  """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
  return 1127.0 * np.log1p(np.asarray(freq_hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def mel_banks(
  num_mel_bins: int,
  fft_size: int,
  sample_rate: int,
  low_freq: float = LOW_FREQ,
  high_freq: float = 0.0,
) -> np.ndarray:
  """Kaldi triangular mel filters as a matrix over the rfft bins.

  Args:
    num_mel_bins: number of filters (> 3, as Kaldi requires).
    fft_size: padded window length (even).
    sample_rate: Hz.
    low_freq: lowest filter edge in Hz.
    high_freq: highest filter edge in Hz; <= 0 means offset from Nyquist (Kaldi convention).

  Returns:
    (fft_size // 2 + 1, num_mel_bins) float64 weights; the last (Nyquist) row is zero, as in Kaldi.
    The array is cached and read-only.
  """
  if num_mel_bins <= 3:
    raise ValueError(f"num_mel_bins must be > 3, got {num_mel_bins}")
  nyquist = 0.5 * sample_rate
  if high_freq <= 0.0:
    high_freq += nyquist
  if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
    raise ValueError(
      f"bad mel range: low_freq {low_freq}, high_freq {high_freq}, nyquist {nyquist}"
    )
  mel_low, mel_high = kaldi_mel(low_freq), kaldi_mel(high_freq)
  delta = (mel_high - mel_low) / (num_mel_bins + 1)
  left = mel_low + np.arange(num_mel_bins) * delta
  center, right = left + delta, left + 2.0 * delta
  bin_mel = kaldi_mel(np.arange(fft_size // 2) * (sample_rate / fft_size))[:, None]
  up = (bin_mel - left) / (center - left)
  down = (right - bin_mel) / (right - center)
  weights = np.maximum(0.0, np.minimum(up, down))
  weights = np.concatenate([weights, np.zeros((1, num_mel_bins))], axis=0)
  weights.setflags(write=False)
  return weights


@functools.lru_cache(maxsize=16)
def hann_window(window_size: int) -> np.ndarray:
  """Kaldi's 'hanning' window (symmetric): 0.5 - 0.5 cos(2 pi n / (N - 1)), (N,) float64."""
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(window_size) / (window_size - 1))
  window.setflags(write=False)
  return window


def _check_waveform(waveform) -> np.ndarray:
  waveform = np.asarray(waveform)
  if waveform.ndim != 1:
    raise ValueError(f"waveform must be 1-D (mono samples), got shape {waveform.shape}")
  if waveform.size == 0:
    raise ValueError("waveform is empty (0 samples)")
  if np.issubdtype(waveform.dtype, np.integer):
    raise ValueError(
      f"waveform has integer dtype {waveform.dtype}; AST/DASS features expect float "
      "samples in [-1, 1] (divide int16 PCM by 32768)"
    )
  if not np.issubdtype(waveform.dtype, np.floating):
    raise ValueError(f"waveform must be real floating point, got dtype {waveform.dtype}")
  if not np.all(np.isfinite(waveform)):
    raise ValueError("waveform contains NaN or inf")
  return waveform


def fbank(
  waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = NUM_MEL_BINS
) -> np.ndarray:
  """Log-mel filterbank of one mono waveform, matching the AST/DASS torchaudio call.

  Args:
    waveform: (samples,) float in [-1, 1] (as soundfile/torchaudio load it); the global mean is
      removed first, as the AST/DASS dataloader does.
    sample_rate: Hz; frame sizes follow Kaldi (int(sr * 0.025), int(sr * 0.010)). AST/DASS use
      16000; resample first (see `dass_jax.audio.load_audio`).
    num_mel_bins: filters (128 for AST/DASS).

  Returns:
    (frames, num_mel_bins) float32, frames = 1 + (samples - window) // shift; a waveform shorter
    than
    one window is zero-padded to one window (1 frame).

  Raises:
    ValueError: empty, non-1-D, integer or non-finite waveform; bad sample rate or bin count.
  """
  waveform = _check_waveform(waveform).astype(np.float64)
  window_size, window_shift, fft_size = frame_geometry(sample_rate)
  waveform = waveform - waveform.mean()
  if waveform.size < window_size:
    waveform = np.pad(waveform, (0, window_size - waveform.size))
  frames = np.lib.stride_tricks.sliding_window_view(waveform, window_size)[::window_shift]
  banks = mel_banks(num_mel_bins, fft_size, sample_rate)
  out = np.empty((frames.shape[0], num_mel_bins), np.float32)
  for start in range(0, frames.shape[0], _FRAMES_PER_CHUNK):
    out[start : start + _FRAMES_PER_CHUNK] = _log_mel(
      frames[start : start + _FRAMES_PER_CHUNK], fft_size, banks
    )
  return out


def _log_mel(frames: np.ndarray, fft_size: int, banks: np.ndarray) -> np.ndarray:
  """(frames, window) raw samples -> (frames, mel) log energies: the per-frame Kaldi steps."""
  frames = frames - frames.mean(axis=1, keepdims=True)
  previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
  frames = (frames - PREEMPHASIS * previous) * hann_window(frames.shape[1])
  power = np.abs(np.fft.rfft(frames, n=fft_size, axis=1)) ** 2
  return np.log(np.maximum(power @ banks, LOG_FLOOR))


def fbank_batch(waveforms, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = NUM_MEL_BINS):
  """Batched JAX version of `fbank` for equal-length waveforms (float32 throughout).

  JAX is imported on first use, so that the numpy front end above runs where JAX is not installed
  (`python -m dass_jax.predict --onnx`).

  Args:
    waveforms: (batch, samples) float, samples >= one window (400 at 16 kHz).
    sample_rate: Hz.
    num_mel_bins: filters.

  Returns:
    (batch, frames, num_mel_bins) float32 jax.Array, same frame count and layout as `fbank`.
  """
  return _fbank_batch_jit()(waveforms, sample_rate=sample_rate, num_mel_bins=num_mel_bins)


@functools.cache
def _fbank_batch_jit():
  import jax

  return jax.jit(_fbank_batch, static_argnames=("sample_rate", "num_mel_bins"))


def _fbank_batch(waveforms, sample_rate: int, num_mel_bins: int):
  import jax
  import jax.numpy as jnp

  window_size, window_shift, fft_size = frame_geometry(sample_rate)
  if waveforms.ndim != 2 or waveforms.shape[1] < window_size:
    raise ValueError(f"waveforms must be (batch, samples >= {window_size}), got {waveforms.shape}")
  num_frames = 1 + (waveforms.shape[1] - window_size) // window_shift
  x = waveforms.astype(jnp.float32)
  x = x - x.mean(axis=-1, keepdims=True)
  index = np.arange(num_frames)[:, None] * window_shift + np.arange(window_size)[None, :]
  frames = x[:, index]
  frames = frames - frames.mean(axis=-1, keepdims=True)
  previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
  frames = (frames - PREEMPHASIS * previous) * jnp.asarray(hann_window(window_size), jnp.float32)
  spectrum = jnp.fft.rfft(frames, n=fft_size, axis=-1)
  power = spectrum.real**2 + spectrum.imag**2
  banks = jnp.asarray(mel_banks(num_mel_bins, fft_size, sample_rate), jnp.float32)
  energies = jnp.einsum("bfk,km->bfm", power, banks, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(energies, LOG_FLOOR))


class FbankStream:
  """`fbank` of one recording given block by block, with the frame overlap carried exactly.

  `push(block)` returns the frames the new samples complete; the concatenated outputs equal
  `fbank` of the concatenated blocks (its whole-waveform mean removal is a no-op, since every
  frame removes its own mean) up to float64 rounding. Samples after the last whole frame are
  dropped, as Kaldi's snip_edges does; `finish()` returns the single zero-padded frame `fbank`
  gives a recording shorter than one window, and nothing otherwise. Memory: one block plus less
  than one window of carried samples.
  """

  def __init__(self, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = NUM_MEL_BINS):
    self.sample_rate, self.num_mel_bins = sample_rate, num_mel_bins
    self._window, self._shift, _ = frame_geometry(sample_rate)
    self._carry = np.zeros(0, np.float64)
    self._frames_out = 0

  def push(self, block: np.ndarray) -> np.ndarray:
    """(samples,) float block -> (new_frames, num_mel_bins) float32 (new_frames may be 0)."""
    block = np.asarray(block)
    if block.ndim != 1 or not np.issubdtype(block.dtype, np.floating):
      raise ValueError(
        f"audio blocks must be 1-D float samples, got shape {block.shape} dtype {block.dtype}"
      )
    buffer = np.concatenate([self._carry, block.astype(np.float64)])
    if buffer.size < self._window:
      self._carry = buffer
      return np.zeros((0, self.num_mel_bins), np.float32)
    count = 1 + (buffer.size - self._window) // self._shift
    out = fbank(
      buffer[: (count - 1) * self._shift + self._window], self.sample_rate, self.num_mel_bins
    )
    self._carry = buffer[count * self._shift :]
    self._frames_out += count
    return out

  def finish(self) -> np.ndarray:
    """The frames still owed at the end: one padded frame for a recording shorter than a window.

    Raises:
      ValueError: no samples were pushed at all.
    """
    if self._frames_out:
      return np.zeros((0, self.num_mel_bins), np.float32)
    if self._carry.size == 0:
      raise ValueError("no audio samples to compute features from")
    return fbank(self._carry, self.sample_rate, self.num_mel_bins)


def pad_or_crop(features: np.ndarray, target_frames: int) -> np.ndarray:
  """Zero-pads at the end or crops to `target_frames` frames, as the AST/DASS dataloader does.

  Args:
    features: (frames, bins) log-mel (unnormalised: padding happens before normalisation).
    target_frames: wanted frame count (1024 for 10 s AudioSet clips).

  Returns:
    (target_frames, bins), same dtype.
  """
  if target_frames <= 0:
    raise ValueError(f"target_frames must be positive, got {target_frames}")
  features = np.asarray(features)
  missing = target_frames - features.shape[0]
  if missing > 0:
    return np.pad(features, ((0, missing), (0, 0)))
  return features[:target_frames]


def normalize(features, mean: float = AUDIOSET_FBANK_MEAN, std: float = AUDIOSET_FBANK_STD):
  """AST/DASS normalisation: (x - mean) / (2 * std). Works on numpy or JAX arrays of any shape."""
  return (features - mean) / (2.0 * std)


def stream_fbank(
  blocks: Iterable[np.ndarray],
  sample_rate: int = SAMPLE_RATE,
  num_mel_bins: int = NUM_MEL_BINS,
  normalized: bool = False,
) -> np.ndarray:
  """`fbank` of the concatenated blocks, computed one block at a time (`FbankStream`).

  Args:
    blocks: (samples,) float blocks of one mono recording, in order (any sizes, e.g. from
      `dass_jax.audio.iter_audio_blocks`).
    sample_rate: Hz.
    num_mel_bins: filters.
    normalized: apply `normalize` to each block's frames as they are made (the same values as
      normalising the result, without a second full-size array).

  Returns:
    (frames, num_mel_bins) float32: the frames `fbank` gives for the whole recording (equal up to
    float64 rounding, see `FbankStream`), normalised if asked.

  Raises:
    ValueError: no samples at all, or a bad block (non-1-D, integer, NaN / inf).
  """
  stream = FbankStream(sample_rate, num_mel_bins)

  def finish(frames: np.ndarray) -> np.ndarray:
    return normalize(frames).astype(np.float32) if normalized else frames

  pieces = [finish(stream.push(block)) for block in blocks]
  pieces.append(finish(stream.finish()))
  return np.concatenate(pieces, axis=0)


def audio_features(
  path: str | os.PathLike,
  target_frames: int | None = None,
  normalized: bool = True,
  block_seconds: float = STREAM_BLOCK_SECONDS,
) -> np.ndarray:
  """Audio file -> model input: decode, downmix, resample to 16 kHz, fbank, pad/crop, normalise.

  The one audio -> features path of the package. Files soundfile opens are decoded block by block
  (`audio.iter_audio_blocks`: soxr's streaming resampler when the rate is not 16 kHz, equal to
  `audio.load_audio`'s one-shot resampling up to float rounding) and turned into features by
  `stream_fbank`, so peak memory is the features plus one block, whatever the duration (the
  features take 512 bytes per frame, 184 MB per hour); anything else is decoded whole by
  `audio.load_audio` (librosa/audioread).

  Args:
    path: audio file.
    target_frames: pad at the end (with zeros, before normalisation, as the AST/DASS dataloader
      does) or crop to this many frames (1024 for 10 s clips); None keeps every frame.
    normalized: apply the AudioSet (x - mean) / (2 * std) normalisation.
    block_seconds: seconds decoded per step.

  Returns:
    (frames, 128) float32 at 100 frames per second.

  Raises:
    dass_jax.audio.AudioLoadError: unreadable, empty or corrupt file.
  """
  if audio_lib.soundfile_can_read(path):
    try:
      features = stream_fbank(audio_lib.iter_audio_blocks(path, block_seconds))
    except audio_lib.AudioLoadError:
      raise
    except ValueError as e:
      raise audio_lib.AudioLoadError(f"{os.fspath(path)}: {e}") from e
  else:
    features = fbank(audio_lib.load_audio(path, sample_rate=SAMPLE_RATE))
  if target_frames is not None:
    features = pad_or_crop(features, target_frames)
  if normalized:
    features = normalize(features)
  return features.astype(np.float32)
