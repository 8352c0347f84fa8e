"""TFDS for real: a dataset built locally from a folder of audio (`dass_jax.data.tfds_folder`, no
TensorFlow), read by the grain pipeline through `dass_jax.data.tfds_source`, and imported by
`python -m dass_jax.prepare --tfds`. Plus the errors without tensorflow-datasets (simulated)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dass_jax import data, prepare
from dass_jax import labels as labels_lib
from dass_jax.data import datafile as datafile_lib
from dass_jax.data import tfds_source
from tests import audio_folders

NAME = "tiny_sounds"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """A TFDS dataset with train and test splits, built from DIR/<split>/<class>/ (one bad file)."""
  pytest.importorskip("tensorflow_datasets", reason="the [tfds] extra is not installed")
  from dass_jax.data import tfds_folder

  root = tmp_path_factory.mktemp("tfds")
  audio_folders.class_folder(root / "sounds" / "train", per_class=6)
  audio_folders.class_folder(root / "sounds" / "test", per_class=2)
  (root / "sounds" / "train" / "mid" / "broken.wav").write_bytes(b"RIFF not really")
  path = tfds_folder.build(root / "sounds", NAME, root / "tfds")
  return {"root": root, "data_dir": str(root / "tfds"), "path": path}


def test_the_build_needs_no_tensorflow(built):
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here: this test shows the build without it (as in CI)")
  assert (built["path"] / "dataset_info.json").is_file()
  assert list(built["path"].glob(f"{NAME}-train.array_record-*"))
  assert "tensorflow" not in sys.modules


def test_the_dataset_describes_its_splits_rate_and_classes(built):
  ds = tfds_source.TfdsDataset(NAME, data_dir=built["data_dir"])
  assert sorted(ds.splits) == ["test", "train"]
  assert ds.sample_rate == 8000 and ds.label_key == "label"
  assert ds.class_names == ["high", "low", "mid"]
  source = ds.source("train")
  assert len(source) == 18  # the broken file is left out
  samples, rate = ds.audio(source, 0)
  assert samples.dtype == np.int16 and samples.ndim == 1 and rate == 8000
  assert ds.label_names(source, 0)[0] in ds.class_names


def test_the_pipeline_reads_it_with_grain(built, tmp_path):
  label_csv = tmp_path / "labels.csv"
  labels_lib.write_label_csv(
    label_csv,
    labels_lib.LabelSet(mids=("/own/high", "/own/low", "/own/mid"), names=("high", "low", "mid")),
  )
  cfg = data.default_config(
    source="tfds",
    tfds_name=NAME,
    tfds_split="train",
    tfds_data_dir=built["data_dir"],
    label_csv=str(label_csv),
    target_frames=32,
    batch_size=6,
    num_epochs=1,
    freqm=0,
    timem=0,
    mixup=0.0,
  )
  it = data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)
  batches = list(it)
  assert len(batches) == 3 == it.steps_per_epoch
  assert batches[0]["fbank"].shape == (6, 32, 128)
  labels = np.concatenate([b["labels"] for b in batches])
  assert np.all(labels.sum(axis=1) == 1) and np.all(labels.sum(axis=0) == 6)
  evals = list(
    data.make_eval_iterator(data.default_config(**{**cfg.to_dict(), "tfds_split": "test"}))
  )
  assert sum(int(b["mask"].sum()) for b in evals) == 6


def test_prepare_imports_the_tfds_dataset(built, tmp_path):
  out = tmp_path / "imported"
  argv = ["--tfds", NAME, "--tfds-data-dir", built["data_dir"], "--out", str(out)]
  assert prepare.main(argv + ["--valid-fraction", "0.34"]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["source"]["kind"] == "tfds"
  assert summary["splits"]["test"]["clips"] == 6 and summary["splits"]["valid"]["clips"] == 6
  assert summary["sample_rates"] == {"8000": 24}
  names = labels_lib.read_label_csv(out / "labels.csv").names
  assert names == ("high", "low", "mid")
  train = datafile_lib.read_datafile(out / "train.json")
  assert len(train) == 12
  raw = json.loads((out / "train.json").read_text())["data"][0]["wav"]
  assert raw.startswith("audio/train/")  # inside OUT, so OUT can move
  assert all(Path(e.wav).is_file() for e in train)


def test_a_missing_dataset_is_named(tmp_path):
  pytest.importorskip("tensorflow_datasets", reason="the [tfds] extra is not installed")
  with pytest.raises(ValueError, match="TFDS dataset no_such_set not found"):
    tfds_source.TfdsDataset("no_such_set", data_dir=str(tmp_path))


@pytest.fixture
def without_tfds(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import raises ImportError


@pytest.fixture
def label_csv(tmp_path):
  path = tmp_path / "labels.csv"
  labels_lib.write_label_csv(path, labels_lib.LabelSet(mids=("/m/a",), names=("A",)))
  return str(path)


def test_without_tfds_the_source_says_how_to_install_it(without_tfds, label_csv):
  with pytest.raises(ImportError, match=r"pip install 'dass-jax\[tfds\]'"):
    tfds_source.TfdsSource("my_audio:1.0.0", split="train", label_csv=label_csv)


def test_without_tfds_the_pipeline_raises_the_same_error(without_tfds, label_csv):
  cfg = data.default_config(source="tfds", tfds_name="my_audio", label_csv=label_csv)
  with pytest.raises(ImportError, match="need tensorflow-datasets"):
    data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)


def test_without_tfds_prepare_fails_cleanly(without_tfds, tmp_path, capsys):
  assert prepare.main(["--tfds", "my_audio", "--out", str(tmp_path / "o")]) == 2
  assert "need tensorflow-datasets" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_empty_name_is_reported(label_csv):
  with pytest.raises(ValueError, match="tfds_name is empty"):
    tfds_source.TfdsSource("", split="train", label_csv=label_csv)
