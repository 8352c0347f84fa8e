"""Shared pieces of the training configs: the argument parser and the base config.

Every config file defines `get_config(arg=None)`; `arg` is the text after ':' in
`--config experiments/configs/file.py:arg`, parsed by `parse_arg` into typed fields, e.g.
`small,balanced` or `size=medium,set=full,runlocal`.
"""

from __future__ import annotations

import ml_collections

from dass_jax import data
from experiments import optim


def parse_arg(arg: str | None, lazy: bool = False, **spec) -> ml_collections.ConfigDict:
  """Parses 'a=1,b,c=x' into a ConfigDict typed by the defaults in `spec`.

  A bare name sets a boolean field to True, or, with `lazy`, a bare value that is one of the
  choices of a string field is assigned to that field: with spec size='small' and
  `choices={'size': ('small', 'medium')}` the text 'medium' sets size. Unknown names raise.
  """
  choices = spec.pop("choices", {})
  out = ml_collections.ConfigDict(spec)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    if "=" in item:
      name, value = item.split("=", 1)
    elif lazy and any(item in options for options in choices.values()):
      name = next(k for k, options in choices.items() if item in options)
      value = item
    else:
      name, value = item, "True"
    if name not in spec:
      raise ValueError(f"unknown config argument {name!r} in {arg!r}; known: {sorted(spec)}")
    default = spec[name]
    if isinstance(default, bool):
      if value not in ("True", "False", "true", "false", "1", "0"):
        raise ValueError(f"config argument {name} takes True/False, got {value!r}")
      out[name] = value in ("True", "true", "1")
    else:
      out[name] = type(default)(value)
    if name in choices and out[name] not in choices[name]:
      raise ValueError(f"config argument {name} must be one of {choices[name]}, got {out[name]!r}")
  return out


def base_config() -> ml_collections.ConfigDict:
  """Every field `experiments.train` reads, with the AST/DASS AudioSet defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""  # --workdir overrides; required one way or the other.
  c.num_epochs = 25
  c.total_steps = 0  # > 0: stop after this many steps (tests, smoke runs).
  c.batch_size = 12  # global, over all processes and devices.

  c.model_type = "dass"  # a key of dass_jax.models.MODELS: 'dass', 'ast', 'aum', ...
  c.model = ml_collections.ConfigDict({})  # fields of its config (DassConfig, AumConfig, ...)
  # A recipe's own architecture for training from scratch (fields of the model_type's config),
  # used only without init_from: a checkpoint given by --config.init_from replaces it.
  c.scratch_model = ml_collections.ConfigDict({})
  # Converted checkpoint to start from (fine-tuning): a folder or a published name / hf:// id
  # (converted on first use). Its architecture is kept, config.model fields override it.
  c.init_from = ""
  c.reinit_head = False  # re-initialise the classifier head after init_from
  # Classifier bias of a fresh head: 'zeros' (the models' init) or 'prior' (the training labels'
  # log-odds; for training from scratch).
  c.head_bias_init = "zeros"

  c.input = data.default_config()  # batch_size is set from c.batch_size per process
  c.input.num_epochs = None
  # The validation split: evaluated during training; every choice (best checkpoint, early stop,
  # weight average or not) is made on it.
  c.evals = ml_collections.ConfigDict(
    {
      "input": data.default_config(mixup=0.0, freqm=0, timem=0),
      "batch_size": 24,
      "every_epochs": 1,  # evaluate after every n-th epoch (and at the last step)
      "every_steps": 0,  # > 0: also after every n-th step
      "cache": False,  # keep the eval features in memory after the first pass (small sets)
      # Checkpoint ensemble: also report valid/cum_* (the mean prediction of every evaluation so
      # far; experiments/checkpoint_ensemble.py).
      "checkpoint_ensemble": True,
      "save_scores": False,  # write each evaluation's scores to eval/valid_step<N>_scores.npz
    }
  )
  # The test split: evaluated once, at the end, on the model chosen on valid (datafile '' = none).
  c.test = ml_collections.ConfigDict({"input": data.default_config(mixup=0.0, freqm=0, timem=0)})
  c.select = ml_collections.ConfigDict(
    {
      # The valid metric that chooses: 'mAP' or 'accuracy' ('' = accuracy for label_kind 'ce',
      # else mAP).
      "metric": "",
      # 'best': the best on valid of every evaluated checkpoint and the weight average;
      # 'last': the last step's params; 'wa': the weight average.
      "model": "best",
      # > 0: stop training after this many evaluations without a better valid metric.
      "patience": 0,
    }
  )

  c.loss = ml_collections.ConfigDict(
    {
      "label_kind": "bce",  # 'bce' multi-label, 'ce' single-label
      "kd_kind": "kldiv",
      "kd_weight": 0.5,
      "temperature": 1.0,
      "teacher_func": "sigmoid",  # 'bce' KD targets: sigmoid(t / T) or softmax(t / T)
    }
  )
  # Distillation teachers (experiments/teacher.py; docs/distillation.md).
  c.teacher = ml_collections.ConfigDict(
    {
      # 'checkpoint': frozen converted checkpoint(s), `path` or `ensemble` (neither = no KD);
      # 'ema': the student's own exponential moving average (self-distillation).
      "kind": "checkpoint",
      "path": "",  # converted checkpoint or experiments.train workdir (one teacher)
      "cache": "",  # its logits .npy (built on first use, rebuilt if it changed; no augmentation)
      "dtype": "",  # override its compute dtype ('' keeps it)
      # Several teachers: {name: {"path", "cache", "dtype"}} (set in a config file).
      "ensemble": ml_collections.ConfigDict({}),
      "combine": "logits",  # an ensemble's mean of 'logits' or of 'probs' (KD targets)
      "ema_momentum": 0.999,  # kind 'ema': t = m t + (1 - m) s after every step (DASS)
    }
  )
  c.optim = optim.default_config()
  c.wa_start = 0  # weight averaging over epochs [wa_start, wa_end] (1-based);
  c.wa_end = 0  # 0 disables

  c.mesh = (("data", -1), ("fsdp", 1))
  c.sharding_rules = ((".*", "fsdp"),)
  c.fsdp_min_size = 4096  # leaves with fewer elements stay replicated
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  return c
