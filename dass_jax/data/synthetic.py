"""A small synthetic multi-label sound-event dataset in the AST/DASS datafile format.

Thirteen event classes, each with its own band and temporal pattern in a log-mel spectrogram
(tones, chirps, noise bursts, click trains, harmonic buzzes, AM/FM tones, band-pass noise, dual-tone
beeps, decaying impacts) and random parameters within the class. A clip holds 1-3 events of
distinct classes at random onsets and levels over quiet pink noise. Output (16 kHz mono 16-bit
wav, identical bytes for the same arguments):

  <cache_dir>/v1-seed<S>-train<N>[-valid<V>]-eval<M>-<T>s/
    class_labels_indices.csv, train.json, [valid.json,] eval.json, train/*.wav, [valid/*.wav,]
    eval/*.wav, COMPLETE

Splits: `train`, the held-out `eval` clips, and with `num_valid` > 0 a `valid` split for the
choices a training run makes (epochs, checkpoint, loss weights), so that `eval` can serve as a test
split evaluated once (the quickstart does this). Every clip is drawn from its own generator seeded
by (seed, split, index), so a split's clips do not depend on the other splits' sizes: the train
and eval clips of a dataset with a valid split are those of the same dataset without one.

Weak training labels (`missing_label_rate` r > 0): AudioSet's labels are known to miss events
that are audible in a clip, and a teacher's soft labels are one way a student recovers them. To
give the quickstart that situation, `train-missing<r>.json` lists the same training clips with each
of a clip's labels left out with probability r (a clip may end up with none), drawn from its own
seeded generator so the audio never changes; the eval labels stay complete.

The folder is built in a temporary sibling and renamed when finished, so an interrupted run
never leaves a partial dataset; a weak-label datafile is written to a temporary name and
renamed. CLI: `python -m dass_jax.data.synthetic OUT_DIR` (OUT_DIR is the
cache dir; the dataset's paths are printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import wave
from collections.abc import Callable, Sequence

import numpy as np

from dass_jax import cache, files
from dass_jax import labels as labels_lib
from dass_jax.constants import SAMPLE_RATE
from dass_jax.data import datafile as datafile_lib

VERSION = "v1"
_SPLIT_CODES = {"train": 0, "eval": 1, "valid": 3}
_MISSING_LABELS_CODE = 2  # generator stream of the weak-label draws
_NUM_EVENTS_P = (0.45, 0.4, 0.15)  # P(1, 2, 3 events in a clip).


def _envelope(n: int, ramp: float = 0.01) -> np.ndarray:
  """Flat envelope with raised-cosine ramps of `ramp` seconds at both ends, (n,)."""
  r = max(1, min(int(ramp * SAMPLE_RATE), n // 2))
  env = np.ones(n)
  fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
  env[:r], env[n - r :] = fade, fade[::-1]
  return env


def _t(seconds: float) -> np.ndarray:
  return np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _band_noise(n: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
  """White noise restricted to [low, high] Hz by zeroing FFT bins, (n,)."""
  spectrum = np.fft.rfft(rng.standard_normal(n))
  freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
  spectrum[(freqs < low) | (freqs > high)] = 0.0
  return np.fft.irfft(spectrum, n)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
  """Pink (1/f power) noise, (n,)."""
  spectrum = np.fft.rfft(rng.standard_normal(n))
  freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
  spectrum[1:] /= np.sqrt(freqs[1:])
  spectrum[0] = 0.0
  return np.fft.irfft(spectrum, n)


def _harmonics(t: np.ndarray, f0: float, odd_only: bool) -> np.ndarray:
  """Band-limited sawtooth (all harmonics, 1/k) or square (odd harmonics) up to 7 kHz."""
  ks = np.arange(1, int(7000 / f0) + 1)
  if odd_only:
    ks = ks[ks % 2 == 1]
  return (np.sin(2 * np.pi * f0 * ks[:, None] * t[None, :]) / ks[:, None]).sum(axis=0)


def _log_chirp(t: np.ndarray, f_start: float, f_end: float) -> np.ndarray:
  duration = t[-1] if t[-1] > 0 else 1.0
  k = np.log(f_end / f_start) / duration
  return np.sin(2 * np.pi * f_start * (np.exp(k * t) - 1.0) / k)


def _tone(rng):
  t = _t(rng.uniform(0.4, 1.2))
  return np.sin(2 * np.pi * rng.uniform(440, 880) * t) * _envelope(t.size)


def _chirp_up(rng):
  t = _t(rng.uniform(0.4, 1.0))
  return _log_chirp(t, rng.uniform(300, 500), rng.uniform(2500, 3500)) * _envelope(t.size)


def _chirp_down(rng):
  t = _t(rng.uniform(0.4, 1.0))
  return _log_chirp(t, rng.uniform(2500, 3500), rng.uniform(300, 500)) * _envelope(t.size)


def _white_burst(rng):
  n = int(rng.uniform(0.05, 0.2) * SAMPLE_RATE)
  return rng.standard_normal(n) * _envelope(n, 0.005)


def _pink_burst(rng):
  n = int(rng.uniform(0.5, 1.2) * SAMPLE_RATE)
  x = _pink(n, rng)
  return x / (np.std(x) + 1e-9) * _envelope(n, 0.05)


def _click_train(rng):
  n = int(rng.uniform(0.5, 1.5) * SAMPLE_RATE)
  period = int(SAMPLE_RATE / rng.uniform(8, 20))
  click = rng.standard_normal(32) * np.exp(-np.arange(32) / 6.0)
  x = np.zeros(n + 32)
  for start in range(0, n, period):
    x[start : start + 32] += click
  return x[:n] * 3.0


def _saw_buzz(rng):
  t = _t(rng.uniform(0.5, 1.5))
  return _harmonics(t, rng.uniform(90, 140), odd_only=False) * _envelope(t.size, 0.02)


def _square_buzz(rng):
  t = _t(rng.uniform(0.5, 1.5))
  return _harmonics(t, rng.uniform(250, 350), odd_only=True) * _envelope(t.size, 0.02)


def _am_tone(rng):
  t = _t(rng.uniform(0.6, 1.5))
  am = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(4, 10) * t)
  return np.sin(2 * np.pi * rng.uniform(1500, 2200) * t) * am * _envelope(t.size)


def _fm_sweep(rng):
  t = _t(rng.uniform(0.6, 1.5))
  fc, dev, rate = rng.uniform(4000, 5000), rng.uniform(250, 500), rng.uniform(3, 6)
  phase = 2 * np.pi * fc * t - dev / rate * np.cos(2 * np.pi * rate * t)
  return np.sin(phase) * _envelope(t.size)


def _bandpass_noise(rng):
  n = int(rng.uniform(0.4, 1.2) * SAMPLE_RATE)
  low = rng.uniform(5500, 6000)
  x = _band_noise(n, low, low + rng.uniform(1200, 1800), rng)
  return x / (np.std(x) + 1e-9) * _envelope(n, 0.02)


def _dual_tone(rng):
  f1, f2 = rng.uniform(700, 950), rng.uniform(1200, 1500)
  beep, gap = rng.uniform(0.08, 0.15), rng.uniform(0.05, 0.1)
  t = _t(beep)
  one = (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) * 0.5 * _envelope(t.size, 0.005)
  silence = np.zeros(int(gap * SAMPLE_RATE))
  return np.concatenate([np.concatenate([one, silence]) for _ in range(rng.integers(2, 5))])


def _impact(rng):
  t = _t(rng.uniform(0.3, 0.6))
  decay = np.exp(-t / rng.uniform(0.04, 0.12))
  body = np.sin(2 * np.pi * rng.uniform(150, 300) * t) + 0.5 * _band_noise(t.size, 200, 3000, rng)
  return body * decay


# (mid suffix, display name, generator); the order fixes the class indices.
CLASSES: tuple[tuple[str, str, Callable[[np.random.Generator], np.ndarray]], ...] = (
  ("tone", "Pure tone", _tone),
  ("chirp_up", "Rising chirp", _chirp_up),
  ("chirp_down", "Falling chirp", _chirp_down),
  ("white_burst", "White noise burst", _white_burst),
  ("pink_burst", "Pink noise burst", _pink_burst),
  ("click_train", "Click train", _click_train),
  ("saw_buzz", "Sawtooth buzz", _saw_buzz),
  ("square_buzz", "Square buzz", _square_buzz),
  ("am_tone", "Amplitude-modulated tone", _am_tone),
  ("fm_sweep", "Frequency-modulated siren", _fm_sweep),
  ("bandpass_noise", "Band-pass noise", _bandpass_noise),
  ("dual_tone", "Dual-tone beeps", _dual_tone),
  ("impact", "Decaying impact", _impact),
)


def label_set() -> labels_lib.LabelSet:
  return labels_lib.LabelSet(
    mids=tuple(f"/m/syn_{c[0]}" for c in CLASSES), names=tuple(c[1] for c in CLASSES)
  )


def make_clip(rng: np.random.Generator, clip_seconds: float) -> tuple[np.ndarray, list[int]]:
  """One clip: (samples,) float in [-1, 1] and the sorted class indices of its events."""
  n = int(clip_seconds * SAMPLE_RATE)
  background = _pink(n, rng)
  clip = background / (np.std(background) + 1e-9) * 10 ** (rng.uniform(-50, -40) / 20)
  num_events = int(rng.choice(len(_NUM_EVENTS_P), p=_NUM_EVENTS_P)) + 1
  classes = sorted(rng.choice(len(CLASSES), size=num_events, replace=False).tolist())
  for c in classes:
    event = CLASSES[c][2](rng)[:n]
    event = event / (np.sqrt(np.mean(event**2)) + 1e-9) * 10 ** (rng.uniform(-26, -12) / 20)
    start = int(rng.integers(0, n - event.size + 1))
    clip[start : start + event.size] += event
  peak = np.max(np.abs(clip))
  if peak > 0.98:
    clip *= 0.98 / peak
  return clip, classes


def write_wav(path: str, samples: np.ndarray) -> None:
  """16-bit PCM mono wav at 16 kHz (stdlib `wave`, byte-identical for identical samples)."""
  pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(SAMPLE_RATE)
    f.writeframes(pcm.tobytes())


@dataclasses.dataclass(frozen=True)
class SyntheticDataset:
  """Paths of a generated dataset (`valid_datafile` is '' for a dataset without a valid split)."""

  root: str
  train_datafile: str
  eval_datafile: str
  label_csv: str
  num_classes: int
  valid_datafile: str = ""


def _paths(root: str, with_valid: bool) -> SyntheticDataset:
  return SyntheticDataset(
    root=root,
    train_datafile=os.path.join(root, "train.json"),
    eval_datafile=os.path.join(root, "eval.json"),
    label_csv=os.path.join(root, "class_labels_indices.csv"),
    num_classes=len(CLASSES),
    valid_datafile=os.path.join(root, "valid.json") if with_valid else "",
  )


def _is_complete(paths: SyntheticDataset) -> bool:
  return all(
    os.path.isfile(p)
    for p in (
      os.path.join(paths.root, "COMPLETE"),
      paths.train_datafile,
      paths.eval_datafile,
      paths.valid_datafile or paths.eval_datafile,
      paths.label_csv,
    )
  )


def _generate(root: str, seed: int, sizes: dict[str, int], clip_seconds: float) -> None:
  labels = label_set()
  labels_lib.write_label_csv(os.path.join(root, "class_labels_indices.csv"), labels)
  for split, count in sizes.items():
    os.makedirs(os.path.join(root, split))
    entries = []
    for i in range(count):
      rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
      clip, classes = make_clip(rng, clip_seconds)
      wav = os.path.join(root, split, f"{split}_{i:05d}.wav")
      write_wav(wav, clip)
      entries.append(datafile_lib.Entry(wav=wav, labels=tuple(labels.mids[c] for c in classes)))
    datafile_lib.write_datafile(os.path.join(root, f"{split}.json"), entries)
  with open(os.path.join(root, "COMPLETE"), "w", encoding="utf-8") as f:
    json.dump({"version": VERSION, "seed": seed, "clip_seconds": clip_seconds, **sizes}, f)


def _weak_label_datafile(root: str, seed: int, rate: float) -> str:
  """Path of the training datafile with each label left out with probability `rate`, written
  on first use (see the module docstring)."""
  path = os.path.join(root, f"train-missing{rate:g}.json")
  if os.path.isfile(path):
    return path
  entries = datafile_lib.read_datafile(os.path.join(root, "train.json"))
  weak = []
  for i, entry in enumerate(entries):
    keep = np.random.default_rng([seed, _MISSING_LABELS_CODE, i]).random(len(entry.labels)) >= rate
    weak.append(dataclasses.replace(entry, labels=tuple(np.asarray(entry.labels)[keep].tolist())))
  datafile_lib.write_datafile(path, weak)
  return path


def ensure_dataset(
  cache_dir: str | os.PathLike | None = None,
  *,
  seed: int = 0,
  num_train: int = 800,
  num_eval: int = 200,
  clip_seconds: float = 3.0,
  missing_label_rate: float = 0.0,
  num_valid: int = 0,
) -> SyntheticDataset:
  """Returns the dataset for these arguments, generating it on first use.

  Args:
    cache_dir: parent folder; defaults to `dass_jax.cache.cache_dir("synthetic")`.
    seed: generator seed (same seed and sizes -> identical files).
    num_train: training clips.
    num_eval: held-out evaluation clips (a test split when there is a valid split).
    clip_seconds: clip length (3 s -> 298 fbank frames).
    missing_label_rate: probability that a training label is left out (weak labels; the
      returned `train_datafile` is then `train-missing<r>.json`); valid and eval labels stay
      complete.
    num_valid: validation clips (0: no valid split, `valid_datafile` is '').

  Returns:
    Paths of the datafiles and label CSV, and the number of classes.
  """
  if not 0.0 <= missing_label_rate < 1.0:
    raise ValueError(f"missing_label_rate must be in [0, 1), got {missing_label_rate}")
  ds = _complete_dataset(cache_dir, seed, num_train, num_eval, num_valid, clip_seconds)
  if missing_label_rate == 0.0:
    return ds
  weak = _weak_label_datafile(ds.root, seed, missing_label_rate)
  return dataclasses.replace(ds, train_datafile=weak)


def _complete_dataset(
  cache_dir: str | os.PathLike | None,
  seed: int,
  num_train: int,
  num_eval: int,
  num_valid: int,
  clip_seconds: float,
) -> SyntheticDataset:
  """The dataset with complete labels, generated on first use."""
  if num_train < 1 or num_eval < 1 or num_valid < 0:
    raise ValueError(
      f"num_train and num_eval must be >= 1 and num_valid >= 0, got {num_train}, {num_eval}, "
      f"{num_valid}"
    )
  if not 0.7 <= clip_seconds <= 60:
    raise ValueError(
      f"clip_seconds must be in [0.7, 60] (longest event 1.5 s is cropped), got {clip_seconds}"
    )
  cache_dir = os.fspath(cache_dir if cache_dir is not None else cache.cache_dir("synthetic"))
  valid = f"-valid{num_valid}" if num_valid else ""
  root = os.path.join(
    cache_dir, f"{VERSION}-seed{seed}-train{num_train}{valid}-eval{num_eval}-{clip_seconds:g}s"
  )
  paths = _paths(root, with_valid=num_valid > 0)
  if _is_complete(paths):
    return paths
  os.makedirs(cache_dir, exist_ok=True)
  if os.path.isdir(root):  # Not made by this module (it renames complete folders only).
    raise RuntimeError(f"{root} exists but is not a complete synthetic dataset; remove it")
  # Built in a temporary sibling, renamed into place whole; the datafiles store wav paths relative
  # to their folder, so the rename keeps them valid. Another process finishing first wins.
  sizes = {"train": num_train, **({"valid": num_valid} if num_valid else {}), "eval": num_eval}
  with files.atomic_folder(root, if_exists="keep") as tmp:
    _generate(str(tmp), seed, sizes, clip_seconds)
  return paths


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m dass_jax.data.synthetic", description=__doc__.split("\n")[0]
  )
  parser.add_argument("out_dir", help="cache folder; the dataset goes into a subfolder")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num-train", type=int, default=800)
  parser.add_argument("--num-eval", type=int, default=200)
  parser.add_argument("--num-valid", type=int, default=0)
  parser.add_argument("--clip-seconds", type=float, default=3.0)
  parser.add_argument("--missing-label-rate", type=float, default=0.0)
  args = parser.parse_args(argv)
  try:
    ds = ensure_dataset(
      args.out_dir,
      seed=args.seed,
      num_train=args.num_train,
      num_eval=args.num_eval,
      clip_seconds=args.clip_seconds,
      missing_label_rate=args.missing_label_rate,
      num_valid=args.num_valid,
    )
  except (OSError, ValueError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for field in dataclasses.fields(ds):
    print(f"{field.name}: {getattr(ds, field.name)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
