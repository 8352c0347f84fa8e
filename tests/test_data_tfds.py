"""The optional TFDS source. tensorflow-datasets is not installed in the test environment (and a
real ArrayRecord TFDS dataset would have to be built with TensorFlow), so only the clear error
for the missing package is tested; the test is skipped where tfds is installed."""

import importlib.util

import pytest

from dass_jax import data
from dass_jax import labels as labels_lib
from dass_jax.data import tfds_source

pytestmark = pytest.mark.skipif(
  importlib.util.find_spec("tensorflow_datasets") is not None,
  reason="tensorflow-datasets is installed",
)


@pytest.fixture
def label_csv(tmp_path):
  path = tmp_path / "labels.csv"
  labels_lib.write_label_csv(path, labels_lib.LabelSet(mids=("/m/a",), names=("A",)))
  return str(path)


def test_source_says_how_to_install_tfds(label_csv):
  with pytest.raises(ImportError, match=r"pip install 'dass-jax\[tfds\]'"):
    tfds_source.TfdsSource("my_audio:1.0.0", split="train", label_csv=label_csv)


def test_pipeline_with_tfds_source_raises_the_same_error(label_csv):
  cfg = data.default_config(source="tfds", tfds_name="my_audio", label_csv=label_csv)
  with pytest.raises(ImportError, match="needs tensorflow-datasets"):
    data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)


def test_empty_name_is_reported(label_csv):
  with pytest.raises(ValueError, match="tfds_name is empty"):
    tfds_source.TfdsSource("", split="train", label_csv=label_csv)
