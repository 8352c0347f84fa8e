r"""Audio needle-in-a-haystack inputs: one labelled needle clip inside a long haystack.

Every function here returns the exact model input: (frames, 128) float32 *normalised* log-mel
((x - mean) / (2 std), AudioSet statistics), time major, for the models that take fbank (AST,
DASS, AuM), or with input_kind='waveform' a (samples,) float32 16 kHz waveform for the models that
take audio (Dasheng; see "Waveform inputs" below). Write one to disk for inspection:

    python -m experiments.haystack --protocol paper --needle CLIP.wav --total-frames 5000 \
        --position 0.25 --haystack babble --snr-db 10 --babble-wav babble_all.wav --out x.npy
    python -m experiments.haystack --kind waveform ...    # the same needle as a waveform model's

Two protocols build it; they measure different things.

`paper`: the inputs of the DASS authors' length study (`src/run_NIAH.py` with
`src/dataloader_niah.py` in their repository), step by step:
  * needle: the fbank of the whole clip (global mean removed first), zero-padded or cropped to
    `needle_frames` frames (1024, the training length) and then normalised; it is inserted clean.
  * zeros: the haystack is L - needle_frames frames of 0 appended *after* normalisation (0 in
    normalised units, i.e. the dataset mean in raw log-mel).
  * white / babble: a noise waveform of noise_len = int(r * (L - needle_frames)) + 1 samples,
    r = (clip samples) / (clip fbank frames) as floats; white is unit Gaussian noise, babble is a
    recording tiled from its first sample (the paper's is `babble_all.wav`, 16 kHz, 15.06 s, shipped
    in the authors' repository). It is scaled by (needle RMS / 10^(snr_db / 20)) / noise RMS, where
    the needle RMS is that of the raw waveform (DC included) and the noise RMS is measured over the
    noise_len samples, then its mean is removed. Its fbank is computed in independent chunks of
    400 s (6 400 000 samples; each chunk is its own recording, so frames never straddle chunks),
    concatenated, truncated to L - needle_frames frames and normalised. The needle itself carries no
    noise: only the haystack frames are noisy.
  * position t: ind = int(L * t); input = cat(haystack[:ind], needle, haystack[ind:]), exactly L
    frames. The original assigns a float index when ind + needle_frames > L and crashes, so only
    t with ind + needle_frames <= L ever ran; `paper_start_frame` refuses the others.
  Where the original fails on work whose result does not reach the input, the input is built
  without it: at L = needle_frames the haystack is empty and the input is the needle alone for
  every t (the original crashes for t >= 1 / L, and for the noise haystacks on the fbank of its
  1-sample noise waveform, which torchaudio refuses); a final 400 s chunk shorter than one
  400-sample window (which torchaudio refuses) lies past the frames kept. Where its noise
  gives fewer than L - needle_frames frames (short L: r is only slightly above the 160-sample hop),
  its input would be shorter than L and this module refuses. Deliberate differences: the original
  draws `torch.randn` without a seed for every clip and run; here white noise comes from
  `WhiteNoise(seed)` (the study seeds needle i with (seed, i), the same for every duration and
  position); the needle and the babble recording are loaded at 16 kHz (resampled if needed, where
  torchaudio.load would use the file's rate as is); noise arithmetic runs in float64, not float32.

`streamed`: this repository's earlier protocol, kept for comparison. It differs from `paper`
in every step: the needle waveform is cropped to `needle_seconds` (no padding: 998 frames for
10 s) and the haystack is T frames of a waveform of (T - 1) * 160 + 400 samples; zeros are 0 in
*raw* log-mel (normalised afterwards: +0.467); for the noise haystacks the needle is *mixed* into
the noise waveform (noise of unit power scaled so that 10 log10(P_needle / P_noise) = snr_db, with
P_needle the power of the mean-removed needle), so the needle itself is at the SNR; white noise is
one seeded realisation shared by all needles; babble is the sum of `talkers` looped tracks over a
pool of clips (`BabbleNoise`); the fbank of the mixture is streamed over the whole haystack; a
needle of n frames at position t starts at frame round(t * (T - n)) (t = 1: ends at the last frame).

Waveform inputs. The durations and positions are those of the fbank inputs (L frames, t), and
the noise is the very noise waveform the fbank path computes before its fbank (one implementation
of each protocol's gain, mean, tiling and seeding: `paper_noise`, `noise_scale` /
`mixture_segment`); only the step that turns audio into features is left out.
  * `streamed`: the haystack waveform itself, samples_for_frames(L) = 160 (L - 1) + 400 samples.
    white / babble: exactly the mixture `noisy_haystack` computes the fbank of (unit-power noise
    at `noise_scale`, the cropped needle added at sample 160 round(t * (L - n))); zeros: the
    needle at that sample in digital silence.
  * `paper`: 160 L samples (L hops: d seconds for L = 100 d). The needle is the clip minus its
    mean (the waveform the needle fbank is computed from), zero-padded or cropped at the end to
    160 * needle_frames samples, inserted clean at sample 160 int(L t) (the same refusals as the
    fbank input). white / babble: the haystack is the first 160 (L - needle_frames) samples of the
    original's noise waveform (noise_len = int(r (L - needle_frames)) + 1 > 160 (L -
    needle_frames) samples, scaled by the paper's SNR rule with the RMS and mean over all
    noise_len samples; the 400 s fbank chunks have no waveform counterpart, the waveform is
    continuous); zeros: digital silence.
  Zeros have no exact waveform counterpart under either protocol: the paper's zeros are 0 in
  *normalised* fbank units (the AudioSet mean log-mel, a level no waveform maps to in every bin
  and frame) and the streamed zeros are 0 in raw log-mel (energy 1 per filter), while the fbank of
  digital silence is the log floor ln(eps) = -15.9 in every bin. A waveform model's zeros
  haystack is silence, which is what "nothing but the needle" means for audio; its numbers are
  comparable with the fbank models' in spirit, not input for input.

Both build noise block by block from random-access sources (`WhiteNoise`, `TiledRecording`,
`BabbleNoise` give any sample range), so no haystack waveform is held whole: memory is one block
plus the features (under `paper`, the haystack features and the assembled input: the haystack
does not depend on the position, so the study builds it once per needle for all positions).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any

import numpy as np

from dass_jax import files
from dass_jax.audio import load_audio
from dass_jax.constants import NUM_MEL_BINS, SAMPLE_RATE
from dass_jax.frontends import kaldi_fbank
from dass_jax.models import INPUT_KINDS

WINDOW, HOP, _ = kaldi_fbank.frame_geometry(SAMPLE_RATE)
HAYSTACKS = ("zeros", "white", "babble")
PROTOCOLS = ("paper", "streamed")
PAPER_NEEDLE_FRAMES = 1024  # the original's target_length: AudioSet training length
PAPER_CHUNK_SAMPLES = 400 * SAMPLE_RATE  # the original computes noise fbank per 400 s chunk
DEFAULT_BLOCK_SAMPLES = 60 * SAMPLE_RATE  # waveform samples generated and transformed per step


def num_frames(num_samples: int) -> int:
  """Kaldi snip-edges frame count of a waveform of `num_samples` samples (0 if under a window)."""
  return 0 if num_samples < WINDOW else 1 + (num_samples - WINDOW) // HOP


def samples_for_frames(frames: int) -> int:
  """The fewest samples that give `frames` Kaldi frames."""
  return (frames - 1) * HOP + WINDOW


class WhiteNoise:
  """Unit-variance Gaussian white noise with random access.

  Block b (of `block_samples`) is drawn from `np.random.default_rng([*seed, b])`, so any sample
  range is reproducible without generating what precedes it. `seed` is an int or a tuple of ints
  (the study uses (seed, needle index) for the paper protocol).
  """

  def __init__(self, seed: int | tuple[int, ...], block_samples: int = 10 * SAMPLE_RATE):
    self.seed = (seed,) if isinstance(seed, int | np.integer) else tuple(seed)
    self.block_samples = block_samples

  def segment(self, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) as (stop - start,) float64."""
    first, last = start // self.block_samples, (stop - 1) // self.block_samples
    blocks = [
      np.random.default_rng([*self.seed, b]).standard_normal(self.block_samples)
      for b in range(first, last + 1)
    ]
    offset = start - first * self.block_samples
    return np.concatenate(blocks)[offset : offset + stop - start]


class TiledRecording:
  """A recording repeated end to end from its first sample (the paper's babble): sample i is
  recording[i mod len(recording)]."""

  def __init__(self, recording: np.ndarray):
    recording = np.asarray(recording, np.float64)
    if recording.ndim != 1 or recording.size == 0:
      raise ValueError(f"the recording must be 1-D and non-empty, got shape {recording.shape}")
    self.recording = recording

  def segment(self, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) as (stop - start,) float64."""
    return self.recording[np.arange(start, stop) % self.recording.size]


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


# ----------------------------------------------------------------------------------------------
# The `paper` protocol.


@dataclasses.dataclass(frozen=True)
class PaperNeedle:
  """A needle as the original's NIAH dataloader prepares it.

  Attributes:
    features: (needle_frames, 128) float32 normalised fbank of the clip, padded/cropped first.
    samples_per_frame: clip samples / clip fbank frames (before padding), the original's
      `downsampling_ratio`, which sizes the noise waveform.
    rms: RMS of the raw clip waveform, DC included (the original's `clean_rms`).
    waveform: (needle_frames * 160,) float32, the waveform analogue of `features` for models
      that take audio: the clip minus its mean (what the needle fbank is computed from),
      zero-padded or cropped at the end to the frames' span of needle_frames hops.
  """

  features: np.ndarray
  samples_per_frame: float
  rms: float
  waveform: np.ndarray

  @property
  def frames(self) -> int:
    return self.features.shape[0]


def paper_needle(waveform: np.ndarray, needle_frames: int = PAPER_NEEDLE_FRAMES) -> PaperNeedle:
  """`PaperNeedle` of a (samples,) float waveform at 16 kHz."""
  waveform = np.asarray(waveform)
  if waveform.ndim != 1 or waveform.size < WINDOW:
    raise ValueError(
      f"the needle must be a mono waveform of at least one {WINDOW}-sample window (torchaudio's "
      f"fbank refuses shorter ones), got shape {waveform.shape}"
    )
  fbank = kaldi_fbank.fbank(waveform)
  span = np.zeros(needle_frames * HOP, np.float32)
  kept = min(span.size, waveform.size)
  span[:kept] = (waveform - np.mean(waveform, dtype=np.float64))[:kept]
  return PaperNeedle(
    features=kaldi_fbank.normalize(kaldi_fbank.pad_or_crop(fbank, needle_frames)).astype(
      np.float32
    ),
    samples_per_frame=waveform.size / fbank.shape[0],
    rms=float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)))),
    waveform=span,
  )


def paper_start_frame(position: float, total_frames: int, needle_frames: int) -> int:
  """ind = int(total_frames * position), refusing what the original could not run.

  With no haystack (total_frames == needle_frames) every position gives 0.

  Raises:
    ValueError: total_frames < needle_frames, position outside [0, 1], or a needle that would end
      past a longer input (int(total_frames * position) + needle_frames > total_frames), where the
      original's `run_NIAH.py` assigns a float index and crashes.
  """
  _check_paper_length(total_frames, needle_frames)
  if not 0.0 <= position <= 1.0:
    raise ValueError(f"position must be in [0, 1], got {position}")
  if total_frames == needle_frames:  # no haystack: the needle alone, wherever t puts it
    return 0
  start = int(total_frames * position)
  if start + needle_frames > total_frames:
    latest = (total_frames - needle_frames) / total_frames
    raise ValueError(
      f"position {position} puts the {needle_frames}-frame needle at frame {start}, ending past "
      f"the {total_frames}-frame input; the original crashes there (run_NIAH assigns a float "
      f"index), so the paper protocol only runs positions t with int({total_frames} t) + "
      f"{needle_frames} <= {total_frames} (t <= {latest:.6f} here)"
    )
  return start


def _check_paper_length(total_frames: int, needle_frames: int) -> None:
  if total_frames < needle_frames:
    raise ValueError(
      f"total_frames {total_frames} is shorter than the {needle_frames}-frame needle; the paper "
      f"protocol needs total_frames >= needle_frames"
    )


def paper_noise_samples(needle: PaperNeedle, haystack_frames: int) -> int:
  """The original's noise waveform length: int(samples_per_frame * haystack_frames) + 1."""
  return int(needle.samples_per_frame * haystack_frames) + 1


@dataclasses.dataclass(frozen=True)
class PaperNoise:
  """The paper's scaled noise waveform for one needle and haystack length, with random access:
  sample i is gain * source[i] - offset for i < samples (`paper_noise`)."""

  source: Any
  gain: float
  offset: float
  samples: int

  def segment(self, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) as (stop - start,) float64."""
    return self.gain * self.source.segment(start, stop) - self.offset


def paper_noise(
  needle: PaperNeedle,
  noise,
  snr_db: float,
  haystack_frames: int,
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
) -> PaperNoise:
  """The original's noise waveform for a haystack of `haystack_frames` frames (> 0).

  noise_len = `paper_noise_samples` samples of `noise`, scaled by (needle RMS / 10^(snr_db / 20))
  / (noise RMS over those samples), then its mean over them removed. The statistics take one pass
  over the source, `block_samples` at a time (the waveform is never held whole).

  Raises:
    ValueError: the noise is silent (RMS 0).
  """
  total = paper_noise_samples(needle, haystack_frames)
  power, level = 0.0, 0.0
  for start in range(0, total, block_samples):
    block = noise.segment(start, min(start + block_samples, total))
    power += float(np.dot(block, block))
    level += float(block.sum())
  noise_rms = math.sqrt(power / total)
  if noise_rms == 0.0:
    raise ValueError("the noise is silent (RMS 0): it cannot be scaled to an SNR")
  gain = needle.rms / 10.0 ** (snr_db / 20.0) / noise_rms
  return PaperNoise(noise, gain, gain * level / total, total)


def paper_noise_fbank(
  needle: PaperNeedle,
  noise,
  snr_db: float,
  haystack_frames: int,
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
) -> np.ndarray:
  """The paper protocol's noise haystack: (haystack_frames, 128) float32 normalised fbank.

  Args:
    needle: the `PaperNeedle` (its RMS and samples_per_frame set the noise).
    noise: a random-access source (`WhiteNoise`, `TiledRecording`) giving `segment(start, stop)`.
    snr_db: needle RMS over noise RMS, in dB (20 log10).
    haystack_frames: frames to produce (L - needle_frames).
    block_samples: samples generated and transformed per step (the noise waveform is never held
      whole: two passes over it, one for its RMS and mean (`paper_noise`), one for its fbank).

  Raises:
    ValueError: the original's noise would give fewer than `haystack_frames` frames.
  """
  out = np.empty((haystack_frames, NUM_MEL_BINS), np.float32)
  if haystack_frames <= 0:
    return out
  scaled = paper_noise(needle, noise, snr_db, haystack_frames, block_samples)
  total = scaled.samples
  # fbank per independent 400 s chunk, until the haystack is full.
  filled = 0
  for chunk in range(0, total, PAPER_CHUNK_SAMPLES):
    stream = kaldi_fbank.FbankStream()
    chunk_stop = min(chunk + PAPER_CHUNK_SAMPLES, total)
    for start in range(chunk, chunk_stop, block_samples):
      stop = min(start + block_samples, chunk_stop)
      frames = stream.push(scaled.segment(start, stop))[: haystack_frames - filled]
      out[filled : filled + frames.shape[0]] = kaldi_fbank.normalize(frames)
      filled += frames.shape[0]
      if filled == haystack_frames:
        return out
  raise ValueError(
    f"the original's noise for this needle ({total} samples = int({needle.samples_per_frame:.4f}"
    f" x {haystack_frames}) + 1, in 400 s chunks) gives only {filled} frames, fewer than the "
    f"{haystack_frames} haystack frames: its input would be shorter than the requested length; "
    f"choose a longer total_frames"
  )


def paper_noise_waveform(
  needle: PaperNeedle,
  noise,
  snr_db: float,
  haystack_frames: int,
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
) -> np.ndarray:
  """The waveform analogue of `paper_noise_fbank`: (haystack_frames * 160,) float32, the first
  haystack_frames hops of the very noise waveform (`paper_noise`) whose fbank that haystack is.

  noise_len = int(r * haystack_frames) + 1 > 160 * haystack_frames always (r > 160), so the
  span is a prefix of it; the gain and mean are those measured over all noise_len samples.
  """
  out = np.empty(haystack_frames * HOP, np.float32)
  if haystack_frames <= 0:
    return out
  scaled = paper_noise(needle, noise, snr_db, haystack_frames, block_samples)
  for start in range(0, out.size, block_samples):
    stop = min(start + block_samples, out.size)
    out[start:stop] = scaled.segment(start, stop)
  return out


def paper_haystack(
  needle: PaperNeedle,
  haystack: str,
  total_frames: int,
  snr_db: float | None = None,
  noise=None,
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
  input_kind: str = "fbank",
) -> np.ndarray:
  """The haystack of L = total_frames: zeros, or the paper's noise, as the input kind's array.

  fbank: (L - needle.frames, 128) normalised features, zeros = 0 in normalised units
  (`paper_noise_fbank`). waveform: ((L - needle.frames) * 160,) samples, zeros = digital
  silence (`paper_noise_waveform`). It does not depend on the position, so one haystack serves
  every position of a needle.
  """
  _check_haystack(haystack, snr_db, noise)
  _check_input_kind(input_kind)
  _check_paper_length(total_frames, needle.frames)
  frames = total_frames - needle.frames
  build = paper_noise_fbank if input_kind == "fbank" else paper_noise_waveform
  if haystack == "zeros":
    shape = (frames, NUM_MEL_BINS) if input_kind == "fbank" else (frames * HOP,)
    return np.zeros(shape, np.float32)
  return build(needle, noise, snr_db, frames, block_samples)


def paper_assemble(
  needle: PaperNeedle, haystack: np.ndarray, position: float, out: np.ndarray | None = None
) -> np.ndarray:
  """cat(haystack[:ind], needle, haystack[ind:]), ind = int(L * position) (`paper_start_frame`).

  Args:
    needle: from `paper_needle`.
    haystack: from `paper_haystack`: (L - needle.frames, 128) fbank, or ((L - needle.frames) *
      160,) waveform, where the needle's `waveform` goes in at sample 160 ind.
    position: t in [0, 1].
    out: optional float32 array of the input's shape to write into (e.g. a row of a batch).

  Returns:
    (L, 128) float32 normalised features, or (160 L,) float32 samples (`out` when given).
  """
  if haystack.ndim == 1:
    total = haystack.size // HOP + needle.frames
    start = HOP * paper_start_frame(position, total, needle.frames)
    inserted = needle.waveform
  else:
    total = haystack.shape[0] + needle.frames
    start = paper_start_frame(position, total, needle.frames)
    inserted = needle.features
  return np.concatenate([haystack[:start], inserted, haystack[start:]], out=out)


def paper_input(
  needle: PaperNeedle,
  haystack: str,
  total_frames: int,
  position: float,
  snr_db: float | None = None,
  noise=None,
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
  input_kind: str = "fbank",
) -> np.ndarray:
  """The paper protocol's model input: cat(haystack[:ind], needle, haystack[ind:]).

  Args:
    needle: from `paper_needle`.
    haystack: 'zeros', 'white' or 'babble'.
    total_frames: L, the input length in frames (>= needle.frames).
    position: t in [0, 1]; the needle starts at frame int(L * t) (see `paper_start_frame`).
    snr_db: for white/babble, needle RMS over noise RMS in dB.
    noise: for white/babble, the noise source (`WhiteNoise` or `TiledRecording`).
    block_samples: noise samples per streamed step.
    input_kind: 'fbank' or 'waveform' (the module docstring gives the waveform analogue).

  Returns:
    (total_frames, 128) float32 normalised features, or (160 total_frames,) float32 samples.
  """
  paper_start_frame(position, total_frames, needle.frames)  # refuse before building any noise
  hay = paper_haystack(needle, haystack, total_frames, snr_db, noise, block_samples, input_kind)
  return paper_assemble(needle, hay, position)


def _check_haystack(haystack: str, snr_db, noise) -> None:
  if haystack not in HAYSTACKS:
    raise ValueError(f"unknown haystack {haystack!r}; choose from {HAYSTACKS}")
  if haystack != "zeros" and (snr_db is None or noise is None):
    raise ValueError(f"the {haystack} haystack needs snr_db and a noise source")


def _check_input_kind(input_kind: str) -> None:
  if input_kind not in INPUT_KINDS:
    raise ValueError(f"unknown input kind {input_kind!r}; choose from {INPUT_KINDS}")


def input_shape(protocol: str, total_frames: int, input_kind: str) -> tuple[int, ...]:
  """Shape of one model input of L = total_frames frames: (L, 128) fbank, or the waveform's
  (samples,): 160 L under `paper`, `samples_for_frames(L)` = 160 (L - 1) + 400 under `streamed`."""
  _check_input_kind(input_kind)
  if input_kind == "fbank":
    return (total_frames, NUM_MEL_BINS)
  return (total_frames * HOP if protocol == "paper" else samples_for_frames(total_frames),)


# ----------------------------------------------------------------------------------------------
# The `streamed` protocol (this repository's earlier one).


def needle_start_frame(position: float, total_frames: int, needle_frames: int) -> int:
  """First frame of a needle of `needle_frames` frames at relative `position` in [0, 1]
  (streamed protocol: round(position * (total_frames - needle_frames)))."""
  if not 0.0 <= position <= 1.0:
    raise ValueError(f"position must be in [0, 1], got {position}")
  if needle_frames > total_frames:
    raise ValueError(
      f"needle ({needle_frames} frames) is longer than the haystack ({total_frames} frames)"
    )
  return int(round(position * (total_frames - needle_frames)))


def noise_scale(needle: np.ndarray, snr_db: float) -> float:
  """Gain for unit-power noise giving `snr_db` relative to the mean-removed needle's power."""
  needle = np.asarray(needle, np.float64)
  power = np.mean((needle - needle.mean()) ** 2)
  return float(np.sqrt(power / 10.0 ** (snr_db / 10.0)))


def streamed_needle_sample(needle_samples: int, total_frames: int, position: float) -> int:
  """First sample of a needle of `needle_samples` samples in a streamed haystack of
  `total_frames` frames: 160 times its first frame (`needle_start_frame`)."""
  return HOP * needle_start_frame(position, total_frames, num_frames(needle_samples))


def mixture_segment(
  noise, scale: float, needle: np.ndarray, needle_start: int, start: int, stop: int
) -> np.ndarray:
  """Samples [start, stop) of scale * noise + needle (needle placed at sample `needle_start`);
  noise None is digital silence (the needle alone). Needle samples past `stop` are cut."""
  out = np.zeros(stop - start) if noise is None else scale * noise.segment(start, stop)
  lo, hi = max(start, needle_start), min(stop, needle_start + needle.size)
  if lo < hi:
    out[lo - start : hi - start] += needle[lo - needle_start : hi - needle_start]
  return out


def zeros_haystack(needle_features: np.ndarray, total_frames: int, position: float) -> np.ndarray:
  """(total_frames, bins) zeros with the needle's (n, bins) raw frames at `position`."""
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
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
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
  needle_start = streamed_needle_sample(needle.size, total, position)
  scale = noise_scale(needle, snr_db)
  out = np.empty((total, NUM_MEL_BINS), np.float32)
  stream, filled = kaldi_fbank.FbankStream(), 0
  for start in range(0, total_samples, block_samples):
    stop = min(start + block_samples, total_samples)
    frames = stream.push(mixture_segment(noise, scale, needle, needle_start, start, stop))
    out[filled : filled + frames.shape[0]] = frames
    filled += frames.shape[0]
  return out


def streamed_waveform(
  needle: np.ndarray,
  haystack: str,
  total_frames: int,
  position: float,
  snr_db: float | None = None,
  noise=None,
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
) -> np.ndarray:
  """The waveform analogue of `streamed_input`: the haystack waveform itself.

  (samples_for_frames(total_frames),) float32: for white/babble exactly the mixture whose fbank
  `noisy_haystack` streams (noise at `noise_scale`, the needle added at sample
  `streamed_needle_sample`); for zeros the needle in digital silence at that sample. Built
  `block_samples` at a time into the output.
  """
  _check_haystack(haystack, snr_db, noise)
  needle = np.asarray(needle, np.float64)
  total = samples_for_frames(total_frames)
  needle_start = streamed_needle_sample(needle.size, total_frames, position)
  if haystack == "zeros":
    noise, scale = None, 0.0
  else:
    scale = noise_scale(needle, snr_db)
  out = np.empty(total, np.float32)
  for start in range(0, total, block_samples):
    stop = min(start + block_samples, total)
    out[start:stop] = mixture_segment(noise, scale, needle, needle_start, start, stop)
  return out


def streamed_input(
  needle: np.ndarray,
  haystack: str,
  total_frames: int,
  position: float,
  snr_db: float | None = None,
  noise=None,
  block_samples: int = DEFAULT_BLOCK_SAMPLES,
  input_kind: str = "fbank",
) -> np.ndarray:
  """The streamed protocol's model input, `total_frames` frames.

  Args:
    needle: (samples,) float waveform at 16 kHz, already cropped to the needle length.
    haystack: 'zeros', 'white' or 'babble'.
    total_frames: input frames; the haystack waveform has `samples_for_frames(total_frames)`
      samples (any longer waveform with the same frame count gives the same features).
    position: t in [0, 1]; the needle starts at frame round(t * (total_frames - needle frames)).
    snr_db, noise: for white/babble, the SNR and a unit-power `WhiteNoise` / `BabbleNoise`.
    block_samples: waveform samples per streamed step.
    input_kind: 'fbank' or 'waveform' (`streamed_waveform`).

  Returns:
    (total_frames, 128) float32 normalised features, or the (samples_for_frames(total_frames),)
    float32 waveform.
  """
  _check_haystack(haystack, snr_db, noise)
  _check_input_kind(input_kind)
  if input_kind == "waveform":
    return streamed_waveform(needle, haystack, total_frames, position, snr_db, noise, block_samples)
  if haystack == "zeros":
    raw = zeros_haystack(kaldi_fbank.fbank(needle), total_frames, position)
  else:
    raw = noisy_haystack(
      needle, noise, snr_db, samples_for_frames(total_frames), position, block_samples
    )
  return kaldi_fbank.normalize(raw).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Command line: write one model input.


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m experiments.haystack",
    description="Writes the exact model input (normalised fbank, float32 (L, 128), or with "
    "--kind waveform the float32 (samples,) waveform) for one needle in a haystack.",
  )
  p.add_argument("--protocol", choices=PROTOCOLS, default="paper")
  p.add_argument(
    "--kind",
    choices=INPUT_KINDS,
    default="fbank",
    help="the input of an fbank model (AST, DASS, AuM) or of a waveform model (Dasheng): "
    "(160 L,) samples under paper, (160 (L - 1) + 400,) under streamed",
  )
  p.add_argument("--needle", required=True, help="needle audio file (loaded mono at 16 kHz)")
  p.add_argument("--total-frames", type=int, required=True, help="input length L in frames")
  p.add_argument("--position", type=float, required=True, help="relative position t in [0, 1]")
  p.add_argument("--haystack", choices=HAYSTACKS, required=True)
  p.add_argument("--snr-db", type=float, default=10.0, help="white/babble SNR (default 10)")
  p.add_argument("--babble-wav", help="babble recording (paper: the authors' babble_all.wav)")
  p.add_argument("--seed", type=int, default=0, help="white noise seed")
  p.add_argument(
    "--needle-index",
    type=int,
    default=0,
    help="paper white noise is drawn from (seed, needle index), as the study seeds needle i",
  )
  p.add_argument(
    "--needle-frames",
    type=int,
    default=PAPER_NEEDLE_FRAMES,
    help="paper: frames the needle fbank is padded/cropped to (the model's training length)",
  )
  p.add_argument(
    "--needle-seconds", type=float, default=10.0, help="streamed: needle waveform crop"
  )
  p.add_argument(
    "--babble-talkers", type=int, default=4, help="streamed: looped tracks summed into babble"
  )
  p.add_argument("--out", required=True, help="output .npy file (must not exist)")
  return p


def build_from_args(args: argparse.Namespace) -> np.ndarray:
  """The (L, 128) input (or (samples,) with --kind waveform) the command line describes.
  Raises ValueError on bad inputs."""
  if args.total_frames < 1:
    raise ValueError(f"--total-frames must be positive, got {args.total_frames}")
  if args.haystack == "babble" and not args.babble_wav:
    raise ValueError("--haystack babble needs --babble-wav (the recording to tile or loop)")
  waveform = load_audio(args.needle)
  noise = None
  if args.protocol == "paper":
    if args.needle_frames < 1:
      raise ValueError(f"--needle-frames must be positive, got {args.needle_frames}")
    if args.haystack == "white":
      noise = WhiteNoise((args.seed, args.needle_index))
    elif args.haystack == "babble":
      noise = TiledRecording(load_audio(args.babble_wav))
    needle = paper_needle(waveform, args.needle_frames)
    return paper_input(
      needle,
      args.haystack,
      args.total_frames,
      args.position,
      args.snr_db,
      noise,
      input_kind=args.kind,
    )
  if args.haystack == "white":
    noise = WhiteNoise(args.seed)
  elif args.haystack == "babble":
    noise = BabbleNoise([load_audio(args.babble_wav)], args.babble_talkers, args.seed)
  needle = waveform[: int(round(args.needle_seconds * SAMPLE_RATE))]
  return streamed_input(
    needle,
    args.haystack,
    args.total_frames,
    args.position,
    args.snr_db,
    noise,
    input_kind=args.kind,
  )


def main(argv: list[str] | None = None) -> int:
  """Command-line entry point; bad inputs print `error: ...` and return 2."""
  args = _parser().parse_args(argv)
  if os.path.exists(args.out):
    print(f"error: {args.out} exists; choose another --out", file=sys.stderr)
    return 2
  folder = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(folder):
    print(f"error: the folder of --out, {folder}, does not exist", file=sys.stderr)
    return 2
  try:
    x = build_from_args(args)
  except ValueError as e:  # includes dass_jax.audio.AudioLoadError
    print(f"error: {e}", file=sys.stderr)
    return 2
  files.save_npy(args.out, x)  # written whole, then renamed: no half-written --out
  what = "normalised fbank" if args.kind == "fbank" else "16 kHz waveform"
  print(f"{args.out}: float32 {x.shape} {what} ({args.protocol} protocol)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
