"""Optional pipeline source: an ArrayRecord-backed TFDS dataset read with `tfds.data_source`.

Needs `tensorflow-datasets` and `array-record` (`pip install 'dass-jax[tfds]'`), not TensorFlow:
`tfds.data_source` gives random access to datasets prepared in the ArrayRecord file format.

What a dataset must hold (`TfdsDataset` finds the features):
  audio   the feature 'audio': a `tfds.features.Tensor` of samples, (samples,) or (samples,
          channels), int or float (what `dass_jax.data.tfds_folder` writes; it needs no
          TensorFlow), or a `tfds.features.Audio` (whose feature class itself imports TensorFlow,
          so reading such a dataset does too). Its sample rate is the Audio feature's, else the
          dataset metadata's 'sample_rate', else the pipeline's rate (16 kHz).
  labels  the feature 'labels' (a sequence of `ClassLabel`s or of strings) or 'label' (one
          `ClassLabel` or string): class names, or for the pipeline source mids or display
          names of the label CSV.

Two users:
  * `TfdsSource` (the pipeline: `cfg.source = "tfds"`, `cfg.tfds_name`, `cfg.tfds_split`,
    `cfg.tfds_data_dir`, `cfg.label_csv`; see `dass_jax.data`): the label CSV fixes the class
    order, so the model's outputs line up with the datafile pipeline;
  * `python -m dass_jax.prepare --tfds NAME` (through `TfdsDataset`): imports the dataset's splits
    as datafiles with its own class names.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dass_jax import labels as labels_lib
from dass_jax.audio import AudioLoadError, resample
from dass_jax.constants import SAMPLE_RATE

AUDIO_KEY = "audio"
LABEL_KEYS = ("labels", "label")


def import_tfds():
  """Imports tensorflow_datasets or raises ImportError saying how to install it."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
      "TFDS datasets need tensorflow-datasets and array-record (no TensorFlow needed): "
      "pip install 'dass-jax[tfds]'; or use cfg.source='datafile' with a JSON datafile"
    ) from e
  return tfds


class TfdsDataset:
  """A prepared TFDS dataset: its splits, features, sample rate and class names.

  Args:
    name: the dataset name, optionally with its version ('my_sounds:1.0.0').
    data_dir: the TFDS data_dir holding it (None: TFDS's default).
    default_rate: the sample rate assumed when neither the audio feature nor the metadata has one.
  """

  def __init__(self, name: str, data_dir: str | None = None, default_rate: int = SAMPLE_RATE):
    if not name:
      raise ValueError("cfg.tfds_name is empty: name the TFDS dataset (e.g. 'my_audioset:1.0.0')")
    tfds = import_tfds()
    self.name, self.data_dir = name, data_dir
    try:
      info = tfds.builder(name, data_dir=data_dir).info
    except Exception as e:  # TFDS raises several types for a dataset it cannot find
      raise ValueError(
        f"TFDS dataset {name} not found in {data_dir or 'the default data_dir'}: {e}"
      ) from e
    self.splits = list(info.splits)
    features = info.features
    if AUDIO_KEY not in features:
      raise ValueError(f"TFDS dataset {name} has no '{AUDIO_KEY}' feature (has {list(features)})")
    self.label_key = next((k for k in LABEL_KEYS if k in features), None)
    if self.label_key is None:
      raise ValueError(
        f"TFDS dataset {name} has no label feature {' or '.join(LABEL_KEYS)} (has {list(features)})"
      )
    rate = getattr(features[AUDIO_KEY], "sample_rate", None)
    metadata = info.metadata or {}
    self.sample_rate = int(rate or metadata.get("sample_rate") or default_rate)
    label = features[self.label_key]
    label = getattr(label, "feature", label)  # a Sequence's element feature
    names = getattr(label, "names", None)
    self.class_names: list[str] | None = list(names) if names is not None else None

  def source(self, split: str):
    """The random-access data source of one split."""
    return import_tfds().data_source(self.name, split=split, data_dir=self.data_dir)

  def audio(self, source, row: int) -> tuple[np.ndarray, int]:
    """(samples,) or (samples, channels) as stored (int or float), and the sample rate."""
    samples = np.asarray(source[row][AUDIO_KEY])
    if samples.size == 0:
      raise AudioLoadError(f"TFDS {self.name} row {row}: no audio samples")
    if np.issubdtype(samples.dtype, np.floating) and not np.all(np.isfinite(samples)):
      raise AudioLoadError(f"TFDS {self.name} row {row}: audio contains NaN or inf")
    return samples, self.sample_rate

  def label_values(self, source, row: int) -> list:
    """The row's label values: ClassLabel ints or strings (bytes decoded)."""
    values = np.atleast_1d(source[row][self.label_key]).tolist()
    return [v.decode() if isinstance(v, bytes) else v for v in values]

  def label_names(self, source, row: int) -> tuple[str, ...]:
    """The row's class names (ClassLabel names, or the strings themselves)."""
    values = self.label_values(source, row)
    if self.class_names is None:
      return tuple(dict.fromkeys(str(v) for v in values))
    return tuple(dict.fromkeys(self.class_names[int(v)] for v in values))


def to_mono_float(samples: np.ndarray) -> np.ndarray:
  """Stored samples (int or float, (samples,) or (samples, channels)) -> (samples,) float32 mono,
  ints scaled to [-1, 1) as soundfile does."""
  if np.issubdtype(samples.dtype, np.integer):
    samples = samples.astype(np.float32) / np.float32(-np.iinfo(samples.dtype).min)
  return samples.reshape(samples.shape[0], -1).mean(axis=1).astype(np.float32)


class TfdsSource:
  """Rows of a TFDS split as (waveform, labels); picklable (workers reopen the data source)."""

  def __init__(
    self,
    name: str,
    *,
    split: str,
    label_csv: str | os.PathLike,
    data_dir: str | None = None,
    sample_rate: int = SAMPLE_RATE,
  ):
    if not name:
      raise ValueError("cfg.tfds_name is empty: name the TFDS dataset (e.g. 'my_audioset:1.0.0')")
    classes = labels_lib.read_label_csv(label_csv)
    self.num_classes = len(classes)
    self.split, self.sample_rate = split, sample_rate
    self._dataset = TfdsDataset(name, data_dir=data_dir, default_rate=sample_rate)
    if split not in self._dataset.splits:
      raise ValueError(f"TFDS dataset {name} has no split {split!r} (has {self._dataset.splits})")
    self._class_of = _class_mapping(self._dataset.class_names, classes, name)
    self._source = None

  def _open(self):
    if self._source is None:
      self._source = self._dataset.source(self.split)
    return self._source

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_source": None}

  def __len__(self) -> int:
    return len(self._open())

  def label_indices(self, row: int) -> tuple[int, ...]:
    try:
      return tuple(self._class_of[v] for v in self._dataset.label_values(self._open(), row))
    except KeyError as e:
      raise ValueError(
        f"{self.describe(row)}: label {e.args[0]!r} is not in the label CSV"
      ) from None

  def labels(self, row: int) -> np.ndarray:
    out = np.zeros(self.num_classes, np.float32)
    out[list(self.label_indices(row))] = 1.0
    return out

  def waveform(self, row: int) -> np.ndarray:
    try:
      samples, rate = self._dataset.audio(self._open(), row)
    except AudioLoadError as e:
      raise AudioLoadError(f"{self.describe(row)}: {e}") from None
    return resample(to_mono_float(samples), rate, self.sample_rate)

  def describe(self, row: int) -> str:
    return f"TFDS {self._dataset.name} [{self.split}] row {row}"


def _class_mapping(names, classes: labels_lib.LabelSet, dataset: str) -> dict:
  """Label value (ClassLabel int, or a mid / display-name string) -> label CSV index."""
  by_mid = classes.index_of()
  by_name = {n: i for i, n in enumerate(classes.names)}
  if names is None:  # String labels: mids or display names.
    return {**by_name, **by_mid}
  mapping, unknown = {}, []
  for value, label_name in enumerate(names):
    index = by_mid.get(label_name, by_name.get(label_name))
    if index is None:
      unknown.append(label_name)
    mapping[value] = index
  if unknown:
    raise ValueError(
      f"TFDS dataset {dataset}: classes {unknown[:5]} (of {len(unknown)}) are "
      "neither mids nor display names of the label CSV"
    )
  return mapping
