"""Evaluator: mAP, mean AUC, d-prime and top-1 accuracy of a model over an eval datafile.

Every process reads its shard of the eval rows (`dass_jax.data.make_eval_iterator`); the model
reads the batch entry of its registry input kind (`dass_jax.models.MODELS`): the normalised fbank,
or for a model that takes audio, the 16 kHz waveform over the span of the eval frames (asked of
the pipeline only for such a model); batches are
placed as global arrays over the mesh, scores computed by one jitted function and gathered to every
process, padding and unreadable clips removed by the batch masks. Scores are sigmoid outputs
(multi-label, the AudioSet recipes) or softmax outputs (single-label); both rank the examples as
the logits do, so AP/AUC are the same either way.

    evaluator = Evaluator(model, eval_cfg, mesh, batch_size=24, single_label=False)
    metrics = evaluator.run(params, out_json="workdir/eval/per_class_ap_step100.json")
    # {"mAP", "mAUC", "d_prime", "accuracy", "num_examples"}
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dass_jax import data, files, models
from experiments import metrics as metrics_lib
from experiments import sharding


def _global_batch(local: np.ndarray, mesh) -> jax.Array:
  return jax.make_array_from_process_local_data(sharding.batch_sharding(mesh), local)


class Evaluator:
  """Runs a Flax classifier over an eval set and computes the AST/DASS metrics.

  Args:
    model: Flax module of a registered model (its `config` names its input kind),
      `apply({'params': p}, x, train=False)` -> (b, classes) logits.
    data_cfg: eval data config section (`dass_jax.data`); its batch_size is replaced.
    mesh: device mesh; `batch_size` must be divisible by its size and by the process count.
    batch_size: global eval batch size.
    single_label: softmax scores (else sigmoid).
    cache: keep this process's eval batches in memory after the first pass, so that later passes
      skip decoding and feature extraction (for small eval sets evaluated often, such as the
      quickstart's: 200 clips of 2 s are 20 MB).
  """

  def __init__(
    self,
    model: Any,
    data_cfg: ml_collections.ConfigDict,
    mesh,
    batch_size: int,
    single_label: bool = False,
    cache: bool = False,
  ):
    if batch_size % mesh.size or batch_size % jax.process_count():
      raise ValueError(
        f"eval batch size {batch_size} must be divisible by the {mesh.size} "
        f"devices and {jax.process_count()} processes"
      )
    self.mesh = mesh
    self.input_kind = models.spec_of(model.config).input_kind
    self.data_cfg = ml_collections.ConfigDict(data_cfg.to_dict())
    self.data_cfg.batch_size = batch_size // jax.process_count()
    data.request_inputs(self.data_cfg, [self.input_kind])
    labels = data.read_label_csv(self.data_cfg.label_csv)
    self.class_mids, self.class_names = labels.mids, labels.names
    activation = jax.nn.softmax if single_label else jax.nn.sigmoid
    replicated = sharding.replicated(mesh)

    def predict(params, x):
      return activation(model.apply({"params": params}, x, train=False).astype(jnp.float32))

    self._predict = jax.jit(predict, out_shardings=replicated)
    self._gather = jax.jit(lambda x: x, out_shardings=replicated)
    self._use_cache = cache
    self._cache: list[dict[str, np.ndarray]] | None = None

  def _batches(self):
    """This process's eval batches, from the data or (with caching, after a pass) from memory."""
    if self._cache is not None:
      yield from self._cache
      return
    it = data.make_eval_iterator(
      self.data_cfg, shard_index=jax.process_index(), shard_count=jax.process_count()
    )
    kept = []
    for batch in it:
      if self._use_cache:
        kept.append({k: batch[k] for k in (self.input_kind, "labels", "index", "mask")})
      yield batch
    if self._use_cache:
      self._cache = kept  # Only a complete pass is kept.

  def scores(self, params: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, targets, index) of every real eval example, on every process: scores and targets
    (n, classes), index (n,) the datafile row (TFDS example) of each, in the iterator's order."""
    all_scores, all_targets, all_index = [], [], []
    for batch in self._batches():
      x = _global_batch(batch[self.input_kind], self.mesh)
      with jax.set_mesh(self.mesh):  # the scan splits over the batch (pallas_kernels.sharding)
        scores = np.asarray(self._predict(params, x))
      labels = np.asarray(self._gather(_global_batch(batch["labels"], self.mesh)))
      index = np.asarray(self._gather(_global_batch(batch["index"], self.mesh)))
      mask = np.asarray(self._gather(_global_batch(batch["mask"], self.mesh))) > 0
      all_scores.append(scores[mask])
      all_targets.append(labels[mask])
      all_index.append(index[mask])
    return np.concatenate(all_scores), np.concatenate(all_targets), np.concatenate(all_index)

  def metrics(
    self, scores: np.ndarray, targets: np.ndarray, out_json: str | None = None
  ) -> dict[str, float]:
    """Metrics of (n, classes) scores against targets; writes per-class AP and AUC to `out_json`
    (process 0) when given."""
    result = metrics_lib.compute_metrics(scores, targets)
    if out_json and jax.process_index() == 0:
      per_class = [
        {"index": i, "mid": mid, "name": name, "ap": _json_float(ap), "auc": _json_float(auc)}
        for i, (mid, name, ap, auc) in enumerate(
          zip(self.class_mids, self.class_names, result["per_class_ap"], result["per_class_auc"])
        )
      ]
      summary = {k: _json_float(result[k]) for k in ("mAP", "mAUC", "d_prime", "accuracy")}
      files.write_json(
        out_json,
        {**summary, "num_examples": int(scores.shape[0]), "per_class": per_class},
        indent=1,
      )
    return {
      "mAP": result["mAP"],
      "mAUC": result["mAUC"],
      "d_prime": result["d_prime"],
      "accuracy": result["accuracy"],
      "num_examples": int(scores.shape[0]),
    }

  def run(self, params: Any, out_json: str | None = None) -> dict[str, float]:
    """Metrics of `params` (`metrics` of `scores`)."""
    scores, targets, _ = self.scores(params)
    return self.metrics(scores, targets, out_json)


def _json_float(x: float) -> float | None:
  return None if x is None or not np.isfinite(x) else float(x)
