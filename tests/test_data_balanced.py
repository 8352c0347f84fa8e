"""Balanced-sampling weights, their CLI and the weighted sampler."""

import json

import numpy as np
import pytest

from dass_jax import labels as labels_lib
from dass_jax.data import balanced


def test_weights_match_hand_computation():
  # Counts: class 0 three times, class 1 once, class 2 once.
  weights = balanced.sample_weights([(0,), (0, 1), (2,), (0,)], num_classes=3)
  w0, w1 = 1000 / 3.01, 1000 / 1.01
  np.testing.assert_allclose(weights, [w0, w0 + w1, w1, w0], rtol=1e-12)


def test_cli_writes_ast_weight_file(tmp_path):
  labels_lib.write_label_csv(
    tmp_path / "labels.csv", labels_lib.LabelSet(mids=("/m/a", "/m/b"), names=("A", "B"))
  )
  (tmp_path / "train.json").write_text(
    json.dumps(
      {"data": [{"wav": "1.wav", "labels": "/m/a"}, {"wav": "2.wav", "labels": "/m/a,/m/b"}]}
    )
  )
  out = tmp_path / "weights.csv"
  assert balanced.main([str(tmp_path / "train.json"), str(tmp_path / "labels.csv"), str(out)]) == 0
  weights = balanced.read_weights(out, 2)
  np.testing.assert_allclose(weights, [1000 / 2.01, 1000 / 2.01 + 1000 / 1.01], rtol=1e-12)
  with pytest.raises(ValueError, match="has 2 values, the datafile 3 rows"):
    balanced.read_weights(out, 3)


def test_cli_reports_unknown_label(tmp_path, capsys):
  labels_lib.write_label_csv(
    tmp_path / "labels.csv", labels_lib.LabelSet(mids=("/m/a",), names=("A",))
  )
  (tmp_path / "train.json").write_text(json.dumps({"data": [{"wav": "1.wav", "labels": "/m/x"}]}))
  code = balanced.main(
    [str(tmp_path / "train.json"), str(tmp_path / "labels.csv"), str(tmp_path / "w.csv")]
  )
  assert code == 1
  assert "'/m/x' is not in the label CSV" in capsys.readouterr().err


def test_bad_weights_rejected(tmp_path):
  path = tmp_path / "w.csv"
  path.write_text("1.0\n-2.0\n")
  with pytest.raises(ValueError, match="non-negative"):
    balanced.read_weights(path, 2)


def test_draw_is_seeded_and_proportional():
  weights = np.array([1.0, 3.0, 0.0])
  a = balanced.draw(weights, 20000, seed=5, epoch=0)
  np.testing.assert_array_equal(a, balanced.draw(weights, 20000, seed=5, epoch=0))
  assert not np.array_equal(a, balanced.draw(weights, 20000, seed=5, epoch=1))
  assert not np.array_equal(a, balanced.draw(weights, 20000, seed=6, epoch=0))
  assert np.count_nonzero(a == 2) == 0
  assert abs(np.mean(a == 1) - 0.75) < 0.015
