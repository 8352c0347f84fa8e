"""Checkpoint-ensemble evaluation: the mean of the valid predictions of every evaluation so far.

AST's and DASS's recipes (`validate_ensemble` in their traintest.py) report, after every epoch,
the metrics of the average of the predictions (sigmoid or softmax scores) of every epoch's model
so far, `cum_mAP` beside `mAP`, and the best of them, `best_cum_mAP`. `experiments.train` does the
same at every valid evaluation: each evaluation's scores are added to a running sum kept in the
train state (checkpointed and resumed with it, so a run killed after an evaluation and resumed
from an earlier checkpoint recomputes the very same sum), and the figures are those of
sum / count. Memory: one (rows, classes) float32 array, whatever the number of evaluations.

State (`init_state`; a subtree of the train state, replicated on every device):
  sum:        (rows, classes) float32, per valid row (datafile row or TFDS example; rows that
              cannot be read stay 0 and are never scored) the sum of its scores over evaluations.
  count:      () int32, evaluations summed.
  best_value: () float32, the best checkpoint-ensemble value of the selection metric so far.
  best_step:  () int32, the step of the evaluation that gave it.

Figures (`figures`): `cum_mAP`, `cum_mAUC`, `cum_acc` (AST's names; accuracy as
`experiments.metrics`), logged as `valid/cum_*`; results.json holds the last ones with the count
and `best_cum_mAP` (or `best_cum_acc` when the run selects on accuracy) and its step.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from experiments import metrics as metrics_lib

# Figure name of each metric of `experiments.metrics` (AST's names).
NAMES = {"mAP": "cum_mAP", "mAUC": "cum_mAUC", "accuracy": "cum_acc"}


def init_state(num_rows: int, num_classes: int) -> dict[str, Any]:
  """An empty running sum over `num_rows` valid rows of `num_classes` scores."""
  return {
    "sum": jnp.zeros((num_rows, num_classes), jnp.float32),
    "count": jnp.zeros((), jnp.int32),
    "best_value": jnp.full((), -jnp.inf, jnp.float32),
    "best_step": jnp.zeros((), jnp.int32),
  }


def add(state: dict[str, Any], scores: Any, index: Any) -> dict[str, Any]:
  """The state with one evaluation's (n, classes) scores of valid rows `index` (n,) added."""
  return {**state, "sum": state["sum"].at[index].add(scores), "count": state["count"] + 1}


def track_best(state: dict[str, Any], value: Any, step: Any) -> dict[str, Any]:
  """The state with `value` (this evaluation's ensemble figure) kept when it is the best."""
  better = value > state["best_value"]
  return {
    **state,
    "best_value": jnp.where(better, value, state["best_value"]),
    "best_step": jnp.where(better, step, state["best_step"]),
  }


def figures(
  total: np.ndarray, count: int, targets: np.ndarray, index: np.ndarray
) -> dict[str, float]:
  """The checkpoint ensemble's metrics: the mean scores sum / count of rows `index` against their
  (n, classes) targets. `total` is the state's (rows, classes) sum."""
  if count < 1:
    raise ValueError("no evaluation has been summed yet")
  mean = np.asarray(total)[np.asarray(index)] / np.float32(count)
  result = metrics_lib.compute_metrics(mean, targets)
  return {name: float(result[metric]) for metric, name in NAMES.items()}
