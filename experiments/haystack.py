"""Audio needle-in-a-haystack inputs: a labelled needle clip inside a long haystack, as fbank.

Three haystacks (features are (frames, 128) unnormalised log-mel, time major, float32):

  zeros   every haystack frame is 0, the value the AST/DASS dataloader pads short clips with (before
          normalisation); the needle's own fbank frames are copied in unchanged. A needle at
          position 0 in a zeros haystack of the training length is exactly the standard evaluation
          input.
  white   Gaussian white noise waveform.
  babble  the sum of `talkers` tracks, each a loop over a pool of clips (every clip mean-removed
          and scaled to unit RMS, concatenated) started at its own random offset.

For the noise haystacks the needle is mixed in at the waveform level: noise of unit mean power is
scaled so that 10 log10(needle power / noise power) = snr_db (needle power = mean square of the
mean-removed needle) and the needle waveform is added to it. The fbank of the mixture is computed
block by block (`kaldi_fbank.FbankStream`), generating the noise of each block on demand
(`WhiteNoise`, `BabbleNoise` give any sample range at random access), so the haystack waveform is
never held whole: peak memory is one block plus the output features.

Placement: a needle of n frames at relative position p in a haystack of T frames starts at frame
f0 = round(p * (T - n)) (p = 0: first frame, p = 1: ends at the last frame) and, for the noise
haystacks, at sample f0 * 160, so its samples feed exactly the frames f0 .. f0 + n - 1 (and the
partially overlapping frames around them).
"""

from __future__ import annotations

import numpy as np

from dass_jax.constants import NUM_MEL_BINS, SAMPLE_RATE
from dass_jax.frontends import kaldi_fbank

WINDOW, HOP, _ = kaldi_fbank.frame_geometry(SAMPLE_RATE)
HAYSTACKS = ("zeros", "white", "babble")


def num_frames(num_samples: int) -> int:
  """Kaldi snip-edges frame count of a waveform of `num_samples` samples (0 if under a window)."""
  return 0 if num_samples < WINDOW else 1 + (num_samples - WINDOW) // HOP


def needle_start_frame(position: float, total_frames: int, needle_frames: int) -> int:
  """First frame of a needle of `needle_frames` frames at relative `position` in [0, 1]."""
  if not 0.0 <= position <= 1.0:
    raise ValueError(f"position must be in [0, 1], got {position}")
  if needle_frames > total_frames:
    raise ValueError(
      f"needle ({needle_frames} frames) is longer than the haystack ({total_frames} frames)"
    )
  return int(round(position * (total_frames - needle_frames)))


class WhiteNoise:
  """Unit-variance Gaussian white noise with random access: block b is drawn from seed (seed, b)."""

  def __init__(self, seed: int, block_samples: int = 10 * SAMPLE_RATE):
    self.seed, self.block_samples = seed, block_samples

  def segment(self, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) as (stop - start,) float64."""
    first, last = start // self.block_samples, (stop - 1) // self.block_samples
    blocks = [
      np.random.default_rng([self.seed, b]).standard_normal(self.block_samples)
      for b in range(first, last + 1)
    ]
    offset = start - first * self.block_samples
    return np.concatenate(blocks)[offset : offset + stop - start]


class BabbleNoise:
  """Sum of `talkers` looped tracks over a clip pool, scaled to unit mean power over its period.

  The signal is periodic with period P = total pool samples, so its power over one period (computed
  exactly at construction) is its power over any whole number of periods.
  """

  def __init__(self, clips: list[np.ndarray], talkers: int, seed: int):
    if not clips or talkers < 1:
      raise ValueError(f"babble needs clips and talkers >= 1, got {len(clips)} clips, {talkers}")
    pool = []
    for clip in clips:
      clip = np.asarray(clip, np.float64) - np.mean(clip)
      pool.append(clip / max(np.sqrt(np.mean(clip**2)), 1e-12))
    self._pool = np.concatenate(pool)
    self._offsets = np.random.default_rng(seed).integers(0, self._pool.size, talkers)
    self._gain = 1.0
    period = self.segment(0, self._pool.size)
    self._gain = 1.0 / np.sqrt(np.mean(period**2))

  def segment(self, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) as (stop - start,) float64."""
    index = np.arange(start, stop)
    out = np.zeros(stop - start)
    for offset in self._offsets:
      out += self._pool[(index + offset) % self._pool.size]
    return out * self._gain


def noise_scale(needle: np.ndarray, snr_db: float) -> float:
  """Gain for unit-power noise giving `snr_db` relative to the mean-removed needle's power."""
  needle = np.asarray(needle, np.float64)
  power = np.mean((needle - needle.mean()) ** 2)
  return float(np.sqrt(power / 10.0 ** (snr_db / 10.0)))


def mixture_segment(
  noise, scale: float, needle: np.ndarray, needle_start: int, start: int, stop: int
) -> np.ndarray:
  """Samples [start, stop) of scale * noise + needle (needle placed at sample `needle_start`)."""
  out = scale * noise.segment(start, stop)
  lo, hi = max(start, needle_start), min(stop, needle_start + needle.size)
  if lo < hi:
    out[lo - start : hi - start] += needle[lo - needle_start : hi - needle_start]
  return out


def zeros_haystack(needle_features: np.ndarray, total_frames: int, position: float) -> np.ndarray:
  """(total_frames, bins) zeros with the needle's (n, bins) frames at `position`."""
  start = needle_start_frame(position, total_frames, needle_features.shape[0])
  out = np.zeros((total_frames, needle_features.shape[1]), np.float32)
  out[start : start + needle_features.shape[0]] = needle_features
  return out


def noisy_haystack(
  needle: np.ndarray,
  noise,
  snr_db: float,
  total_samples: int,
  position: float,
  block_samples: int = 60 * SAMPLE_RATE,
) -> np.ndarray:
  """Fbank of a needle waveform mixed into `total_samples` of noise at `snr_db`, streamed.

  Args:
    needle: (samples,) float waveform at 16 kHz.
    noise: a `WhiteNoise` or `BabbleNoise` (unit power).
    snr_db: needle-to-noise power ratio in dB.
    total_samples: haystack length in samples.
    position: relative needle position in [0, 1].
    block_samples: waveform samples generated and transformed per step.

  Returns:
    (num_frames(total_samples), 128) float32 unnormalised log-mel.
  """
  needle = np.asarray(needle, np.float64)
  total = num_frames(total_samples)
  needle_start = HOP * needle_start_frame(position, total, num_frames(needle.size))
  scale = noise_scale(needle, snr_db)
  out = np.empty((total, NUM_MEL_BINS), np.float32)
  stream, filled = kaldi_fbank.FbankStream(), 0
  for start in range(0, total_samples, block_samples):
    stop = min(start + block_samples, total_samples)
    frames = stream.push(mixture_segment(noise, scale, needle, needle_start, start, stop))
    out[filled : filled + frames.shape[0]] = frames
    filled += frames.shape[0]
  return out
