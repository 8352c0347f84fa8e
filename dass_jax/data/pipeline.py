"""grain pipeline: datafile rows -> augmented, normalised fbank batches (see `dass_jax.data`).

Structure (all of it deterministic in the seed, so every batch is a pure function of its
position):

  MapDataset.range(steps_per_epoch).repeat(num_epochs)      # global batch number k
    .map_with_index(_TrainBatches)                          # k -> (epoch, step) -> rows -> batch
  -> DataIterator: [next_batch:]                             # resume point (the whole state)
    .to_iter_dataset(ReadOptions(read_threads))
    .mp_prefetch(num_workers)                               # optional worker processes

Epoch e visits a global order of all rows (a permutation seeded by (seed, e), or with a weights
file, len(rows) weighted draws with replacement); host h of H takes every H-th entry of it, so
hosts partition each epoch, and keeps floor(rows / H) of them, cut to whole batches. Example j of
the epoch's global order draws its augmentation from Generator(seed, e, j), so neither the
number of workers nor a resume changes a batch. Batching happens before the worker split, so
workers produce whole batches and grain interleaves them back in order.

An unreadable training clip is skipped: it is replaced by a random row (drawn from the same
per-example generator) and named in the batch's "skipped" tuple, which `DataIterator` removes,
logs and adds to `num_skipped`. In evaluation it becomes a masked-out row instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import flags

from dass_jax.constants import NUM_MEL_BINS, SAMPLE_RATE
from dass_jax.data import augment, balanced, tfds_source
from dass_jax.data import source as source_lib
from dass_jax.frontends import kaldi_fbank

# Consecutive unreadable files tolerated while filling one training example.
_MAX_TRIES = 10


def default_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The data config section with every field (documented in `dass_jax.data`)."""
  cfg = ml_collections.ConfigDict(
    {
      "datafile": "",
      "label_csv": "",
      "target_frames": 1024,
      "batch_size": 12,
      "num_workers": 0,
      "read_threads": 4,
      "num_epochs": None,
      "freqm": 48,
      "timem": 192,
      "mixup": 0.5,
      "noise": False,
      "waveform": False,
      "cache_fbank": False,
      "weights_file": "",
      "sample_rate": SAMPLE_RATE,
      "source": "datafile",
      "tfds_name": "",
      "tfds_split": "train",
      "tfds_data_dir": "",
    }
  )
  cfg.update(overrides)
  return cfg


def request_inputs(cfg: ml_collections.ConfigDict, kinds) -> None:
  """Makes a data config yield what models of the given input kinds read, in place.

  Batches always hold "fbank"; "waveform" is turned on exactly when one of `kinds` (e.g. the
  student's and an online teacher's, `dass_jax.models.INPUT_KINDS`) is "waveform", and off
  otherwise, so the audio is neither kept nor shipped when no model reads it.

  Raises:
    ValueError: a waveform model with audio at another rate than 16 kHz (the models that take
      waveforms are trained at 16 kHz; nothing resamples the batch entry).
  """
  wants = "waveform" in set(kinds)
  rate = int(cfg.get("sample_rate", SAMPLE_RATE))
  if wants and rate != SAMPLE_RATE:
    raise ValueError(
      f"a model that takes waveforms reads {SAMPLE_RATE} Hz audio, but the data config's "
      f"sample_rate is {rate}"
    )
  cfg.waveform = wants


def _resolve(cfg: ml_collections.ConfigDict | dict[str, Any]) -> ml_collections.ConfigDict:
  """Defaults overridden by `cfg`; unknown fields and bad values raise ValueError."""
  given = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
  merged = default_config()
  unknown = sorted(set(given) - set(merged))
  if unknown:
    raise ValueError(f"unknown data config fields {unknown}; known: {sorted(merged)}")
  merged.update(given)
  for name in ("target_frames", "batch_size"):
    if int(merged[name]) < 1:
      raise ValueError(f"data config {name} must be >= 1, got {merged[name]}")
  for name in ("num_workers", "read_threads", "freqm", "timem"):
    if int(merged[name]) < 0:
      raise ValueError(f"data config {name} must be >= 0, got {merged[name]}")
  for name, cap, unit in (
    ("freqm", augment.MAX_FREQM, f"half of the {NUM_MEL_BINS} mel bins"),
    (
      "timem",
      augment.MAX_TIMEM,
      f"half of the clip: timem is given at {augment.REFERENCE_FRAMES} "
      "frames and scaled to target_frames",
    ),
  ):
    if int(merged[name]) > cap:
      raise ValueError(
        f"data config {name}={merged[name]} masks more than {unit}; the largest allowed is {cap}"
      )
  if not 0.0 <= float(merged.mixup) <= 1.0:
    raise ValueError(f"data config mixup is a probability, got {merged.mixup}")
  if merged.num_epochs is not None and int(merged.num_epochs) < 1:
    raise ValueError(f"data config num_epochs must be >= 1 or None, got {merged.num_epochs}")
  return merged


def _make_source(c: ml_collections.ConfigDict):
  if c.source == "datafile":
    if not c.datafile or not c.label_csv:
      raise ValueError("data config needs datafile and label_csv")
    return source_lib.DatafileSource(c.datafile, c.label_csv, sample_rate=c.sample_rate)
  if c.source == "tfds":
    return tfds_source.TfdsSource(
      c.tfds_name,
      split=c.tfds_split,
      label_csv=c.label_csv,
      data_dir=c.tfds_data_dir or None,
      sample_rate=c.sample_rate,
    )
  raise ValueError(f"data config source must be 'datafile' or 'tfds', got {c.source!r}")


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, shard_count={shard_count})")
  return shard_index, shard_count


@dataclasses.dataclass(frozen=True)
class _Features:
  """Waveform -> (target_frames, 128) un-normalised fbank, and AST's normalisation; the waveform
  span those frames cover, for a teacher that takes audio."""

  sample_rate: int
  target_frames: int

  def __call__(self, waveform: np.ndarray) -> np.ndarray:
    fbank = kaldi_fbank.fbank(waveform, sample_rate=self.sample_rate, num_mel_bins=NUM_MEL_BINS)
    return np.asarray(kaldi_fbank.pad_or_crop(fbank, self.target_frames), np.float32)

  def normalize(self, fbank: np.ndarray) -> np.ndarray:
    return np.asarray(kaldi_fbank.normalize(fbank), np.float32)

  @property
  def target_samples(self) -> int:
    """Samples spanned by target_frames Kaldi frames: (target_frames - 1) * shift + window."""
    window, shift, _ = kaldi_fbank.frame_geometry(self.sample_rate)
    return (self.target_frames - 1) * shift + window

  def span(self, waveform: np.ndarray) -> np.ndarray:
    """The waveform cropped, or zero-padded at the end, to `target_samples`, float32."""
    out = np.zeros(self.target_samples, np.float32)
    n = min(out.size, waveform.shape[0])
    out[:n] = waveform[:n]
    return out


class _EpochOrder:
  """This host's rows for each epoch (see the module docstring); caches the latest epoch."""

  def __init__(
    self,
    num_rows: int,
    per_host: int,
    seed: int,
    shard_index: int,
    shard_count: int,
    weights: np.ndarray | None,
  ):
    self.num_rows, self.per_host, self.seed = num_rows, per_host, seed
    self.shard_index, self.shard_count, self.weights = shard_index, shard_count, weights
    self._cache: tuple[int, np.ndarray] | None = None

  def rows(self, epoch: int) -> np.ndarray:
    cache = self._cache
    if cache is not None and cache[0] == epoch:
      return cache[1]
    if self.weights is None:
      order = np.random.default_rng([self.seed, epoch, 0]).permutation(self.num_rows)
    else:
      order = balanced.draw(self.weights, self.num_rows, self.seed, epoch)
    rows = order[self.shard_index :: self.shard_count][: self.per_host]
    self._cache = (epoch, rows)
    return rows


@dataclasses.dataclass(frozen=True)
class _TrainBatches:
  """Global batch number -> training batch dict (with the 'skipped' tuple)."""

  source: Any
  order: _EpochOrder
  features: _Features
  batch_size: int
  steps_per_epoch: int
  seed: int
  freqm: int
  timem: int
  mixup: float
  noise: bool
  waveform: bool
  # row -> un-normalised fbank of the unmixed clip, filled on first use (cfg.cache_fbank).
  fbank_cache: dict[int, np.ndarray] | None = None

  def __call__(self, index: int, _: Any) -> dict[str, Any]:
    epoch, step = divmod(int(index), self.steps_per_epoch)
    start = step * self.batch_size
    rows = self.order.rows(epoch)[start : start + self.batch_size]
    fbanks, labels, used, waveforms, skipped = [], [], [], [], []
    for offset, row in enumerate(rows):
      position = (start + offset) * self.order.shard_count + self.order.shard_index
      rng = np.random.default_rng([self.seed, epoch, position])
      fbank, label, row, waveform = self._example(int(row), rng, skipped)
      fbanks.append(fbank)
      labels.append(label)
      used.append(row)
      waveforms.append(waveform)
    batch = {
      "fbank": np.stack(fbanks),
      "labels": np.stack(labels),
      "index": np.asarray(used, np.int32),
      "skipped": tuple(skipped),
    }
    if self.waveform:
      batch["waveform"] = np.stack([self.features.span(w) for w in waveforms])
    return batch

  def _load(self, row: int, skipped: list[str]) -> np.ndarray | None:
    try:
      return self.source.waveform(row)
    except ValueError as e:  # AudioLoadError is a ValueError.
      skipped.append(f"{self.source.describe(row)}: {e}")
      return None

  def _example(
    self, row: int, rng: np.random.Generator, skipped: list[str]
  ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """(normalised augmented fbank, label, row used, the (mixed) waveform it was made from)."""
    num_rows = len(self.source)
    waveform = self._load(row, skipped)
    for _ in range(_MAX_TRIES - 1):
      if waveform is not None:
        break
      row = int(rng.integers(num_rows))
      waveform = self._load(row, skipped)
    if waveform is None:
      raise RuntimeError(
        f"{_MAX_TRIES} unreadable audio files in a row, the last {skipped[-1]}; check the datafile"
      )
    label = self.source.labels(row)
    mixed = False
    if self.mixup > 0 and rng.random() < self.mixup:
      partner = int(rng.integers(num_rows))
      other = self._load(partner, skipped)
      if other is not None:
        lam = augment.sample_mixup_lambda(rng)
        waveform = augment.mix_waveforms(waveform, other, lam)
        label = augment.mix_labels(label, self.source.labels(partner), lam)
        mixed = True
    if self.fbank_cache is None or mixed:
      fbank = self.features(waveform)
    else:
      fbank = self.fbank_cache.get(row)
      if fbank is None:
        fbank = self.fbank_cache[row] = self.features(waveform)
    # Nothing below works in place, so a cached fbank is never modified.
    fbank = augment.spec_augment(fbank, self.freqm, self.timem, rng)
    fbank = self.features.normalize(fbank)
    if self.noise:
      fbank = augment.add_noise(fbank, rng)
    return fbank.astype(np.float32), label, row, waveform


@dataclasses.dataclass(frozen=True)
class _EvalBatches:
  """Batch number -> eval batch dict; row -1 is padding."""

  source: Any
  rows: np.ndarray
  features: _Features
  batch_size: int
  waveform: bool

  def __call__(self, step: int) -> dict[str, Any]:
    rows = self.rows[step * self.batch_size : (step + 1) * self.batch_size]
    shape = (self.features.target_frames, NUM_MEL_BINS)
    fbanks, labels, mask, waveforms, skipped = [], [], [], [], []
    for row in rows.tolist():
      waveform = None
      if row >= 0:
        try:
          waveform = self.source.waveform(row)
        except ValueError as e:
          skipped.append(f"{self.source.describe(row)}: {e}")
      if waveform is None:
        fbanks.append(np.zeros(shape, np.float32))
        labels.append(np.zeros(self.source.num_classes, np.float32))
      else:
        fbanks.append(self.features.normalize(self.features(waveform)))
        labels.append(self.source.labels(row))
      mask.append(waveform is not None)
      waveforms.append(np.zeros(0, np.float32) if waveform is None else waveform)
    batch = {
      "fbank": np.stack(fbanks),
      "labels": np.stack(labels),
      "index": rows.astype(np.int32),
      "mask": np.asarray(mask, np.float32),
      "skipped": tuple(skipped),
    }
    if self.waveform:
      batch["waveform"] = np.stack([self.features.span(w) for w in waveforms])
    return batch


class DataIterator(grain.DatasetIterator):
  """The pipeline's iterator: batches without 'skipped', a count of skipped files, and a small
  checkpointable state.

  Each batch is a pure function of its number, so the state is just the number of batches
  read (plus the skip count); restoring re-opens the grain pipeline at that batch. A state can be
  restored with any num_workers / read_threads. Works with `grain.checkpoint.CheckpointSave` /
  `CheckpointRestore` (orbax) like any grain `DatasetIterator`. With num_workers > 0 call
  `close()` when done (the worker processes are also stopped at garbage collection).

  Attributes:
    steps_per_epoch: batches per epoch on this host (eval: batches in the pass).
    num_classes: label width.
    num_skipped: unreadable audio files met so far (restored with the state).
  """

  def __init__(
    self,
    batches: grain.MapDataset,
    *,
    read_threads: int,
    num_workers: int,
    steps_per_epoch: int,
    num_classes: int,
  ):
    super().__init__()
    self._batches = batches
    self._read_threads = read_threads
    self._num_workers = num_workers
    self._iterator: grain.DatasetIterator | None = None
    self._next_batch = 0
    self.steps_per_epoch = steps_per_epoch
    self.num_classes = num_classes
    self.num_skipped = 0

  def _open(self) -> grain.DatasetIterator:
    if self._iterator is None:
      threads = self._read_threads
      ds = self._batches[self._next_batch :].to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2 * threads, 1))
      )
      if self._num_workers > 0:
        # grain's workers read absl flags, which are unparsed outside absl.app.run.
        if not flags.FLAGS.is_parsed():
          flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._num_workers))
      self._iterator = iter(ds)
    return self._iterator

  def _drop(self) -> None:
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None

  def __next__(self) -> dict[str, np.ndarray]:
    self._assert_not_closed()
    batch = dict(next(self._open()))
    self._next_batch += 1
    skipped = batch.pop("skipped")
    # Worker batches arrive as views of shared memory; plain copies let grain free it now.
    batch = {k: v if type(v) is np.ndarray else np.array(v) for k, v in batch.items()}
    for message in skipped:
      logging.warning("skipped unreadable audio %s", message)
    self.num_skipped += len(skipped)
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"next_batch": self._next_batch, "num_skipped": self.num_skipped}

  def set_state(self, state: dict[str, Any]) -> None:
    self._drop()
    self._next_batch = int(state["next_batch"])
    self.num_skipped = int(state["num_skipped"])

  def start_prefetch(self) -> None:
    self._open().start_prefetch()

  def close(self) -> None:
    self._drop()
    super().close()


def make_train_iterator(
  cfg: ml_collections.ConfigDict,
  *,
  seed: int,
  shard_index: int | None = None,
  shard_count: int | None = None,
) -> DataIterator:
  """Shuffled (or weight-sampled), augmented training batches for this host.

  Args:
    cfg: data config section (fields in `dass_jax.data`).
    seed: seed of the order and of every augmentation.
    shard_index: this host's shard; defaults to `jax.process_index()`.
    shard_count: number of shards; defaults to `jax.process_count()`.

  Returns:
    A `DataIterator` over {"fbank": (b, t, 128) float32, "labels": (b, c) float32,
    "index": (b,) int32} (plus "waveform" (b, samples) float32 with cfg.waveform); full batches
    only; ends after `num_epochs` (never if None).
  """
  c = _resolve(cfg)
  shard_index, shard_count = _shard(shard_index, shard_count)
  src = _make_source(c)
  num_rows = len(src)
  per_host = num_rows // shard_count
  steps = per_host // c.batch_size
  if steps < 1:
    raise ValueError(
      f"{num_rows} examples over {shard_count} shard(s) do not fill one batch of {c.batch_size}"
    )
  weights = balanced.read_weights(c.weights_file, num_rows) if c.weights_file else None
  batches = _TrainBatches(
    source=src,
    order=_EpochOrder(num_rows, steps * c.batch_size, int(seed), shard_index, shard_count, weights),
    features=_Features(int(c.sample_rate), int(c.target_frames)),
    batch_size=int(c.batch_size),
    steps_per_epoch=steps,
    seed=int(seed),
    freqm=int(c.freqm),
    timem=augment.scaled_time_mask(int(c.timem), int(c.target_frames)),
    mixup=float(c.mixup),
    noise=bool(c.noise),
    waveform=bool(c.waveform),
    fbank_cache={} if c.cache_fbank else None,
  )
  ds = grain.MapDataset.range(steps).repeat(c.num_epochs).map_with_index(batches)
  return DataIterator(
    ds,
    read_threads=int(c.read_threads),
    num_workers=int(c.num_workers),
    steps_per_epoch=steps,
    num_classes=src.num_classes,
  )


def label_prior(cfg: ml_collections.ConfigDict) -> np.ndarray:
  """Fraction of the training draws that carry each class, (num_classes,) float64.

  Every row of the source counts (all hosts get the same answer), weighted by the weights file
  when one is set, as the sampler draws. Mixup leaves this expectation unchanged.
  """
  c = _resolve(cfg)
  src = _make_source(c)
  num_rows = len(src)
  weights = balanced.read_weights(c.weights_file, num_rows) if c.weights_file else None
  counts = np.zeros(src.num_classes)
  for row in range(num_rows):
    counts[list(src.label_indices(row))] += 1.0 if weights is None else weights[row]
  return counts / (num_rows if weights is None else float(np.sum(weights)))


def num_examples(cfg: ml_collections.ConfigDict) -> int:
  """Examples (rows) of the split a data config names: datafile rows or TFDS examples, unreadable
  ones included (the "index" batch entry counts them)."""
  return len(_make_source(_resolve(cfg)))


def make_eval_iterator(
  cfg: ml_collections.ConfigDict, *, shard_index: int | None = None, shard_count: int | None = None
) -> DataIterator:
  """One pass over this host's rows (every shard_count-th), without augmentation.

  Every host gets the same number of batches; the last ones are padded (index -1, mask 0).
  Unreadable clips also get mask 0. Augmentation, weights and num_epochs fields are ignored.

  Returns:
    A `DataIterator` over {"fbank": (b, t, 128) float32, "labels": (b, c) float32,
    "index": (b,) int32, "mask": (b,) float32} (plus "waveform" (b, samples) float32 with
    cfg.waveform; zeros for padding and unreadable rows).
  """
  c = _resolve(cfg)
  shard_index, shard_count = _shard(shard_index, shard_count)
  src = _make_source(c)
  rows = np.arange(len(src))[shard_index::shard_count]
  steps = math.ceil(math.ceil(len(src) / shard_count) / c.batch_size)
  padded = np.full(steps * c.batch_size, -1, np.int64)
  padded[: rows.size] = rows
  features = _Features(int(c.sample_rate), int(c.target_frames))
  batches = _EvalBatches(src, padded, features, int(c.batch_size), bool(c.waveform))
  ds = grain.MapDataset.range(steps).map(batches)
  return DataIterator(
    ds,
    read_threads=int(c.read_threads),
    num_workers=int(c.num_workers),
    steps_per_epoch=steps,
    num_classes=src.num_classes,
  )
