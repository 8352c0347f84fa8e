"""Random-access example sources for the pipeline: rows of (waveform, multi-hot labels).

A source is picklable (worker processes get a copy) and has:
  `len(source)`, `source.num_classes`,
  `source.labels(row) -> (num_classes,) float32` multi-hot,
  `source.label_indices(row) -> tuple[int, ...]`,
  `source.waveform(row) -> (samples,) float32` at the pipeline's sample rate, raising
  ValueError (`dass_jax.audio.AudioLoadError`) when the audio cannot be read,
  `source.describe(row) -> str` naming the row in messages.
"""

from __future__ import annotations

import os

import numpy as np

from dass_jax import audio
from dass_jax import labels as labels_lib
from dass_jax.constants import SAMPLE_RATE
from dass_jax.data import datafile as datafile_lib


class DatafileSource:
  """The clips of a JSON datafile, decoded with `dass_jax.audio.load_audio`."""

  def __init__(
    self, datafile: str | os.PathLike, label_csv: str | os.PathLike, sample_rate: int = SAMPLE_RATE
  ):
    classes = labels_lib.read_label_csv(label_csv)
    entries = datafile_lib.read_datafile(datafile)
    if not entries:
      raise ValueError(f"datafile {os.fspath(datafile)} has no rows")
    indices = datafile_lib.label_indices(entries, classes, source=os.fspath(datafile))
    self.num_classes = len(classes)
    self.sample_rate = sample_rate
    self._wavs = [e.wav for e in entries]
    # Labels as CSR: row i has classes _flat[_offsets[i]:_offsets[i + 1]].
    self._offsets = np.cumsum([0] + [len(r) for r in indices]).astype(np.int64)
    self._flat = np.fromiter((c for r in indices for c in r), np.int32, self._offsets[-1])

  def __len__(self) -> int:
    return len(self._wavs)

  def label_indices(self, row: int) -> tuple[int, ...]:
    return tuple(int(c) for c in self._flat[self._offsets[row] : self._offsets[row + 1]])

  def labels(self, row: int) -> np.ndarray:
    out = np.zeros(self.num_classes, np.float32)
    out[self._flat[self._offsets[row] : self._offsets[row + 1]]] = 1.0
    return out

  def waveform(self, row: int) -> np.ndarray:
    return audio.load_audio(self._wavs[row], sample_rate=self.sample_rate)

  def describe(self, row: int) -> str:
    return f"row {row}"  # load_audio's errors name the file.
