r"""Frozen-embedding evaluation of a checkpoint on imported datafiles: k-NN and a linear probe.

    python -m experiments.probe --checkpoint work_dirs/my_sounds/export --data data/my_sounds \
        [--k 10] [--out work_dirs/my_sounds/probe.json] [--random-init]

The checkpoint (a folder, a training export or a published name) is frozen: every clip of
DATA/{train,valid,test}.json gets its scene embedding (`dass_jax.embed`: the mean-pooled last
hidden state, inputs padded to multiples of 0.32 s, so that a few shapes compile), and two
classifiers are fitted on the train clips' embeddings:

  k-NN    cosine similarity to every train clip, the k most similar (default k = 10) vote;
          single-label: the class with most votes (ties: the larger summed similarity), scored by
          accuracy; multi-label: each class's vote share as its score, scored by mAP. Nothing is
          chosen, so valid and test are both reported as they are.
  linear  a linear layer on the standardised embeddings (mean and std of train), softmax
          cross-entropy (single-label) or sigmoid BCE (multi-label), full-batch Adam for 500
          steps; its L2 weight (0, 1e-4, 1e-3, 1e-2, 1e-1) is chosen on valid, then the chosen
          probe is evaluated once on test.

Folds. When every clip carries a fold (`dass_jax.prepare` with a fold column, e.g. ESC-50's five),
the evaluation is repeated with each fold as test, the fold before it (cyclically) as valid and the
others as train, as `dass_jax.prepare` splits by default; the mean and standard deviation over the
rounds are reported besides each round. Otherwise the prepared train / valid / test split is used.

`--random-init` evaluates the checkpoint's architecture with freshly initialised params instead:
the floor that the trained embeddings should beat.

Output (printed, and written to --out as JSON): {"checkpoint", "data", "metric", "embedding_dim",
"bucket_seconds", "knn": {"k", "valid", "test"}, "linear": {"weight_decay", "valid", "test",
"candidates": {weight decay: valid}}, "folds" (with folds: per-round results and mean/std),
"seconds"}; metrics as `experiments.metrics.compute_metrics` (accuracy, mAP, mAUC, d_prime).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dass_jax import files
from dass_jax import labels as labels_lib
from dass_jax.data import datafile as datafile_lib
from dass_jax.embed import Embedder
from experiments import metrics as metrics_lib

SPLITS = ("train", "valid", "test")
BUCKET_SECONDS = 0.32  # DASS's token length (32 frames)
WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
LINEAR_STEPS = 500
LINEAR_LR = 1e-2
METRIC_KEYS = ("accuracy", "mAP", "mAUC", "d_prime")


@dataclasses.dataclass
class Clips:
  """Embedded clips: (n, D) embeddings, (n, C) multi-hot targets, each clip's fold (or None)."""

  embeddings: np.ndarray
  targets: np.ndarray
  folds: list[str | None]

  def take(self, mask: np.ndarray) -> Clips:
    return Clips(
      self.embeddings[mask], self.targets[mask], [f for f, m in zip(self.folds, mask) if m]
    )


def _metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
  result = metrics_lib.compute_metrics(scores, targets)
  return {k: float(result[k]) for k in METRIC_KEYS} | {"num_examples": int(len(targets))}


def knn_scores(train: Clips, query: np.ndarray, k: int, single_label: bool) -> np.ndarray:
  """(n, C) k-NN scores of `query` (n, D) embeddings (module docstring)."""
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  similarity = unit(query) @ unit(train.embeddings).T  # (n, train)
  k = min(k, similarity.shape[1])
  nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
  votes = train.targets[nearest]  # (n, k, C)
  scores = votes.mean(axis=1)
  if single_label:  # ties between vote counts go to the larger summed similarity
    sims = np.take_along_axis(similarity, nearest, axis=1)[:, :, None]
    scores = scores + 1e-6 * (votes * sims).sum(axis=1)
  return scores


def fit_linear(
  train: Clips, single_label: bool, weight_decay: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """A linear probe on standardised embeddings: (mean, std, kernel (D, C), bias (C,))."""
  mean = train.embeddings.mean(axis=0)
  std = train.embeddings.std(axis=0) + 1e-6
  x = jnp.asarray((train.embeddings - mean) / std, jnp.float32)
  y = jnp.asarray(train.targets, jnp.float32)
  dim, classes = x.shape[1], y.shape[1]
  key = jax.random.PRNGKey(seed)
  params = {"kernel": 0.01 * jax.random.normal(key, (dim, classes)), "bias": jnp.zeros(classes)}
  tx = optax.adam(LINEAR_LR)

  def loss_fn(p):
    logits = x @ p["kernel"] + p["bias"]
    if single_label:
      data_loss = -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=1))
    else:
      data_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))
    return data_loss + weight_decay * jnp.sum(p["kernel"] ** 2)

  @jax.jit
  def train_all(p):
    def step(carry, _):
      p, opt = carry
      grads = jax.grad(loss_fn)(p)
      updates, opt = tx.update(grads, opt, p)
      return (optax.apply_updates(p, updates), opt), None

    (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=LINEAR_STEPS)
    return p

  params = jax.device_get(train_all(params))
  return mean, std, np.asarray(params["kernel"]), np.asarray(params["bias"])


def linear_scores(probe, query: np.ndarray) -> np.ndarray:
  mean, std, kernel, bias = probe
  return ((query - mean) / std) @ kernel + bias


def evaluate_split(
  train: Clips, valid: Clips, test: Clips, k: int, single_label: bool
) -> dict[str, dict]:
  """k-NN and the linear probe (weight decay chosen on valid) on one train / valid / test split."""
  knn = {
    "k": k,
    "valid": _metrics(knn_scores(train, valid.embeddings, k, single_label), valid.targets),
    "test": _metrics(knn_scores(train, test.embeddings, k, single_label), test.targets),
  }
  metric = "accuracy" if single_label else "mAP"
  probes, candidates = {}, {}
  for wd in WEIGHT_DECAYS:
    probes[wd] = fit_linear(train, single_label, wd)
    candidates[wd] = _metrics(linear_scores(probes[wd], valid.embeddings), valid.targets)
  chosen = max(WEIGHT_DECAYS, key=lambda wd: (candidates[wd][metric], -WEIGHT_DECAYS.index(wd)))
  linear = {
    "weight_decay": chosen,
    "valid": candidates[chosen],
    "test": _metrics(linear_scores(probes[chosen], test.embeddings), test.targets),
    "candidates": {str(wd): candidates[wd][metric] for wd in WEIGHT_DECAYS},
  }
  return {"knn": knn, "linear": linear}


def embed_datafiles(
  embedder: Embedder, folder: str
) -> tuple[dict[str, Clips], labels_lib.LabelSet]:
  """Scene embeddings and targets of every clip of folder/{train,valid,test}.json."""
  classes = labels_lib.read_label_csv(os.path.join(folder, "labels.csv"))
  out = {}
  for split in SPLITS:
    path = os.path.join(folder, f"{split}.json")
    entries = datafile_lib.read_datafile(path) if os.path.isfile(path) else []
    indices = datafile_lib.label_indices(entries, classes, source=path)
    targets = np.zeros((len(entries), len(classes)), np.float32)
    for row, index in enumerate(indices):
      targets[row, list(index)] = 1.0
    vectors = [embedder.embed_file(e.wav).scene for e in entries]
    embeddings = np.stack(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)
    out[split] = Clips(embeddings, targets, [e.fold for e in entries])
  return out, classes


def _mean_std(rounds: list[dict], path: tuple[str, str]) -> dict[str, dict[str, float]]:
  values = {m: [r[path[0]][path[1]][m] for r in rounds] for m in METRIC_KEYS}
  return {m: {"mean": float(np.mean(v)), "std": float(np.std(v))} for m, v in values.items()}


def probe(embedder: Embedder, folder: str, k: int = 10, single_label: bool | None = None) -> dict:
  """Runs the evaluation of the module docstring; returns its results (without "checkpoint")."""
  start = time.perf_counter()
  clips, _ = embed_datafiles(embedder, folder)
  if single_label is None:
    single_label = bool(
      np.all(np.concatenate([c.targets.sum(axis=1) for c in clips.values()]) == 1)
    )
  everything = Clips(
    np.concatenate([clips[s].embeddings for s in SPLITS]),
    np.concatenate([clips[s].targets for s in SPLITS]),
    [f for s in SPLITS for f in clips[s].folds],
  )
  results = {
    "data": os.path.abspath(folder),
    "metric": "accuracy" if single_label else "mAP",
    "embedding_dim": embedder.dim,
    "bucket_seconds": embedder.bucket_steps * embedder.step_ms / 1000.0,
    "num_clips": {s: len(clips[s].folds) for s in SPLITS},
  }
  if everything.folds and all(f is not None for f in everything.folds):
    folds = sorted(set(everything.folds), key=labels_lib.natural_key)
    rounds = []
    fold_of = np.asarray(everything.folds)
    for i, test_fold in enumerate(folds):
      valid_fold = folds[i - 1]
      round_result = evaluate_split(
        everything.take((fold_of != test_fold) & (fold_of != valid_fold)),
        everything.take(fold_of == valid_fold),
        everything.take(fold_of == test_fold),
        k,
        single_label,
      )
      rounds.append({"test_fold": test_fold, "valid_fold": valid_fold, **round_result})
    results["folds"] = rounds
    results["knn"] = {"k": k, "test": _mean_std(rounds, ("knn", "test"))}
    results["linear"] = {"test": _mean_std(rounds, ("linear", "test"))}
  else:
    if not len(clips["train"].folds) or not len(clips["valid"].folds):
      raise ValueError(f"{folder}: the probe needs train and valid clips")
    results.update(evaluate_split(clips["train"], clips["valid"], clips["test"], k, single_label))
  results["seconds"] = time.perf_counter() - start
  return results


def _random_init(model, params, config, seed: int = 0):
  example = np.zeros(config.example_input_shape(), np.float32)
  fresh = model.init({"params": jax.random.PRNGKey(seed)}, example, train=False)["params"]
  del params
  return model, jax.device_get(fresh), config


def _summary_lines(results: dict) -> list[str]:
  metric = results["metric"]
  lines = []
  for name in ("knn", "linear"):
    test = results[name]["test"][metric]
    if isinstance(test, dict):
      lines.append(f"{name:<7} test {metric} {test['mean']:.4f} +- {test['std']:.4f} over folds")
    else:
      lines.append(
        f"{name:<7} valid {metric} {results[name]['valid'][metric]:.4f}  test {test:.4f}"
      )
  return lines


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m experiments.probe",
    description="k-NN and linear-probe evaluation of a checkpoint's frozen embeddings.",
  )
  parser.add_argument("--checkpoint", required=True, help="folder, export or published name")
  parser.add_argument("--data", required=True, help="a folder written by dass_jax.prepare")
  parser.add_argument("--k", type=int, default=10, help="neighbours of the k-NN (default 10)")
  parser.add_argument("--out", help="write the results to this JSON file")
  parser.add_argument(
    "--random-init", action="store_true", help="the architecture with fresh params (a floor)"
  )
  parser.add_argument(
    "--bucket-seconds", type=float, default=BUCKET_SECONDS, help="pad inputs to multiples"
  )
  args = parser.parse_args(argv)
  if args.k < 1:
    parser.error("--k must be >= 1")
  from dass_jax.predict import InputError, load_checkpoint

  try:
    loaded = load_checkpoint(args.checkpoint, need_head=False)
    if args.random_init:
      loaded = _random_init(*loaded)
    embedder = Embedder(*loaded, bucket_seconds=args.bucket_seconds)
    results = probe(embedder, args.data, k=args.k)
  except (InputError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  results = {"checkpoint": args.checkpoint, "random_init": args.random_init, **results}
  print("\n".join(_summary_lines(results)))
  if args.out:
    files.write_json(args.out, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
