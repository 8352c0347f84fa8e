"""The bundled AudioSet label index and the label-CSV reader."""

import pytest

from dass_jax import labels


def test_bundled_audioset_csv_is_complete():
  rows = labels.load_label_csv()
  assert len(rows) == 527
  assert [r[0] for r in rows] == list(range(527))
  assert rows[0] == (0, "/m/09x0r", "Speech")
  assert rows[-1] == (526, "/m/07hvw1", "Field recording")
  assert len({mid for _, mid, _ in rows}) == 527


def test_class_names_and_mid_lookup():
  names = labels.class_names(527)
  assert names[1] == "Male speech, man speaking"
  assert labels.class_names(3) == ["class_0", "class_1", "class_2"]
  assert labels.mid_to_index()["/m/07hvw1"] == 526
  with pytest.raises(ValueError):
    labels.class_names(0)


@pytest.mark.parametrize(
  "text, message",
  [
    ("idx,mid,name\n0,/m/a,A\n", "expected header"),
    ("index,mid,display_name\n1,/m/a,A\n", "out of order"),
    ("index,mid,display_name\n", "no label rows"),
    ("index,mid,display_name\nzero,/m/a,A\n", "expected 'index,mid,display_name'"),
  ],
)
def test_malformed_csv_is_refused_with_the_reason(tmp_path, text, message):
  path = tmp_path / "labels.csv"
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    labels.load_label_csv(path)
