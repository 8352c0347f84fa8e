"""Datafile and label CSV reading/writing."""

import json
import os

import pytest

from dass_jax import labels as labels_lib
from dass_jax.data import datafile as datafile_lib


def _labels():
  return labels_lib.LabelSet(
    mids=("/m/a", "/m/b", "/m/c"), names=("Speech", "Dog, barking", 'Say "hi"')
  )


def test_label_csv_round_trip(tmp_path):
  path = tmp_path / "class_labels_indices.csv"
  labels_lib.write_label_csv(path, _labels())
  assert path.read_text().splitlines()[0] == "index,mid,display_name"
  assert labels_lib.read_label_csv(path) == _labels()
  assert datafile_lib.num_classes_from_csv(path) == 3


def test_label_csv_reads_quoted_names_and_strips_mids(tmp_path):
  path = tmp_path / "labels.csv"
  path.write_text('index,mid,display_name\n0, /m/a ,Speech\n1,/m/b,"Dog, barking"\n')
  labels = labels_lib.read_label_csv(path)
  assert labels.mids == ("/m/a", "/m/b")
  assert labels.names == ("Speech", "Dog, barking")


@pytest.mark.parametrize(
  "text,message",
  [
    ("idx,mid,display_name\n0,/m/a,A\n", "expected header"),
    ("index,mid,display_name\n0,/m/a,A\n2,/m/b,B\n", "out of order"),
    ("index,mid,display_name\nx,/m/a,A\n", "expected 'index,mid,display_name'"),
    ("index,mid,display_name\n0,/m/a,A\n1,/m/a,B\n", "duplicate"),
    ("index,mid,display_name\n", "no label rows"),
  ],
)
def test_label_csv_errors(tmp_path, text, message):
  path = tmp_path / "labels.csv"
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    labels_lib.read_label_csv(path)


def test_datafile_round_trip_and_relative_paths(tmp_path):
  outside = os.path.abspath(os.path.join(tmp_path.parent, "elsewhere", "x.wav"))
  entries = [
    datafile_lib.Entry(wav=str(tmp_path / "clips" / "a.wav"), labels=("/m/a",)),
    datafile_lib.Entry(wav=outside, labels=("/m/b", "/m/c")),
  ]
  path = tmp_path / "train.json"
  datafile_lib.write_datafile(path, entries)
  stored = json.loads(path.read_text())["data"]
  assert stored[0] == {"wav": os.path.join("clips", "a.wav"), "labels": "/m/a"}
  assert stored[1] == {"wav": outside, "labels": "/m/b,/m/c"}
  assert datafile_lib.read_datafile(path) == entries


def test_label_parsing(tmp_path):
  path = tmp_path / "d.json"
  path.write_text(
    json.dumps(
      {
        "data": [
          {"wav": "a.wav", "labels": " /m/c, /m/a "},
          {"wav": "/abs/b.wav", "labels": "/m/b"},
        ]
      }
    )
  )
  entries = datafile_lib.read_datafile(path)
  assert entries[0].wav == str(tmp_path / "a.wav")
  assert entries[1].wav == "/abs/b.wav"
  assert datafile_lib.label_indices(entries, _labels()) == [(2, 0), (1,)]


def test_unknown_label_is_named(tmp_path):
  entries = [datafile_lib.Entry(wav="a.wav", labels=("/m/a", "/m/zzz"))]
  with pytest.raises(ValueError, match=r"row 0 .*'/m/zzz' is not in the label CSV"):
    datafile_lib.label_indices(entries, _labels())


@pytest.mark.parametrize(
  "content,message",
  [
    ("{not json", "not valid JSON"),
    ('{"rows": []}', "'data' list"),
    ('{"data": [{"labels": "/m/a"}]}', "row 0: needs a 'wav'"),
    ('{"data": [{"wav": "a.wav", "labels": ["/m/a"]}]}', "comma-separated"),
  ],
)
def test_datafile_errors(tmp_path, content, message):
  path = tmp_path / "d.json"
  path.write_text(content)
  with pytest.raises(ValueError, match=message):
    datafile_lib.read_datafile(path)


def test_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="datafile not found"):
    datafile_lib.read_datafile(tmp_path / "nope.json")
  with pytest.raises(FileNotFoundError, match="label CSV not found"):
    labels_lib.read_label_csv(tmp_path / "nope.csv")
