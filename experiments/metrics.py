"""Evaluation metrics of AST/DASS, in numpy: mAP, mean ROC AUC, d-prime, top-1 accuracy.

Definitions follow the AST/DASS `calculate_stats` (which calls scikit-learn per class):
  * AP of a class: scikit-learn's `average_precision_score`, sum_k (R_k - R_{k-1}) P_k over the
    distinct score thresholds, highest first (step-wise, no interpolation; tied scores form one
    threshold).
  * AUC of a class: area under the ROC curve, ties counted one half (Mann-Whitney U / (P N)).
  * mAP / mAUC: mean over classes. Classes with no positive (AP undefined) are left out of mAP;
    classes with no positive or no negative (AUC undefined) are left out of mAUC. On the AudioSet
    eval set every class has both, so this equals the AST/DASS mean over all 527 classes.
  * d-prime: sqrt(2) * Phi^-1(mAUC), computed from the mean AUC as AST/DASS do.
  * accuracy: top-1, argmax of scores == argmax of targets (single-label datasets such as ESC-50).

Layout: scores and targets are (examples, classes); scores are any monotone score (probabilities or
logits give the same AP/AUC), targets are 0/1.
"""

from __future__ import annotations

import math

import numpy as np


def _check(scores, targets) -> tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, dtype=np.float64)
  targets = np.asarray(targets, dtype=np.float64)
  if scores.ndim != 2 or scores.shape != targets.shape:
    raise ValueError(
      f"scores and targets must both be (examples, classes), got {scores.shape} and {targets.shape}"
    )
  if scores.shape[0] == 0:
    raise ValueError("no examples")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores contain NaN or inf")
  if not np.all((targets == 0) | (targets == 1)):
    raise ValueError("targets must be 0/1 (multi-hot)")
  return scores, targets


def _threshold_counts(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Cumulative (true positives, false positives) at each distinct score, highest score first."""
  order = np.argsort(-scores, kind="stable")
  scores, targets = scores[order], targets[order]
  last_of_group = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
  true_pos = np.cumsum(targets)[last_of_group]
  false_pos = (last_of_group + 1) - true_pos
  return true_pos, false_pos


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
  """Average precision of one class, as scikit-learn computes it.

  Args:
    scores: (examples,) scores.
    targets: (examples,) 0/1 labels.

  Returns:
    AP in [0, 1]; NaN when there is no positive.
  """
  num_pos = targets.sum()
  if num_pos == 0:
    return float("nan")
  true_pos, false_pos = _threshold_counts(scores, targets)
  precision = true_pos / (true_pos + false_pos)
  recall_step = np.diff(np.r_[0.0, true_pos]) / num_pos
  return float(np.sum(recall_step * precision))


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
  """Area under the ROC curve of one class (ties count one half); NaN without both label values."""
  num_pos = targets.sum()
  num_neg = targets.size - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  true_pos, false_pos = _threshold_counts(scores, targets)
  tpr = np.r_[0.0, true_pos] / num_pos
  fpr = np.r_[0.0, false_pos] / num_neg
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _norm_ppf(p: float) -> float:
  """Inverse standard normal CDF by Newton's method on erfc (float64 accuracy)."""
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"probability must be in [0, 1], got {p}")
  if p == 0.0 or p == 1.0:
    return math.copysign(math.inf, p - 0.5)
  if p < 0.5:
    return -_norm_ppf(1.0 - p)
  # Phi is concave on x >= 0, so Newton from x = 0 increases monotonically to the root.
  x = 0.0
  for _ in range(200):
    step = (p - 0.5 * math.erfc(-x / math.sqrt(2.0))) / (
      math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    )
    x += step
    if abs(step) <= 1e-15 * max(1.0, abs(x)):
      break
  return x


def d_prime(auc: float) -> float:
  """Sensitivity index from an AUC: sqrt(2) * Phi^-1(auc) (inf for auc = 1)."""
  return math.sqrt(2.0) * _norm_ppf(float(auc))


def top1_accuracy(scores, targets) -> float:
  """Fraction of examples whose highest score is at the target's argmax (single-label)."""
  scores, targets = np.asarray(scores), np.asarray(targets)
  return float(np.mean(np.argmax(scores, axis=1) == np.argmax(targets, axis=1)))


def compute_metrics(scores, targets) -> dict:
  """All evaluation metrics for a multi-label (or one-hot single-label) evaluation set.

  Args:
    scores: (examples, classes) model scores (sigmoid outputs or logits).
    targets: (examples, classes) 0/1 multi-hot labels.

  Returns:
    dict with mAP, mAUC, d_prime (floats), per_class_ap and per_class_auc (lists of length classes,
    NaN where undefined), and accuracy (top-1).

  Raises:
    ValueError: mismatched shapes, non-finite scores, non-binary targets, or no class with a
      positive.
  """
  scores, targets = _check(scores, targets)
  per_class_ap = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
  per_class_auc = [roc_auc(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
  if all(math.isnan(ap) for ap in per_class_ap):
    raise ValueError("no class has a positive example; mAP is undefined")
  mean_auc = (
    float(np.nanmean(per_class_auc)) if not all(map(math.isnan, per_class_auc)) else math.nan
  )
  return {
    "mAP": float(np.nanmean(per_class_ap)),
    "mAUC": mean_auc,
    "d_prime": d_prime(mean_auc) if not math.isnan(mean_auc) else math.nan,
    "per_class_ap": per_class_ap,
    "per_class_auc": per_class_auc,
    "accuracy": top1_accuracy(scores, targets),
  }
