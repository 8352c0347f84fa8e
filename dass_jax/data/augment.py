"""AST/DASS training augmentation in numpy: SpecAugment masks, waveform mixup, fbank noise.

Order used by the pipeline (as AST's dataloader): mix waveforms -> fbank -> pad/crop ->
frequency mask -> time mask (both on the un-normalised fbank, masked cells set to 0) ->
normalise -> noise. Every function takes a `numpy.random.Generator`, so the pipeline can seed
each example from (seed, epoch, position) and reproduce it on resume.

Fbank layout: (frames, mel_bins); waveforms: (samples,) float32.

Mask widths, relative to the clip: `freqm` is in mel bins; `timem` is given at AST's 1024-frame
reference and scaled to the clip (`scaled_time_mask`), so a value masks the same share of a 1 s
clip as of a 10 s one (AST's AudioSet recipe, freqm 48 / timem 192, hides at most 37.5 % of the
bins and 18.75 % of the frames). Either mask may hide at most half of its axis: the pipeline
refuses freqm > MAX_FREQM and timem > MAX_TIMEM (a config error, not a silent clip).
"""

from __future__ import annotations

import numpy as np

from dass_jax.constants import NUM_MEL_BINS

# AST's mask widths are for 1024-frame (10 s) inputs.
REFERENCE_FRAMES = 1024
# The widest masks the pipeline accepts: half the mel bins, half the clip (timem at 1024 frames).
MAX_FREQM = NUM_MEL_BINS // 2
MAX_TIMEM = REFERENCE_FRAMES // 2
MIXUP_BETA = 10.0
NOISE_MAX_SHIFT = 10


def scaled_time_mask(timem: int, target_frames: int) -> int:
  """Time-mask width for `target_frames`, given the width `timem` at 1024 frames."""
  return int(round(timem * target_frames / REFERENCE_FRAMES))


def mask_along_axis(
  x: np.ndarray, max_width: int, axis: int, rng: np.random.Generator
) -> np.ndarray:
  """Zeroes one random band along `axis`, as torchaudio's masking with iid_masks=False.

  The width is floor(u * max_width) and the start floor(v * (size - u * max_width)) with u, v
  uniform in [0, 1), so the band never leaves the array and can be empty.

  Args:
    x: array to mask (not modified).
    max_width: largest band (exclusive upper bound of the width); < 1 returns `x` unchanged.
    axis: axis along which the band runs.
    rng: random generator.

  Returns:
    A masked copy of `x`.
  """
  if max_width < 1:
    return x
  width = rng.random() * max_width
  start = int(rng.random() * (x.shape[axis] - width))
  stop = start + int(width)
  out = x.copy()
  index = [slice(None)] * x.ndim
  index[axis] = slice(start, stop)
  out[tuple(index)] = 0.0
  return out


def spec_augment(fbank: np.ndarray, freqm: int, timem: int, rng: np.random.Generator) -> np.ndarray:
  """One frequency mask (up to `freqm` bins) then one time mask (up to `timem` frames).

  Args:
    fbank: (frames, mel_bins) un-normalised log-mel features.
    freqm: frequency-mask parameter (0 disables).
    timem: time-mask parameter in frames of this fbank (0 disables).
    rng: random generator.

  Returns:
    The masked (frames, mel_bins) fbank.
  """
  fbank = mask_along_axis(fbank, freqm, axis=1, rng=rng)
  return mask_along_axis(fbank, timem, axis=0, rng=rng)


def sample_mixup_lambda(rng: np.random.Generator) -> float:
  """Mixing weight of the first example, lambda ~ Beta(10, 10)."""
  return float(rng.beta(MIXUP_BETA, MIXUP_BETA))


def mix_waveforms(first: np.ndarray, second: np.ndarray, lam: float) -> np.ndarray:
  """lam * first + (1 - lam) * second after removing each mean; `second` is zero-padded or cropped
  to the length of `first`, and the mix is made zero-mean again (AST's `_wav2fbank`)."""
  first = first - first.mean()
  second = second - second.mean()
  fitted = np.zeros_like(first)
  n = min(first.shape[0], second.shape[0])
  fitted[:n] = second[:n]
  mixed = lam * first + (1.0 - lam) * fitted
  return (mixed - mixed.mean()).astype(np.float32)


def mix_labels(first: np.ndarray, second: np.ndarray, lam: float) -> np.ndarray:
  """lam * first + (1 - lam) * second for (num_classes,) multi-hot labels."""
  return (lam * first + (1.0 - lam) * second).astype(np.float32)


def add_noise(fbank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """AST's noise augmentation on a normalised (frames, mel_bins) fbank.

  Adds U(0, 1) * r / 10 per cell with one r ~ U(0, 1) per example, then rolls along time by an
  integer shift in [-10, 10) (AST draws np.random.randint(-10, 10)).
  """
  noisy = fbank + rng.random(fbank.shape, dtype=np.float32) * np.float32(rng.random() / 10)
  shift = int(rng.integers(-NOISE_MAX_SHIFT, NOISE_MAX_SHIFT))
  return np.roll(noisy, shift, axis=0)
