"""Optional pipeline source: an ArrayRecord-backed TFDS dataset read with `tfds.data_source`.

Needs `tensorflow-datasets` and `array-record` (`pip install 'dass-jax[tfds]'`), not TensorFlow:
`tfds.data_source` gives random access to datasets prepared in the ArrayRecord file format. Each
record must hold an audio feature (`tfds.features.Audio`, (samples,) or (samples, channels), int or
float) and a label feature: a sequence of `ClassLabel`s whose names are mids or display names of
the label CSV, or a sequence of mid strings. The label CSV fixes the class order, so the model's
outputs line up with the datafile pipeline.

Select it with `cfg.source = "tfds"`, `cfg.tfds_name`, `cfg.tfds_split`, `cfg.tfds_data_dir` and
`cfg.label_csv` (see `dass_jax.data`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dass_jax import labels as labels_lib
from dass_jax.audio import AudioLoadError, resample
from dass_jax.constants import SAMPLE_RATE

AUDIO_KEY = "audio"
LABEL_KEY = "labels"


def import_tfds():
  """Imports tensorflow_datasets or raises ImportError saying how to install it."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
      "cfg.source='tfds' needs tensorflow-datasets and array-record (no TensorFlow needed): "
      "pip install 'dass-jax[tfds]'; or use cfg.source='datafile' with a JSON datafile"
    ) from e
  return tfds


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
    self.name, self.split, self.data_dir, self.sample_rate = name, split, data_dir, sample_rate
    classes = labels_lib.read_label_csv(label_csv)
    self.num_classes = len(classes)
    self._source = None
    info = self._open().dataset_info
    features = info.features
    for key in (AUDIO_KEY, LABEL_KEY):
      if key not in features:
        raise ValueError(f"TFDS dataset {name} has no '{key}' feature (has {list(features)})")
    self._file_rate = int(getattr(features[AUDIO_KEY], "sample_rate", None) or sample_rate)
    names = getattr(getattr(features[LABEL_KEY], "feature", None), "names", None)
    self._class_of = _class_mapping(names, classes, name)

  def _open(self):
    if self._source is None:
      tfds = import_tfds()
      self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir)
    return self._source

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_source": None}

  def __len__(self) -> int:
    return len(self._open())

  def label_indices(self, row: int) -> tuple[int, ...]:
    values = np.atleast_1d(self._open()[row][LABEL_KEY]).tolist()
    try:
      return tuple(self._class_of[v.decode() if isinstance(v, bytes) else v] for v in values)
    except KeyError as e:
      raise ValueError(
        f"{self.describe(row)}: label {e.args[0]!r} is not in the label CSV"
      ) from None

  def labels(self, row: int) -> np.ndarray:
    out = np.zeros(self.num_classes, np.float32)
    out[list(self.label_indices(row))] = 1.0
    return out

  def waveform(self, row: int) -> np.ndarray:
    audio = np.asarray(self._open()[row][AUDIO_KEY])
    if audio.size == 0:
      raise AudioLoadError(f"{self.describe(row)}: no audio samples")
    if np.issubdtype(audio.dtype, np.integer):
      audio = audio.astype(np.float32) / np.float32(-np.iinfo(audio.dtype).min)
    audio = audio.reshape(audio.shape[0], -1).mean(axis=1).astype(np.float32)
    if not np.all(np.isfinite(audio)):
      raise AudioLoadError(f"{self.describe(row)}: audio contains NaN or inf")
    return resample(audio, self._file_rate, self.sample_rate)

  def describe(self, row: int) -> str:
    return f"TFDS {self.name} [{self.split}] row {row}"


def _class_mapping(names, classes: labels_lib.LabelSet, dataset: str) -> dict:
  """Label value (ClassLabel int or mid string) -> label CSV index."""
  by_mid = classes.index_of()
  if names is None:  # String labels: mids.
    return by_mid
  by_name = {n: i for i, n in enumerate(classes.names)}
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
