"""experiments.metrics against hand-computed cases (and scikit-learn when it is installed)."""

import math

import numpy as np
import pytest

from experiments import metrics as M


def test_average_precision_hand_computed():
  # Ranking by score: 1(pos) 2(neg) 3(pos) 4(neg): precisions at the positives 1/1 and 2/3.
  scores = np.array([0.9, 0.8, 0.7, 0.1])
  targets = np.array([1, 0, 1, 0])
  assert M.average_precision(scores, targets) == pytest.approx((1.0 + 2.0 / 3.0) / 2.0)


def test_average_precision_ties_form_one_threshold():
  # Scores tie between a positive and a negative at the top: one step with precision 1/2, then the
  # second positive at rank 3 with precision 2/3. sklearn gives 0.5 * 0.5 + 0.5 * 2/3.
  scores = np.array([0.9, 0.9, 0.5, 0.1])
  targets = np.array([1, 0, 1, 0])
  assert M.average_precision(scores, targets) == pytest.approx(0.5 * 0.5 + 0.5 * 2.0 / 3.0)


def test_average_precision_perfect_and_no_positive():
  assert M.average_precision(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
  assert math.isnan(M.average_precision(np.array([0.1, 0.9]), np.array([0, 0])))


def test_roc_auc_hand_computed():
  # Pairs (pos, neg): (0.9, 0.8) right, (0.9, 0.1) right, (0.7, 0.8) wrong, (0.7, 0.1) right: 3/4.
  scores = np.array([0.9, 0.8, 0.7, 0.1])
  targets = np.array([1, 0, 1, 0])
  assert M.roc_auc(scores, targets) == pytest.approx(0.75)
  # Positives {0.9, 0.5}, negatives {0.9, 0.1}: tie 0.5, 0.9 > 0.1, 0.5 < 0.9, 0.5 > 0.1: 2.5 / 4.
  assert M.roc_auc(np.array([0.9, 0.9, 0.5, 0.1]), targets) == pytest.approx(2.5 / 4)
  assert math.isnan(M.roc_auc(scores, np.ones(4)))


def test_d_prime_values():
  assert M.d_prime(0.5) == 0.0
  # Phi^-1(0.975) = 1.959963984540054 (standard table value).
  assert M.d_prime(0.975) == pytest.approx(math.sqrt(2) * 1.959963984540054, rel=1e-12)
  assert M.d_prime(0.025) == pytest.approx(-math.sqrt(2) * 1.959963984540054, rel=1e-12)
  # Phi^-1(1 - 1e-10) = 6.361340902404056.
  assert M.d_prime(1 - 1e-10) == pytest.approx(math.sqrt(2) * 6.361340902404056, rel=1e-6)
  assert M.d_prime(1.0) == math.inf
  with pytest.raises(ValueError):
    M.d_prime(1.5)


def test_d_prime_inverts_the_normal_cdf():
  for p in np.linspace(0.001, 0.999, 37):
    x = M.d_prime(p) / math.sqrt(2)
    assert 0.5 * math.erfc(-x / math.sqrt(2)) == pytest.approx(p, abs=1e-13)


def test_compute_metrics_small_case():
  scores = np.array([[0.9, 0.2, 0.3], [0.8, 0.7, 0.1], [0.7, 0.6, 0.2], [0.1, 0.4, 0.9]])
  targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
  out = M.compute_metrics(scores, targets)
  ap0 = (1.0 + 2.0 / 3.0) / 2.0  # class 0: ranks 1 (pos), 2 (neg), 3 (pos)
  ap1 = 1.0  # class 1: the positive scores highest
  assert out["per_class_ap"][:2] == pytest.approx([ap0, ap1])
  assert math.isnan(out["per_class_ap"][2])
  assert out["mAP"] == pytest.approx((ap0 + ap1) / 2)
  assert out["per_class_auc"][:2] == pytest.approx([0.75, 1.0])
  assert out["mAUC"] == pytest.approx(0.875)
  assert out["d_prime"] == pytest.approx(M.d_prime(0.875))
  # argmax rows: scores [0, 0, 0, 2], targets [0, 1, 0, 0]: 2 of 4.
  assert out["accuracy"] == pytest.approx(0.5)


def test_metrics_are_rank_based():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((50, 4))
  targets = (rng.random((50, 4)) < 0.3).astype(int)
  a = M.compute_metrics(logits, targets)
  b = M.compute_metrics(1 / (1 + np.exp(-logits)), targets)
  assert a["mAP"] == pytest.approx(b["mAP"]) and a["mAUC"] == pytest.approx(b["mAUC"])


def test_compute_metrics_rejects_bad_input():
  with pytest.raises(ValueError, match="examples, classes"):
    M.compute_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="0/1"):
    M.compute_metrics(np.zeros((2, 2)), np.full((2, 2), 0.5))
  with pytest.raises(ValueError, match="NaN"):
    M.compute_metrics(np.full((2, 2), np.nan), np.eye(2))
  with pytest.raises(ValueError, match="no class has a positive"):
    M.compute_metrics(np.zeros((2, 2)), np.zeros((2, 2)))


def test_against_sklearn_if_available():
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(1)
  scores = np.round(rng.random((200, 6)), 2)  # rounding makes ties.
  targets = (rng.random((200, 6)) < 0.2).astype(int)
  out = M.compute_metrics(scores, targets)
  for c in range(6):
    assert out["per_class_ap"][c] == pytest.approx(
      sklearn_metrics.average_precision_score(targets[:, c], scores[:, c])
    )
    assert out["per_class_auc"][c] == pytest.approx(
      sklearn_metrics.roc_auc_score(targets[:, c], scores[:, c])
    )
