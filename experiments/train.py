r"""Trains an audio classifier (DASS, AST, AuM, ...), optionally distilled from a frozen teacher.

    python -m experiments.train --config experiments/configs/quickstart.py \
        --workdir work_dirs/quickstart
    python -m experiments.train --config experiments/configs/audioset_dass.py:small,balanced \
        --workdir /data/exp/dass_small_bal --config.input.num_workers=8

`--config.a.b=value` overrides any config field. Rerunning the same command resumes from the
newest checkpoint in the work directory. Multi-process runs (one process per host): pass
`--coordinator_address=host:port --num_processes=N --process_id=i`, or `--distributed` to let
`jax.distributed.initialize()` read the cluster environment (TPU pods, SLURM, ...).

Splits and choices. `config.evals.input` is the validation split, evaluated every
`evals.every_epochs` epochs (and `every_steps` steps) and at the last step; `config.select` chooses
the model on it ('best': the best valid metric over every evaluation and the weight average;
'last'; 'wa') and can stop training early (`select.patience` evaluations without improvement).
`config.test.input` (optional) is the test split: evaluated once, after training, on the chosen
model only, and never used for a choice. Every valid evaluation also reports the checkpoint
ensemble, the mean prediction of every evaluation so far (`valid/cum_mAP`, `cum_mAUC`, `cum_acc`;
`experiments/checkpoint_ensemble.py`).

Teachers (`config.teacher`, `experiments/teacher.py`, docs/distillation.md): one frozen converted
checkpoint of any registered model (`path`), an ensemble of them (`ensemble`, combined by
`combine`), each online or from a logits cache, or the student's own EMA (`kind='ema'`).

Work directory: train_config.json (resolved config), metrics.jsonl and tensorboard/ (logs:
`train/*`, `valid/*` at every evaluation, `valid_<candidate>/*` and `test/*` at the end),
checkpoints/<step>/ (train state + data iterator), eval/*.json (per-class AP), export/ (the chosen
model as a converted checkpoint: `dass_jax.load_model(workdir + "/export")`; rewritten whenever
the chosen params change, e.g. after a rerun with more epochs), results.json:
{"valid": chosen model's valid metrics, "test": its test metrics (with a test split),
"selected": {"model", "step", "metric"}, "candidates": {name: valid metrics}, "steps",
"stopped_early", "num_params", "checkpoint_ensemble": {"cum_mAP", "cum_mAUC", "cum_acc",
"evaluations", "best_cum_mAP", "best_cum_mAP_step"}}.

Resume order: a checkpoint at step s holds the params and optimizer state after s updates, the RNG
key, the weight average over the epochs completed by step s, the best-on-valid params and their
metric so far, the EMA teacher after s updates, the checkpoint ensemble's running sum, and every
process's data-iterator position after s batches; evaluation and weight
averaging at an epoch end run before that epoch's checkpoint is written. The loss and gradient norm
are fetched after every step (one small device-to-host copy); a non-finite value stops training
(exit code 1) before anything is saved, so the newest checkpoint is always the last good state.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags
from jax.experimental import multihost_utils
from ml_collections import config_flags

import dass_jax
from dass_jax import data, files, models
from dass_jax.checkpoint import is_converted, params_digest, read_metadata, save_converted
from experiments import (
  checkpoint_ensemble,
  checkpointing,
  evaluate,
  logging_utils,
  losses,
  optim,
  quickstart,
  sharding,
  two_stage,
)
from experiments import teacher as teacher_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (overrides config.workdir).")
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Initialise jax.distributed from the cluster environment."
)
_COMPILATION_CACHE = flags.DEFINE_string(
  "compilation_cache_dir",
  os.path.join(os.path.expanduser("~"), ".cache", "dass_jax", "xla"),
  "Persistent XLA compilation cache ('' disables); reruns and resumes skip recompiling.",
)

HEAD_BIAS_INITS = ("zeros", "prior")
RESULTS_FILE = "results.json"
SELECT_MODELS = ("best", "last", "wa")
SELECT_METRICS = ("mAP", "accuracy")


class NonFiniteLossError(RuntimeError):
  """Training met a NaN/inf loss or gradient; the newest checkpoint is the last good state."""


def _model_config(config: ml_collections.ConfigDict, num_classes: int):
  """The model config of the run: init_from's checkpoint (a fixed-length one sized for the clips
  unless config.model sets max_length), or config.model_type with config.scratch_model; the
  fields of config.model override either."""
  fields = dict(config.model.to_dict())
  if fields.get("num_classes", num_classes) != num_classes:
    raise ValueError(
      f"config.model.num_classes={fields['num_classes']} but the label CSV has "
      f"{num_classes} classes"
    )
  fields["num_classes"] = num_classes
  if config.init_from:
    base = dass_jax.checkpoint.load_config(config.init_from)
    if models.fixed_length(base) is not None:  # resampled to the clips (`_fit_length`)
      fields.setdefault("max_length", int(config.input.target_frames))
    return dataclasses.replace(base, **fields)
  scratch = config.get("scratch_model")
  fields = {**(scratch.to_dict() if scratch else {}), **fields}
  return models.config_from_dict({"model_type": config.model_type, **fields})


def _student_input(config: ml_collections.ConfigDict) -> str:
  """The input kind of the model the run trains (init_from's model type, else config.model_type)."""
  if config.init_from:
    return models.spec_of(dass_jax.checkpoint.load_config(config.init_from)).input_kind
  if config.model_type not in models.MODELS:
    raise ValueError(
      f"config.model_type must be one of {sorted(models.MODELS)}, got {config.model_type!r}"
    )
  return models.MODELS[config.model_type].input_kind


def _check_length(model_config, config: ml_collections.ConfigDict) -> None:
  """A model whose position embeddings fix its input length must be sized for the clips."""
  length = models.fixed_length(model_config)
  for name, section in (("input", config.input), ("evals.input", config.evals.input)):
    if length is not None and section.target_frames != length:
      raise ValueError(
        f"{model_config.model_type} takes max_length={length} frames but "
        f"config.{name}.target_frames={section.target_frames}: set config.model.max_length="
        f"{section.target_frames} (a checkpoint given by init_from is resampled to it)"
      )


def _fit_length(params: Any, loaded_config, model_config) -> Any:
  """Params of a fixed-length model (AST, AuM) resized to the run's max_length; else unchanged."""
  adapt = models.spec_of(model_config).with_max_length
  if adapt is None or loaded_config.max_length == model_config.max_length:
    return params
  logging.info(
    "position embeddings resized from %d to %d frames",
    loaded_config.max_length,
    model_config.max_length,
  )
  return adapt(params, loaded_config, model_config.max_length)[0]


def _freeze(tx: optax.GradientTransformation, frozen: tuple[str, ...]):
  """`tx` for every param but those at the '/'-joined paths `frozen` (`ModelSpec.frozen`), which
  get zero updates (weight decay and Adam included)."""
  if not frozen:
    return tx

  def labels(params):
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    marks = {k: "frozen" if k in frozen else "train" for k in flat}
    return flax.traverse_util.unflatten_dict(marks, sep="/")

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def _merge_pretrained(fresh: Any, loaded: Any, reinit_head: bool, source: str) -> Any:
  """`loaded` params shaped as `fresh`; with reinit_head, leaves under 'head' stay fresh."""
  fresh_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(fresh), sep="/")
  loaded_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(loaded), sep="/")
  if set(fresh_flat) != set(loaded_flat):
    raise ValueError(
      f"params of {source} do not match the model: missing "
      f"{sorted(set(fresh_flat) - set(loaded_flat))[:5]}, unexpected "
      f"{sorted(set(loaded_flat) - set(fresh_flat))[:5]}"
    )
  out = {}
  for name, value in fresh_flat.items():
    if reinit_head and "head" in name.split("/"):
      out[name] = value
      continue
    if tuple(np.shape(loaded_flat[name])) != tuple(value.shape):
      hint = " (set config.reinit_head=True for a new label set)" if "head" in name else ""
      raise ValueError(
        f"{source}: {name} has shape {np.shape(loaded_flat[name])}, the model "
        f"wants {value.shape}{hint}"
      )
    out[name] = np.asarray(loaded_flat[name], np.float32)
  return flax.traverse_util.unflatten_dict(out, sep="/")


def _with_prior_head_bias(params: Any, prior: np.ndarray, single_label: bool) -> Any:
  """`params` with the classifier head's bias set to the label prior's logits.

  Multi-label (sigmoid) heads get log(p / (1 - p)), single-label (softmax) heads log(p), so the
  untrained model already predicts the class frequencies. Trained from scratch with a zero bias,
  the first updates otherwise go into pushing every logit towards the prior through the whole
  network (with Adam, every parameter moves at the same rate), which can swamp the features with
  an input-independent component (see experiments/quickstart_study.py).
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  names = [k for k in flat if k.split("/")[-2:] == ["head", "bias"]]
  if len(names) != 1:
    raise ValueError(f"head_bias_init='prior' needs one '.../head/bias' param, found {names}")
  bias = flat[names[0]]
  if bias.shape != prior.shape:
    raise ValueError(f"{names[0]} has shape {bias.shape}, the label prior {prior.shape}")
  p = np.clip(prior, 1e-4, 1.0 - 1e-4)
  logits = np.log(p) if single_label else np.log(p) - np.log1p(-p)
  flat[names[0]] = logits.astype(np.asarray(bias).dtype)
  logging.info("head bias %s set to the label prior's logits", names[0])
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def _export(folder: str, model_config, params: Any, mesh, training: dict[str, Any]) -> None:
  """Writes params (gathered to every process) as a converted checkpoint folder, replacing an
  older export whose params differ (a rerun that trained further); an identical one is kept."""
  gathered = jax.jit(lambda p: p, out_shardings=sharding.replicated(mesh))(params)
  gathered = jax.tree.map(np.asarray, gathered)
  if is_converted(folder):
    if read_metadata(folder).get("params_sha256") == params_digest(gathered):
      return
    logging.info("the chosen params changed since %s was written; rewriting it", folder)
  save_converted(
    folder,
    model_config,
    gathered,
    extra={"source": "experiments.train", "training": training},
    overwrite=True,
  )


def _has_split(section: ml_collections.ConfigDict) -> bool:
  """Whether a data config section names a split (a datafile or a TFDS dataset)."""
  return bool(section.datafile or (section.get("source") == "tfds" and section.get("tfds_name")))


def _select_metric(config: ml_collections.ConfigDict) -> str:
  metric = config.select.metric or ("accuracy" if config.loss.label_kind == "ce" else "mAP")
  if metric not in SELECT_METRICS:
    raise ValueError(f"config.select.metric must be one of {SELECT_METRICS}, got {metric!r}")
  return metric


def _host_mean(rows: list[dict[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run described by `config` in `workdir`; returns the final metrics."""
  # ----------------------------------------------------------------------------------------------
  # Logging.
  # ----------------------------------------------------------------------------------------------
  if not workdir:
    raise ValueError("no work directory: pass --workdir or set config.workdir")
  is_main = jax.process_index() == 0
  num_processes = jax.process_count()
  writer = logging_utils.MetricWriter(workdir, enabled=is_main)
  logging_utils.write_config(workdir, config, enabled=is_main)
  logging.info(
    "work directory %s; %d process(es), %d device(s) (%s)",
    workdir,
    num_processes,
    jax.device_count(),
    jax.devices()[0].platform,
  )

  # ----------------------------------------------------------------------------------------------
  # Mesh.
  # ----------------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  rules = [tuple(r) for r in config.sharding_rules]
  if config.batch_size % mesh.size or config.batch_size % num_processes:
    raise ValueError(
      f"batch_size {config.batch_size} must be divisible by the {mesh.size} "
      f"devices and {num_processes} processes"
    )
  logging.info("mesh %s", dict(mesh.shape))

  def put_batch(local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}

  # ----------------------------------------------------------------------------------------------
  # Input.
  # ----------------------------------------------------------------------------------------------
  train_cfg = ml_collections.ConfigDict(config.input.to_dict())
  train_cfg.batch_size = config.batch_size // num_processes
  # What the step reads: the student's input kind and each online teacher's ("fbank" /
  # "waveform"); a waveform student gets the (mixed) audio, never SpecAugment or fbank noise.
  student_input = _student_input(config)
  ema_teacher = teacher_lib.is_ema(config.teacher)
  teacher_members = teacher_lib.members(config.teacher)
  step_inputs = {student_input}
  cached_keys = []
  for name, member in teacher_members.items():
    kind = teacher_lib.input_kind(member.path)
    if member.cache:
      teacher_lib.check_cache_allowed(train_cfg, kind)
      cached_keys.append(teacher_lib.cache_key(name))
    else:
      step_inputs.add(kind)
  data.request_inputs(train_cfg, step_inputs)
  fbank_augment = {k: train_cfg.get(k) for k in ("freqm", "timem", "noise") if train_cfg.get(k)}
  if "fbank" not in step_inputs and fbank_augment:
    logging.warning("%s act on the fbank, which no model of this run reads", fbank_augment)
  batch_keys = ["labels", *sorted(step_inputs), *cached_keys]
  train_iter = data.make_train_iterator(
    train_cfg, seed=config.seed, shard_index=jax.process_index(), shard_count=num_processes
  )
  steps_per_epoch = train_iter.steps_per_epoch
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  num_classes = train_iter.num_classes
  logging.info(
    "%d steps per epoch, %d steps in all, %d classes", steps_per_epoch, total_steps, num_classes
  )

  # ----------------------------------------------------------------------------------------------
  # Model, optimizer, teacher.
  # ----------------------------------------------------------------------------------------------
  model_config = _model_config(config, num_classes)
  spec = models.spec_of(model_config)
  _check_length(model_config, config)
  model = dass_jax.build_model(model_config)
  tx, schedule = optim.make_optimizer(config.optim, steps_per_epoch, total_steps)
  tx = _freeze(tx, spec.frozen)
  wa_enabled = config.wa_start > 0
  if wa_enabled and not 1 <= config.wa_start <= config.wa_end:
    raise ValueError(
      f"weight averaging needs 1 <= wa_start <= wa_end, got {config.wa_start}, {config.wa_end}"
    )
  loss_cfg = config.loss
  single_label = loss_cfg.label_kind == "ce"
  select_metric = _select_metric(config)
  if config.select.model not in SELECT_MODELS:
    raise ValueError(
      f"config.select.model must be one of {SELECT_MODELS}, got {config.select.model!r}"
    )
  if config.select.model == "wa" and not wa_enabled:
    raise ValueError("config.select.model='wa' needs weight averaging (wa_start > 0)")
  # The best-on-valid params are kept in the train state (checkpointed, resumed exactly).
  keep_best = config.select.model == "best"
  patience = int(config.select.patience)
  if patience < 0:
    raise ValueError(f"config.select.patience must be >= 0, got {patience}")

  # Checkpoint teachers (one or an ensemble; cached ones hold their logits, online ones their
  # params), or the student's EMA (`ema_params` in the train state).
  teachers = teacher_lib.prepare(
    config.teacher,
    train_cfg,
    num_classes,
    mesh,
    rules,
    config.fsdp_min_size,
    config.evals.batch_size,
  )
  teacher_params = teacher_lib.online_params(teachers)
  ema_momentum = float(config.teacher.ema_momentum)
  if ema_teacher:
    logging.info("teacher: the student's EMA, momentum %g", ema_momentum)
  elif len(teachers) > 1:
    logging.info(
      "teacher ensemble %s, combined by the mean of their %s",
      [t.name for t in teachers],
      config.teacher.combine,
    )
  ensemble_eval = bool(config.evals.checkpoint_ensemble)
  if not _has_split(config.evals.input):
    raise ValueError("config.evals.input names no validation split (datafile or tfds_name)")
  num_valid_rows = data.num_examples(config.evals.input) if ensemble_eval else 0

  # ----------------------------------------------------------------------------------------------
  # Train state, created directly with its shardings.
  # ----------------------------------------------------------------------------------------------
  if student_input == "fbank":
    dummy_shape = (1, int(train_cfg.target_frames), model_config.num_mel_bins)
  else:  # a waveform model's params do not depend on the input length
    dummy_shape = model_config.example_input_shape()
  dummy = jnp.zeros(dummy_shape, jnp.float32)
  init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))

  def make_state(params, key):
    state = {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt_state": tx.init(params),
      "rng": key,
    }
    if wa_enabled:
      state["wa_params"] = jax.tree.map(jnp.zeros_like, params)
      state["wa_count"] = jnp.zeros((), jnp.int32)
    # Valid-metric bookkeeping: the best value and step, evaluations since (early stopping).
    state["best_value"] = jnp.full((), -jnp.inf, jnp.float32)
    state["best_step"] = jnp.zeros((), jnp.int32)
    state["evals_since_best"] = jnp.zeros((), jnp.int32)
    if keep_best:
      state["best_params"] = jax.tree.map(jnp.zeros_like, params)
    if ema_teacher:
      state["ema_params"] = jax.tree.map(jnp.copy, params)
    if ensemble_eval:
      state["checkpoint_ensemble"] = checkpoint_ensemble.init_state(num_valid_rows, num_classes)
    return state

  def init(key):
    params = model.init({"params": key}, dummy, train=False)["params"]
    return make_state(params, train_key)

  abstract = jax.eval_shape(init, init_key)
  state_shardings = sharding.tree_shardings(abstract, mesh, rules, config.fsdp_min_size)
  if ema_teacher:
    state_shardings["ema_params"] = state_shardings["params"]
  if ensemble_eval:  # read on every process after each evaluation
    state_shardings["checkpoint_ensemble"] = jax.tree.map(
      lambda _: replicated, abstract["checkpoint_ensemble"]
    )

  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  start_step = ckpt.latest_step()
  if start_step is not None:
    logging.info("resuming from checkpoint step %d", start_step)
    state = ckpt.restore(
      start_step, checkpointing.abstract_with_shardings(abstract, state_shardings), train_iter
    )
  else:
    start_step = 0
    state = jax.jit(init, out_shardings=state_shardings)(init_key)
    params = None
    if config.init_from:
      _, loaded, loaded_config = dass_jax.load_model(config.init_from)
      loaded = _fit_length(loaded, loaded_config, model_config)
      fresh = jax.device_get(jax.jit(lambda s: s["params"], out_shardings=replicated)(state))
      params = _merge_pretrained(fresh, loaded, config.reinit_head, config.init_from)
      logging.info("initialised from %s", config.init_from)
    elif spec.init_statistics is not None:
      # Statistics params (Dasheng's input BatchNorm) from the first batch; the iterator rewinds.
      position = train_iter.get_state()
      first = put_batch({student_input: next(train_iter)[student_input]})[student_input]
      train_iter.set_state(position)
      params = jax.jit(
        lambda s, x: spec.init_statistics(s["params"], model_config, x), out_shardings=replicated
      )(state, first)
      logging.info("%s from the first batch", ", ".join(spec.frozen))
    if config.head_bias_init not in HEAD_BIAS_INITS:
      raise ValueError(
        f"config.head_bias_init must be one of {HEAD_BIAS_INITS}, got {config.head_bias_init!r}"
      )
    if config.head_bias_init == "prior" and (not config.init_from or config.reinit_head):
      if params is None:
        params = jax.device_get(jax.jit(lambda s: s["params"], out_shardings=replicated)(state))
      params = _with_prior_head_bias(params, data.label_prior(train_cfg), single_label)
    if params is not None:
      state = jax.jit(make_state, out_shardings=state_shardings)(params, train_key)
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract["params"]))
  logging.info(
    "%s with %.2fM params, takes %s", type(model_config).__name__, num_params / 1e6, student_input
  )

  # ----------------------------------------------------------------------------------------------
  # Update step.
  # ----------------------------------------------------------------------------------------------
  def train_step(state, batch, teacher_params):
    params = state["params"]
    key = jax.random.fold_in(state["rng"], state["step"])
    if ema_teacher:  # the EMA before this step's update, as DASS
      teacher_logits = jax.lax.stop_gradient(
        model.apply({"params": state["ema_params"]}, batch[student_input], train=False)
      )
    elif teachers:
      teacher_logits = teacher_lib.step_logits(
        teachers, teacher_params, batch, loss_cfg, config.teacher.combine
      )
    else:
      teacher_logits = None

    def loss_fn(params):
      logits = model.apply(
        {"params": params}, batch[student_input], train=True, rngs={"dropout": key}
      )
      return losses.combined_loss(
        logits,
        batch["labels"],
        teacher_logits,
        label_kind=loss_cfg.label_kind,
        kd_kind=loss_cfg.kd_kind,
        kd_weight=loss_cfg.kd_weight,
        temperature=loss_cfg.temperature,
        teacher_func=loss_cfg.teacher_func,
      )

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_state = {
      **state,
      "step": state["step"] + 1,
      "params": optax.apply_updates(params, updates),
      "opt_state": opt_state,
    }
    if ema_teacher:
      new_state["ema_params"] = teacher_lib.ema_update(
        state["ema_params"], new_state["params"], ema_momentum
      )
    metrics = {f"loss_{k}" if k != "total" else "loss": v for k, v in parts.items()}
    metrics.update(
      grad_norm=grad_norm,
      lr=schedule(state["step"]),
      finite=jnp.isfinite(loss) & jnp.isfinite(grad_norm),
    )
    return new_state, metrics

  update = jax.jit(train_step, donate_argnums=(0,), out_shardings=(state_shardings, replicated))

  def wa_step(state):
    count = state["wa_count"] + 1
    wa = jax.tree.map(
      lambda a, p: a + (p - a) / count.astype(jnp.float32), state["wa_params"], state["params"]
    )
    return {**state, "wa_params": wa, "wa_count": count}

  wa_update = jax.jit(wa_step, donate_argnums=(0,), out_shardings=state_shardings)

  def track_valid(state, value, step):
    """Records one valid evaluation of state["params"] (taken at `step`)."""
    better = value > state["best_value"]
    new_state = {
      **state,
      "best_value": jnp.where(better, value, state["best_value"]),
      "best_step": jnp.where(better, step, state["best_step"]),
      "evals_since_best": jnp.where(better, 0, state["evals_since_best"] + 1),
    }
    if keep_best:
      new_state["best_params"] = jax.tree.map(
        lambda b, p: jnp.where(better, p, b), state["best_params"], state["params"]
      )
    return new_state

  track_update = jax.jit(track_valid, donate_argnums=(0,), out_shardings=state_shardings)

  def early_stop(state) -> bool:
    return patience > 0 and int(jax.device_get(state["evals_since_best"])) >= patience

  # ----------------------------------------------------------------------------------------------
  # Evaluation.
  # ----------------------------------------------------------------------------------------------
  valid_evaluator = evaluate.Evaluator(
    model,
    config.evals.input,
    mesh,
    config.evals.batch_size,
    single_label=single_label,
    cache=config.evals.cache,
  )
  eval_dir = os.path.join(workdir, "eval")

  def run_eval(evaluator, params, step: int, name: str):
    """Evaluates params, per-class AP to eval/<name>...json; returns (metrics, predictions), the
    predictions (scores, targets, index) as `Evaluator.scores`."""
    suffix = f"_step{step}" if name == "valid" else ""
    predictions = evaluator.scores(params)
    out_json = os.path.join(eval_dir, f"{name}{suffix}.json")
    return evaluator.metrics(*predictions[:2], out_json=out_json), predictions

  def log_eval(result: dict[str, float], step: int, name: str) -> None:
    """Logs metrics as `name/...` (metrics.jsonl, TensorBoard) and in the log."""
    writer.write(step, {f"{name}/{k}": v for k, v in result.items()})
    logging.info(
      "%s at step %d: %s", name, step, ", ".join(f"{k}={v:.4f}" for k, v in result.items())
    )

  def save_scores(predictions, step: int) -> None:
    """eval/valid_step<N>_scores.npz: the evaluation's scores, targets and valid row indices."""
    if is_main:
      scores, targets, index = predictions
      path = os.path.join(eval_dir, f"valid_step{step}_scores.npz")
      with files.atomic_file(path) as tmp:
        np.savez(tmp, scores=scores, targets=targets, index=index)

  # The checkpoint ensemble (`experiments.checkpoint_ensemble`): its running sum and best figure.
  cum_metric = checkpoint_ensemble.NAMES[select_metric]

  def ensemble_add(state, scores, index):
    ens = checkpoint_ensemble.add(state["checkpoint_ensemble"], scores, index)
    return {**state, "checkpoint_ensemble": ens}

  def ensemble_track(state, value, step):
    ens = checkpoint_ensemble.track_best(state["checkpoint_ensemble"], value, step)
    return {**state, "checkpoint_ensemble": ens}

  ensemble_add_update = jax.jit(ensemble_add, donate_argnums=(0,), out_shardings=state_shardings)
  ensemble_track_update = jax.jit(
    ensemble_track, donate_argnums=(0,), out_shardings=state_shardings
  )

  def ensemble_figures(state, targets, index) -> dict[str, float]:
    ens = state["checkpoint_ensemble"]
    return checkpoint_ensemble.figures(
      np.asarray(ens["sum"]), int(jax.device_get(ens["count"])), targets, index
    )

  # ----------------------------------------------------------------------------------------------
  # Train loop.
  # ----------------------------------------------------------------------------------------------
  stopped_early = early_stop(state)  # a resumed run that had already stopped
  if stopped_early:
    logging.info("early stop: no better valid %s in %d evaluations", select_metric, patience)
  bar = logging_utils.progress_bar(total_steps, start_step, enabled=is_main)
  pending: list[dict[str, float]] = []
  interval_start, interval_steps = time.perf_counter(), 0
  try:
    for step in range(start_step + 1, total_steps + 1):
      if stopped_early:
        break
      local = next(train_iter)
      local.update(teacher_lib.cached_entries(teachers, local["index"]))
      local = {k: local[k] for k in batch_keys}
      # Under the mesh the model's scan runs on each device's batch slice (pallas_kernels.sharding).
      with jax.set_mesh(mesh):
        state, metrics = update(state, put_batch(local), teacher_params)
      metrics = jax.device_get(metrics)
      if not metrics.pop("finite"):
        raise NonFiniteLossError(
          f"non-finite loss {metrics['loss']} or gradient norm {metrics['grad_norm']} at step "
          f"{step}; stopping without saving, the newest checkpoint in {ckpt.directory} "
          f"(step {ckpt.latest_step()}) is the last good state. Lower optim.lr, set "
          "optim.grad_clip_norm, or check the input"
        )
      pending.append({k: float(v) for k, v in metrics.items()})
      interval_steps += 1
      bar.update(1)
      if step % config.log_every_steps == 0 or step == total_steps:
        elapsed = time.perf_counter() - interval_start
        skipped = int(np.sum(multihost_utils.process_allgather(np.int64(train_iter.num_skipped))))
        summary = {f"train/{k}": v for k, v in _host_mean(pending).items()}
        summary.update(
          {
            "train/examples_per_sec": interval_steps * config.batch_size / elapsed,
            "train/epoch": step / steps_per_epoch,
            "train/skipped_audio": skipped,
          }
        )
        writer.write(step, summary)
        bar.set_postfix(loss=f"{summary['train/loss']:.4f}")
        pending, interval_start, interval_steps = [], time.perf_counter(), 0
      epoch_end = step % steps_per_epoch == 0
      epoch = step // steps_per_epoch
      if epoch_end and wa_enabled and config.wa_start <= epoch <= config.wa_end:
        state = wa_update(state)
      eval_now = (
        (epoch_end and epoch % config.evals.every_epochs == 0)
        or (config.evals.every_steps > 0 and step % config.evals.every_steps == 0)
        or step == total_steps
      )
      if eval_now:
        result, predictions = run_eval(valid_evaluator, state["params"], step, "valid")
        if config.evals.save_scores:
          save_scores(predictions, step)
        if ensemble_eval:
          scores, targets, index = predictions
          state = ensemble_add_update(state, scores, index)
          cum = ensemble_figures(state, targets, index)
          state = ensemble_track_update(state, np.float32(cum[cum_metric]), np.int32(step))
          result = {**result, **cum}
        log_eval(result, step, "valid")
        state = track_update(state, np.float32(result[select_metric]), np.int32(step))
        stopped_early = early_stop(state)
        interval_start = time.perf_counter()
      if (
        epoch_end
        or step % config.checkpoint_every_steps == 0
        or step == total_steps
        or stopped_early
      ):
        ckpt.save(step, state, train_iter)
      if stopped_early:
        logging.info(
          "early stop at step %d: no better valid %s in %d evaluations (best at step %d)",
          step,
          select_metric,
          patience,
          int(jax.device_get(state["best_step"])),
        )
  except NonFiniteLossError as e:
    logging.error("%s", e)
    writer.close()
    bar.close()
    ckpt.close()
    raise
  bar.close()

  # ----------------------------------------------------------------------------------------------
  # The choice on valid, the one test evaluation, export.
  # ----------------------------------------------------------------------------------------------
  last_step = int(jax.device_get(state["step"]))
  candidates: dict[str, tuple[Any, int]] = {}  # name -> (params, step)
  if config.select.model in ("best", "wa") and wa_enabled:
    if int(jax.device_get(state["wa_count"])) > 0:
      candidates["wa"] = (state["wa_params"], last_step)
    else:
      logging.warning(
        "weight averaging over epochs %d-%d saw no epoch end (training ran %d epochs); no "
        "averaged model",
        config.wa_start,
        config.wa_end,
        last_step // steps_per_epoch,
      )
  if keep_best:
    candidates["best"] = (state["best_params"], int(jax.device_get(state["best_step"])))
  if config.select.model == "last":
    candidates["last"] = (state["params"], last_step)
  if not candidates:
    raise ValueError("config.select.model='wa' but no weight average was formed; see the warning")
  valid = {}
  for name, (params, _) in candidates.items():
    valid[name], (_, valid_targets, valid_index) = run_eval(
      valid_evaluator, params, last_step, f"valid_{name}"
    )
    log_eval(valid[name], last_step, f"valid_{name}")
  # Ties go to the first candidate in SELECT_MODELS order ('best' before 'wa').
  chosen = max(sorted(candidates, key=SELECT_MODELS.index), key=lambda n: valid[n][select_metric])
  chosen_params, chosen_step = candidates[chosen]
  selected = {"model": chosen, "step": chosen_step, "metric": select_metric}
  logging.info(
    "chosen on valid: %s (step %d, valid %s %.4f)",
    chosen,
    chosen_step,
    select_metric,
    valid[chosen][select_metric],
  )
  results = {
    "valid": valid[chosen],
    "selected": selected,
    "candidates": valid,
    "steps": last_step,
    "stopped_early": stopped_early,
    "num_params": num_params,
  }
  ens = jax.device_get(state["checkpoint_ensemble"]) if ensemble_eval else None
  if ens is not None and ens["count"] > 0:
    results["checkpoint_ensemble"] = {
      **checkpoint_ensemble.figures(ens["sum"], int(ens["count"]), valid_targets, valid_index),
      "evaluations": int(ens["count"]),
      f"best_{cum_metric}": float(ens["best_value"]),
      f"best_{cum_metric}_step": int(ens["best_step"]),
    }
  if _has_split(config.test.input):
    test_evaluator = evaluate.Evaluator(
      model, config.test.input, mesh, config.evals.batch_size, single_label=single_label
    )
    if test_evaluator.class_mids != valid_evaluator.class_mids:
      raise ValueError("config.test.input's label CSV differs from config.evals.input's")
    results["test"] = run_eval(test_evaluator, chosen_params, last_step, "test")[0]
    log_eval(results["test"], last_step, "test")
  _export(
    os.path.join(workdir, checkpointing.EXPORT_DIR),
    model_config,
    chosen_params,
    mesh,
    # label_kind: how `predict` turns the logits into probabilities (sigmoid or softmax).
    training={**selected, "valid": valid[chosen], "label_kind": loss_cfg.label_kind},
  )
  if is_main:
    files.write_json(os.path.join(workdir, RESULTS_FILE), results)
  writer.close()
  ckpt.close()
  return results


def _initialize_distributed() -> None:
  if _COORDINATOR.value or _NUM_PROCESSES.value is not None or _PROCESS_ID.value is not None:
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def setup_run() -> None:
  """Distributed init, logging and the compilation cache, from the flags (also used by
  `experiments.quickstart_seeds`, which shares these flags)."""
  _initialize_distributed()
  logging_utils.setup_logging()
  if _COMPILATION_CACHE.value and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", _COMPILATION_CACHE.value)


def resolved_config() -> ml_collections.ConfigDict:
  """The --config config (a UsageError when none was given)."""
  if _CONFIG.value is None:
    raise app.UsageError("--config is required")
  return _CONFIG.value


def resolved_workdir(config: ml_collections.ConfigDict) -> str:
  """--workdir, else config.workdir."""
  return _WORKDIR.value or config.workdir


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  setup_run()
  config = resolved_config()
  workdir = resolved_workdir(config)
  try:
    if "quickstart" in config:
      quickstart.run(config, workdir, train_and_evaluate)
    elif "two_stage" in config:
      two_stage.run(config, workdir, train_and_evaluate)
    else:
      train_and_evaluate(config, workdir)
  except NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)  # Exits with main's return value.
