"""The bundled AudioSet label index and the label-CSV reader."""

import pytest

from dass_jax import labels


def test_bundled_audioset_csv_is_complete():
  audioset = labels.read_label_csv()
  assert len(audioset) == 527
  assert (audioset.mids[0], audioset.names[0]) == ("/m/09x0r", "Speech")
  assert (audioset.mids[-1], audioset.names[-1]) == ("/m/07hvw1", "Field recording")
  assert audioset.index_of()["/m/07hvw1"] == 526


def test_class_names():
  names = labels.class_names(527)
  assert names[1] == "Male speech, man speaking"
  assert labels.class_names(3) == ["class_0", "class_1", "class_2"]
  with pytest.raises(ValueError):
    labels.class_names(0)


@pytest.mark.parametrize(
  "text, message",
  [
    ("idx,mid,name\n0,/m/a,A\n", "expected header"),
    ("index,mid,display_name\n1,/m/a,A\n", "out of order"),
    ("index,mid,display_name\n", "no label rows"),
    ("index,mid,display_name\nzero,/m/a,A\n", "expected 'index,mid,display_name'"),
    ("index,mid,display_name\n0,/m/a,A\n1,/m/a,B\n", "duplicate mids"),
  ],
)
def test_malformed_csv_is_refused_with_the_reason(tmp_path, text, message):
  path = tmp_path / "labels.csv"
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    labels.read_label_csv(path)
