r"""Why the quickstart's DASS underfit, measured: learning curves of recipe variants.

    python -m experiments.quickstart_study --out work_dirs/quickstart_study.json
    python -m experiments.quickstart_study --variants dass_zero_bias_2s,dass_prior_2s --epochs 6

Every variant trains a model from scratch on the quickstart's synthetic data with features
computed once (no augmentation, Adam with warm-up and cosine decay, batch 16, the repository's
models, losses, optimizer and metrics) and evaluates the valid mAP after each epoch (the
quickstart's valid split: its test split is for the quickstart's one final evaluation); the
script prints each curve as it goes and writes all of them to --out (JSON). It also runs two
diagnostics:

  * `collapse`: 15 Adam steps (lr 1e-2) on 32 clips with the head bias at zero or at the label
    prior, then the spread across examples of the pooled features the head reads and the
    backbone's gradient norm (a zero bias drives every logit towards the prior through the whole
    network: the spread collapses and the backbone stops learning);
  * `linear`: logistic regression on per-mel-band mean / std / max of the features, the
    reference a model should approach.

Variants (name: model, head bias, clip length; students run --epochs, the teacher 30 epochs):
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import dass_jax
from dass_jax import data
from dass_jax.data import synthetic
from dass_jax.models import AstConfig, DassConfig
from experiments import losses, metrics, optim

BATCH = 16
FRAMES = {1.0: 98, 2.0: 198}
STUDENT = {"depths": (1, 1, 2, 1), "dims": (16, 32, 64, 128), "drop_path_rate": 0.0}
TEACHER = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "mlp_dim": 128}
# name: (model_type, model fields, head bias, clip seconds, lr, teacher variant for KD or None)
VARIANTS = {
  "dass_zero_bias_2s": ("dass", STUDENT, "zeros", 2.0, 2e-3, None),
  "dass_prior_2s": ("dass", STUDENT, "prior", 2.0, 2e-3, None),
  "dass_prior_2s_width32": (
    "dass",
    {**STUDENT, "dims": (32, 64, 128, 256)},
    "prior",
    2.0,
    2e-3,
    None,
  ),
  "dass_prior_1s": ("dass", STUDENT, "prior", 1.0, 2e-3, None),
  "ast_prior_1s": ("ast", TEACHER, "prior", 1.0, 3e-3, None),
  "dass_prior_1s_kd": ("dass", STUDENT, "prior", 1.0, 2e-3, "ast_prior_1s"),
}
TEACHER_EPOCHS = 30
__doc__ += "".join(
  f"  {name}: {kind} {fields.get('dims', '')} bias {bias}, {secs:g} s, lr {lr:g}"
  + (f", KD (bce) from {kd}" if kd else "")
  + "\n"
  for name, (kind, fields, bias, secs, lr, kd) in VARIANTS.items()
)


def features(clip_seconds: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'train', 'eval'}: (normalised fbank (n, frames, 128), labels (n, classes)) of the
  quickstart's dataset, 'eval' being its valid split."""
  ds = synthetic.ensure_dataset(
    seed=0, num_train=800, num_valid=200, num_eval=200, clip_seconds=clip_seconds
  )
  out = {}
  for split, datafile in (("train", ds.train_datafile), ("eval", ds.valid_datafile)):
    cfg = data.default_config(
      datafile=datafile, label_csv=ds.label_csv, target_frames=FRAMES[clip_seconds], batch_size=40
    )
    xs, ys = [], []
    for batch in data.make_eval_iterator(cfg, shard_index=0, shard_count=1):
      keep = batch["mask"] > 0
      xs.append(batch["fbank"][keep])
      ys.append(batch["labels"][keep])
    out[split] = (np.concatenate(xs), np.concatenate(ys))
  return out


def _build(kind: str, fields: dict, frames: int, num_classes: int):
  if kind == "dass":
    config = DassConfig(num_classes=num_classes, scan_impl="sequential", **fields)
  else:
    config = AstConfig(num_classes=num_classes, max_length=frames, **fields)
  return dass_jax.build_model(config)


def _prior_bias(params, labels: np.ndarray):
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  (name,) = [k for k in flat if k.endswith("head/bias")]
  p = np.clip(labels.mean(0), 1e-4, 1 - 1e-4)
  flat[name] = jnp.asarray(np.log(p) - np.log1p(-p), jnp.float32)
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def _predictor(model):
  """params, (n, frames, 128) -> (n, classes) logits, in batches of 40 (one jitted function)."""
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))

  def predict(params, x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(apply(params, x[i : i + 40])) for i in range(0, len(x), 40)])

  return predict


def train_variant(
  name: str, epochs: int, feats: dict, teacher_logits: np.ndarray | None, seed: int = 0
) -> dict:
  """Trains one variant; returns its curve and (for a teacher) its logits on the train clips."""
  kind, fields, bias, _, lr, _ = VARIANTS[name]
  (xtr, ytr), (xev, yev) = feats["train"], feats["eval"]
  model = _build(kind, dict(fields), xtr.shape[1], ytr.shape[1])
  predict = _predictor(model)
  params = model.init({"params": jax.random.PRNGKey(seed)}, jnp.asarray(xtr[:1]), train=False)
  params = params["params"]
  if bias == "prior":
    params = _prior_bias(params, ytr)
  steps_per_epoch = len(xtr) // BATCH
  cfg = ml_collections.ConfigDict(optim.default_config())
  cfg.update(
    lr=lr, b1=0.9, weight_decay=0.0, schedule="cosine", final_lr_ratio=0.01, warmup_steps=50
  )
  cfg.warmup_update_every = 1
  tx, _ = optim.make_optimizer(cfg, steps_per_epoch, steps_per_epoch * epochs)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y, t, key):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      kd_weight = 0.5 if t is not None else 0.0
      return losses.combined_loss(logits, y, t, kd_kind="bce", kd_weight=kd_weight)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  curve, start = [], time.perf_counter()
  for epoch in range(1, epochs + 1):
    order, epoch_losses = rng.permutation(len(xtr)), []
    for s in range(steps_per_epoch):
      idx = order[s * BATCH : (s + 1) * BATCH]
      t = None if teacher_logits is None else jnp.asarray(teacher_logits[idx])
      key = jax.random.PRNGKey(epoch * 100_000 + s)
      params, opt_state, loss = step(params, opt_state, xtr[idx], ytr[idx], t, key)
      epoch_losses.append(float(loss))
    result = metrics.compute_metrics(predict(params, xev), yev)
    curve.append(
      {
        "epoch": epoch,
        "train_loss": float(np.mean(epoch_losses)),
        "mAP": float(result["mAP"]),
        "seconds": time.perf_counter() - start,
      }
    )
    print(f"{name} epoch {epoch:2d} loss {curve[-1]['train_loss']:.4f} mAP {result['mAP']:.4f}")
  out = {"curve": curve, "per_class_ap": [float(a) for a in result["per_class_ap"]]}
  out["train_logits"] = predict(params, xtr)
  return out


def collapse(feats: dict, steps: int = 15, lr: float = 1e-2) -> dict:
  """Pooled-feature spread and backbone gradient norm after `steps` Adam steps, per head bias."""
  (x, y) = feats["train"]
  x, y = jnp.asarray(x[:32]), jnp.asarray(y[:32])
  model = _build("dass", dict(STUDENT), x.shape[1], y.shape[1])
  tx = optax.adam(lr)
  out = {}
  for bias in ("zeros", "prior"):
    params = model.init({"params": jax.random.PRNGKey(0)}, x[:1], train=False)["params"]
    if bias == "prior":
      params = _prior_bias(params, np.asarray(y))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
      loss, grads = jax.value_and_grad(
        lambda p: losses.sigmoid_bce(model.apply({"params": p}, x), y)
      )(params)
      backbone = optax.global_norm({k: v for k, v in grads.items() if k != "classifier"})
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss, backbone

    for _ in range(steps):
      params, opt_state, loss, backbone = step(params, opt_state)
    _, state = model.apply({"params": params}, x, mutable=["intermediates"])
    pooled = np.asarray(state["intermediates"]["classifier"]["pooled"][0])
    out[bias] = {
      "loss": float(loss),
      "backbone_grad_norm": float(backbone),
      "pooled_spread": float(pooled.std(axis=0).mean()),
    }
    print(f"collapse head bias {bias}: {out[bias]}")
  return out


def linear_probe(feats: dict, steps: int = 2000) -> float:
  """Held-out mAP of logistic regression on per-band mean, std and max over time."""

  def stats(x):
    return np.concatenate([x.mean(1), x.std(1), x.max(1)], axis=1)

  (xtr, ytr), (xev, yev) = feats["train"], feats["eval"]
  ftr, fev = stats(xtr), stats(xev)
  mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
  ftr, fev = jnp.asarray((ftr - mu) / sd), jnp.asarray((fev - mu) / sd)
  params = (jnp.zeros((ftr.shape[1], ytr.shape[1])), jnp.zeros(ytr.shape[1]))
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  def loss_fn(p):
    return losses.sigmoid_bce(ftr @ p[0] + p[1], jnp.asarray(ytr)) + 1e-3 * jnp.sum(p[0] ** 2)

  @jax.jit
  def step(p, s):
    updates, s = tx.update(jax.grad(loss_fn)(p), s)
    return optax.apply_updates(p, updates), s

  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return float(metrics.compute_metrics(np.asarray(fev @ params[0] + params[1]), yev)["mAP"])


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m experiments.quickstart_study", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
  parser.add_argument("--epochs", type=int, default=8, help="epochs of each student variant")
  parser.add_argument("--diagnostics", default="collapse,linear", help="'' for none")
  parser.add_argument("--out", default="work_dirs/quickstart_study.json")
  args = parser.parse_args(argv)
  names = [n for n in args.variants.split(",") if n]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    print(f"error: unknown variants {unknown}; known: {sorted(VARIANTS)}", file=sys.stderr)
    return 1
  feats_by_len: dict[float, dict] = {}

  def feats(secs: float) -> dict:
    if secs not in feats_by_len:
      feats_by_len[secs] = features(secs)
    return feats_by_len[secs]

  report: dict = {"epochs": args.epochs, "variants": {}}
  diagnostics = [d for d in args.diagnostics.split(",") if d]
  if "collapse" in diagnostics:
    report["collapse"] = collapse(feats(2.0))
  if "linear" in diagnostics:
    report["linear_probe_mAP"] = {f"{s:g}s": linear_probe(feats(s)) for s in (2.0, 1.0)}
    print(f"linear probe mAP: {report['linear_probe_mAP']}")
  results: dict[str, dict] = {}
  for name in names:
    kind, _, _, secs, _, teacher = VARIANTS[name]
    if teacher and teacher not in results:
      results[teacher] = train_variant(teacher, TEACHER_EPOCHS, feats(secs), None)
    epochs = TEACHER_EPOCHS if kind == "ast" else args.epochs
    if name not in results:
      logits = results[teacher]["train_logits"] if teacher else None
      results[name] = train_variant(name, epochs, feats(secs), logits)
  for name, result in results.items():
    report["variants"][name] = {k: v for k, v in result.items() if k != "train_logits"}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print("valid mAP after each epoch:")
  for name, result in results.items():
    print(f"  {name:<22} " + " ".join(f"{c['mAP']:.3f}" for c in result["curve"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
