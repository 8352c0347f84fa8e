r"""A TFDS dataset built from a folder of labelled audio, without TensorFlow.

    python -m dass_jax.data.tfds_folder DIR --name my_sounds --data-dir ~/tensorflow_datasets
    python -m dass_jax.prepare --tfds my_sounds --tfds-data-dir ~/tensorflow_datasets --out OUT

Layout: `DIR/<split>/<class>/<file>` with splits among train, validation (or valid) and test, or
`DIR/<class>/<file>` for a single 'train' split. The builder (`FolderAudio`, a
`tfds.core.GeneratorBasedBuilder` like any dataset a user registers) writes the ArrayRecord
format with the features

  audio  tfds.features.Tensor((None,), int16): mono samples at the dataset's sample rate
         (`sample_rate`, default the most common rate among the files; other files are resampled),
         stored in the dataset metadata as 'sample_rate'
  label  tfds.features.ClassLabel over the class folder names (natural order)

`tfds.features.Audio` is not used: its feature class imports TensorFlow, while a `Tensor` feature
is built and read (`tfds.data_source`) with tensorflow-datasets and array-record alone. Files that
cannot be decoded are left out with a warning (`dass_jax.prepare` reports such files of a folder
in its summary). The dataset appears under `data_dir/<name>/<version>/` when complete (TFDS
builds into an `incomplete.*` folder and renames it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np

from dass_jax import audio
from dass_jax import labels as labels_lib
from dass_jax.data.tfds_source import import_tfds

SPLIT_FOLDERS = ("train", "validation", "valid", "test")
DATASET_VERSION = "1.0.0"


def scan_folder(folder: str | os.PathLike) -> tuple[dict[str, list[tuple[Path, str]]], list[str]]:
  """({split: [(file, class name)]}, class names in natural order) of a folder layout."""
  root = Path(folder)
  if not root.is_dir():
    raise FileNotFoundError(f"{folder}: no such folder")
  subdirs = [d for d in root.iterdir() if d.is_dir()]
  split_dirs = {d.name: d for d in subdirs if d.name in SPLIT_FOLDERS}
  if split_dirs and len(split_dirs) != len(subdirs):
    raise ValueError(
      f"{folder}: mixes split folders {sorted(split_dirs)} with other folders; use either "
      f"DIR/<split>/<class>/ or DIR/<class>/"
    )
  layout = split_dirs or {"train": root}
  files: dict[str, list[tuple[Path, str]]] = {}
  for split, split_dir in layout.items():
    name = "validation" if split == "valid" else split
    files[name] = [
      (path, class_dir.name)
      for class_dir in sorted(split_dir.iterdir())
      if class_dir.is_dir()
      for path in sorted(class_dir.rglob("*"))
      if path.is_file() and audio.has_audio_extension(path)
    ]
  classes = sorted({c for items in files.values() for _, c in items}, key=labels_lib.natural_key)
  if not classes:
    raise ValueError(f"{folder}: no audio files in class folders")
  return files, classes


def _common_rate(files: dict[str, list[tuple[Path, str]]]) -> int:
  import soundfile as sf

  rates = Counter()
  for items in files.values():
    for path, _ in items:
      try:
        rates[sf.info(str(path)).samplerate] += 1
      except Exception:  # unreadable: left out when the examples are generated
        continue
  if not rates:
    raise ValueError("no readable audio file to take the sample rate from")
  return rates.most_common(1)[0][0]


def make_builder(
  folder: str | os.PathLike,
  name: str,
  data_dir: str | os.PathLike,
  sample_rate: int | None = None,
):
  """A `FolderAudio` builder of `folder` (see the module docstring); call `download_and_prepare()`
  on it (or use `build`)."""
  tfds = import_tfds()
  files, classes = scan_folder(folder)
  rate = int(sample_rate or _common_rate(files))

  class FolderAudio(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Labelled audio files of a folder: int16 mono `audio` and a `label` per example."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
      DATASET_VERSION: "Built by dass_jax.data.tfds_folder."
    }

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        description=f"Labelled audio from the folder {Path(folder).name}.",
        features=tfds.features.FeaturesDict(
          {
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
            "label": tfds.features.ClassLabel(names=classes),
          }
        ),
        metadata=tfds.core.MetadataDict(sample_rate=rate),
        supervised_keys=("audio", "label"),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(items) for split, items in files.items()}

    def _generate_examples(self, items):
      for path, label in items:
        try:
          samples = audio.load_audio(path, sample_rate=rate)
        except audio.AudioLoadError as e:
          logging.warning("left out %s", e)
          continue
        pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
        yield str(path.relative_to(folder)), {"audio": pcm, "label": label}

  FolderAudio.name = name
  return FolderAudio(data_dir=os.fspath(data_dir), file_format="array_record")


def build(
  folder: str | os.PathLike,
  name: str,
  data_dir: str | os.PathLike,
  sample_rate: int | None = None,
) -> Path:
  """Builds the dataset (once; an existing build of the same name and version is kept) and
  returns its folder `data_dir/name/DATASET_VERSION`."""
  builder = make_builder(folder, name, data_dir, sample_rate)
  builder.download_and_prepare()
  return Path(data_dir) / name / DATASET_VERSION


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m dass_jax.data.tfds_folder",
    description="Build a TFDS dataset (ArrayRecord) from DIR/<split>/<class>/ or DIR/<class>/.",
  )
  parser.add_argument("folder")
  parser.add_argument("--name", required=True, help="dataset name (snake_case)")
  parser.add_argument("--data-dir", required=True, help="TFDS data_dir to build into")
  parser.add_argument("--sample-rate", type=int, default=None, help="default: most common rate")
  args = parser.parse_args(argv)
  try:
    path = build(args.folder, args.name, args.data_dir, args.sample_rate)
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
