"""Distillation teachers: frozen checkpoints (one, or an ensemble) or the student's own EMA.

`config.teacher` (`experiments/configs/common.py`) says which:

  kind='checkpoint' (default)
    `path`: one teacher, a converted checkpoint folder of any registered model (AST, DASS, AuM,
    Dasheng, ...; `config.json` + `params/`, as written by `convert_torch` or
    `dass_jax.save_converted`), a work directory of `experiments.train` (its `export/`, the model
    it chose on its validation split), or a published name / `hf://` id / URL (converted on first
    use, as `dass_jax.load_model` does; needs the [torch] extra). With `cache` and `dtype` (the
    teacher's compute dtype; '' keeps its own). No path and no ensemble: no distillation.
    `ensemble`: several teachers, `{name: {"path", "cache", "dtype"}}` (each field as above; a
    config file names them, e.g. `experiments/configs/dass_v2_ensemble.py`). Each teacher reads
    the batch entry of its own input kind and its logits are combined by `combine`: 'logits' (the
    mean of the logits) or 'probs' (the logits whose distillation target is the mean of the
    teachers' targets; `experiments.losses.combine_teacher_logits`).
  kind='ema'
    Self-distillation from an exponential moving average of the student (DASS
    `--kd_teach_type self`): the EMA starts as a copy of the student's initial params (after
    `init_from` and the head bias), the step's teacher logits come from it (`train=False`, on the
    student's input), and after every optimizer update it moves towards the updated params,
    `t = m t + (1 - m) s` with m = `ema_momentum` (DASS `--kd_EMA_momentum`, default 0.999),
    over every param (DASS: `parameters()`). It lives in the train state as `ema_params`,
    sharded exactly as `params`, checkpointed and resumed with it.

A checkpoint teacher is applied inside the student's train step under `jax.lax.stop_gradient`
with `train=False`; its params are an argument of the step, never part of the optimizer or of the
student's checkpoints, and are reloaded from their folder at every (re)start.

What a teacher sees. The batch entry named by its input kind (`dass_jax.models.MODELS`: "fbank"
or "waveform"; `dass_jax.data.request_inputs` asks the pipeline for the entries the student and
the online teachers read). An fbank teacher (AST, DASS) takes the batch's fbank: mixup,
SpecAugment and noise included, i.e. an fbank student's own input. A waveform teacher (Dasheng)
takes the batch's "waveform": the same (mixed) 16 kHz audio the fbank was made from, over the span
of its frames (`dass_jax.data`); SpecAugment's masks and the fbank noise act on the fbank only, so
such a teacher sees the clip unmasked. A waveform student (`experiments.train`) also reads the
unmasked waveform, so with an fbank teacher only the teacher sees SpecAugment and noise. A teacher
whose position embeddings fix its input length (AST, AuM) must have been built for the training
clips' frames.

Logits caches (one per teacher, combined at read time). DASS runs the teacher on the student's
*augmented* input (mixup, SpecAugment, noise), so the teacher's logits differ every epoch. A cache
holds one logits row per datafile row, computed on the clean clip, so it reproduces the online
teacher only when that teacher's input is not augmented: for an fbank teacher data.mixup == 0,
freqm == 0, timem == 0 and noise off; for a waveform teacher data.mixup == 0 (the other three act
on the student's fbank only, so the student can keep them); `check_cache_allowed` refuses it
otherwise. The cache file is `<cache>` (float32 (rows, classes) .npy) plus `<cache>.json` naming the
teacher folder, its parameter hash (`params_sha256`: `read_metadata(folder)["params_sha256"]`,
or `dass_jax.checkpoint.params_digest` of the loaded params for folders written before it was
recorded) and compute dtype, the datafile and frames it was computed for. A cache whose teacher
hash or dtype differs (the teacher was retrained in place), or that has no metadata (an
interrupted build), is rebuilt, with a log line saying why; one built for another teacher folder,
datafile, frames or label set is an error, not a silent reuse.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

import dass_jax
from dass_jax import data, files, models
from dass_jax.checkpoint import (
  CONFIG_FILE,
  is_converted,
  is_source_name,
  load_config,
  params_digest,
  read_metadata,
)
from experiments import checkpointing, losses, sharding

KINDS = ("checkpoint", "ema")
# The fields of one teacher (the `path` shorthand's or an ensemble entry's).
MEMBER_FIELDS = ("path", "cache", "dtype")
# The name of the single teacher given by `teacher.path`.
SINGLE = "teacher"
# The data augmentations that change what a teacher of each input kind sees.
TEACHER_AUGMENTATIONS = {"fbank": ("mixup", "freqm", "timem", "noise"), "waveform": ("mixup",)}
# Cache metadata that identifies the teacher's weights and numerics: a change rebuilds the cache.
_TEACHER_IDENTITY = ("params_sha256", "dtype")


def resolve_dir(path: str) -> str:
  """The converted-checkpoint folder for `path` (itself, a train workdir's export, or the folder
  a published name, `hf://` id or URL is converted into on first use)."""
  root = Path(path)
  if is_converted(root):
    return str(root)
  if is_converted(root / checkpointing.EXPORT_DIR):
    return str(root / checkpointing.EXPORT_DIR)
  if is_source_name(path):
    from convert_torch.converted import converted_folder

    return str(converted_folder(path))
  raise FileNotFoundError(
    f"teacher {path!r} is neither a converted checkpoint folder (with {CONFIG_FILE}), a "
    f"finished experiments.train work directory (with {checkpointing.EXPORT_DIR}/), nor a "
    "published name, hf:// id or URL"
  )


def input_kind(path: str) -> str:
  """The input kind of the teacher at `path` ('fbank' or 'waveform'), which is its batch key."""
  return models.spec_of(load_config(resolve_dir(path))).input_kind


def is_ema(cfg: ml_collections.ConfigDict) -> bool:
  """Whether a `config.teacher` section asks for the student's EMA as teacher (validated)."""
  if cfg.kind not in KINDS:
    raise ValueError(f"config.teacher.kind must be one of {KINDS}, got {cfg.kind!r}")
  if cfg.kind != "ema":
    return False
  given = {k: cfg[k] for k in ("path", "cache") if cfg[k]}
  if given or len(cfg.ensemble):
    raise ValueError(
      "config.teacher.kind='ema' distils from the student's own moving average: leave "
      f"teacher.path, teacher.cache and teacher.ensemble empty (got {given or 'an ensemble'})"
    )
  if not 0.0 <= cfg.ema_momentum <= 1.0:
    raise ValueError(f"config.teacher.ema_momentum must be in [0, 1], got {cfg.ema_momentum}")
  return True


def members(cfg: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The checkpoint teachers of a `config.teacher` section: {name: {path, cache, dtype}}.

  `teacher.path` gives one teacher named SINGLE (with `teacher.cache`, `teacher.dtype`);
  `teacher.ensemble` one per entry; neither (or kind 'ema') none.
  """
  if is_ema(cfg):
    return {}
  if cfg.combine not in losses.ENSEMBLE_COMBINES:
    raise ValueError(
      f"config.teacher.combine must be one of {losses.ENSEMBLE_COMBINES}, got {cfg.combine!r}"
    )
  ensemble = cfg.ensemble.to_dict()
  if cfg.path and ensemble:
    raise ValueError("set config.teacher.path (one teacher) or config.teacher.ensemble, not both")
  if cfg.path:
    ensemble = {SINGLE: {k: cfg[k] for k in MEMBER_FIELDS}}
  elif cfg.cache or cfg.dtype:
    raise ValueError(
      "config.teacher.cache/dtype belong to config.teacher.path; an ensemble's teachers set "
      "their own (config.teacher.ensemble.<name>.cache)"
    )
  out = {}
  for name, fields in ensemble.items():
    unknown = sorted(set(fields) - set(MEMBER_FIELDS))
    if unknown:
      raise ValueError(f"teacher {name!r}: unknown fields {unknown}; known: {MEMBER_FIELDS}")
    if not fields.get("path"):
      raise ValueError(f"teacher {name!r} has no path")
    out[name] = ml_collections.ConfigDict({k: str(fields.get(k, "")) for k in MEMBER_FIELDS})
  caches = [m.cache for m in out.values() if m.cache]
  if len(set(caches)) != len(caches):
    raise ValueError(f"every teacher needs a cache file of its own, got {caches}")
  return out


def check_cache_allowed(data_cfg: ml_collections.ConfigDict, kind: str = "fbank") -> None:
  """Raises ValueError when the teacher's input is augmented (see the module docstring)."""
  augmented = {
    name: data_cfg.get(name) for name in TEACHER_AUGMENTATIONS[kind] if data_cfg.get(name)
  }
  if augmented:
    raise ValueError(
      f"a teacher logits cache reproduces the online teacher only without augmentation, but "
      f"the {kind} teacher's input uses {augmented}; set them to 0/False or drop teacher.cache "
      "(DASS runs the teacher on the augmented input)"
    )


@dataclasses.dataclass
class Teacher:
  """One frozen checkpoint teacher of a run.

  Attributes:
    name: its name (SINGLE, or the ensemble entry's).
    folder: its converted-checkpoint folder.
    module: the Flax module.
    config: its model config.
    input_kind: the batch entry it reads ('fbank' or 'waveform').
    digest: its parameter hash (sha256 hex).
    params: its params placed on the mesh, or None when its logits come from `cache`.
    cache: (rows, classes) float32 logits per training datafile row, or None (online).
  """

  name: str
  folder: str
  module: Any
  config: Any
  input_kind: str
  digest: str
  params: Any = None
  cache: np.ndarray | None = None

  @property
  def batch_key(self) -> str:
    """The batch entry holding its cached logits."""
    return cache_key(self.name)


def cache_key(name: str) -> str:
  """The batch entry that holds the cached logits of the teacher called `name`."""
  return f"teacher_logits_{name}"


def load(name: str, path: str, mesh, rules, min_fsdp_size: int, dtype: str = "") -> Teacher:
  """Loads a teacher, params placed on `mesh` by `rules` (`sharding.tree_shardings`)."""
  folder = resolve_dir(path)
  overrides = {"dtype": dtype} if dtype else {}
  module, params, config = dass_jax.load_model(folder, **overrides)
  digest = read_metadata(folder).get("params_sha256") or params_digest(params)
  shardings = sharding.tree_shardings(params, mesh, rules, min_fsdp_size)
  params = jax.tree.map(
    lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx, x=x: np.asarray(x)[idx]),
    params,
    shardings,
  )
  kind = models.spec_of(config).input_kind
  return Teacher(name, folder, module, config, kind, digest, params=params)


def prepare(
  cfg: ml_collections.ConfigDict,
  train_cfg: ml_collections.ConfigDict,
  num_classes: int,
  mesh,
  rules,
  min_fsdp_size: int,
  batch_size: int,
) -> list[Teacher]:
  """The checkpoint teachers of `config.teacher` (`members`), loaded and checked against the
  data, with their caches built (when missing or stale) and loaded; a cached teacher keeps no
  params. `batch_size` is the global batch of the cache-building passes."""
  out = []
  for name, member in members(cfg).items():
    teacher = load(name, member.path, mesh, rules, min_fsdp_size, member.dtype)
    if teacher.config.num_classes != num_classes:
      raise ValueError(
        f"teacher {teacher.folder} has {teacher.config.num_classes} classes, the data {num_classes}"
      )
    length = models.fixed_length(teacher.config)
    if length is not None and length != int(train_cfg.target_frames):
      raise ValueError(
        f"teacher {teacher.folder} ({teacher.config.model_type}) takes max_length={length} "
        f"frames but config.input.target_frames={train_cfg.target_frames}"
      )
    logging.info(
      "teacher %s: %s (%s, takes %s)",
      name,
      teacher.folder,
      type(teacher.config).__name__,
      teacher.input_kind,
    )
    if member.cache:
      teacher.cache = ensure_cache(member.cache, teacher, train_cfg, mesh, batch_size, num_classes)
      teacher.params = None
    out.append(teacher)
  return out


def cached_entries(teachers: list[Teacher], index: np.ndarray) -> dict[str, np.ndarray]:
  """The batch entries of the cached teachers' logits for datafile rows `index` (b,)."""
  return {t.batch_key: t.cache[index] for t in teachers if t.cache is not None}


def online_params(teachers: list[Teacher]) -> dict[str, Any]:
  """{name: params} of the teachers applied in the step (the step's teacher argument)."""
  return {t.name: t.params for t in teachers if t.cache is None}


def step_logits(
  teachers: list[Teacher],
  params: dict[str, Any],
  batch: dict[str, jax.Array],
  loss_cfg: ml_collections.ConfigDict,
  combine: str,
) -> jax.Array:
  """The (batch, classes) teacher logits of a train step (inside jit): each teacher's own (online
  on its input kind's batch entry, or its cached rows), combined by `combine`."""
  logits = []
  for t in teachers:
    if t.cache is None:
      out = t.module.apply({"params": params[t.name]}, batch[t.input_kind], train=False)
    else:
      out = batch[t.batch_key]
    logits.append(jax.lax.stop_gradient(out.astype(jnp.float32)))
  return losses.combine_teacher_logits(
    logits, combine, loss_cfg.kd_kind, loss_cfg.temperature, loss_cfg.teacher_func
  )


def ema_update(ema: Any, params: Any, momentum: float) -> Any:
  """One EMA step, leaf by leaf: `momentum * ema + (1 - momentum) * params`."""
  return jax.tree.map(lambda t, s: momentum * t + (1.0 - momentum) * s, ema, params)


def _meta(teacher: Teacher, data_cfg: ml_collections.ConfigDict, num_classes: int) -> dict:
  return {
    "teacher": os.path.abspath(teacher.folder),
    "params_sha256": teacher.digest,
    "dtype": str(getattr(teacher.config, "dtype", "")),
    "datafile": os.path.abspath(data_cfg.datafile),
    "target_frames": int(data_cfg.target_frames),
    "num_classes": int(num_classes),
  }


def build_cache(
  path: str, teacher: Teacher, data_cfg: ml_collections.ConfigDict, mesh, batch_size: int
) -> None:
  """Runs the teacher over every row of the training datafile (clean input) and writes the cache.

  Every process takes part (the forward pass is sharded); process 0 writes `path` and its
  `.json` atomically. The teacher reads the batch entry of its input kind (see the module doc).
  """
  cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  cfg.batch_size = batch_size // jax.process_count()
  data.request_inputs(cfg, [teacher.input_kind])
  it = data.make_eval_iterator(
    cfg, shard_index=jax.process_index(), shard_count=jax.process_count()
  )
  batch_shard = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  forward = jax.jit(
    lambda p, x: teacher.module.apply({"params": p}, x, train=False).astype(jnp.float32),
    out_shardings=replicated,
  )
  gather = jax.jit(lambda x: x, out_shardings=replicated)
  num_rows = len(data.read_datafile(cfg.datafile))
  logits = np.full((num_rows, it.num_classes), np.nan, np.float32)
  for batch in it:
    x = jax.make_array_from_process_local_data(batch_shard, batch[teacher.input_kind])
    out = np.asarray(forward(teacher.params, x))
    index = np.asarray(gather(jax.make_array_from_process_local_data(batch_shard, batch["index"])))
    mask = np.asarray(gather(jax.make_array_from_process_local_data(batch_shard, batch["mask"])))
    keep = mask > 0
    logits[index[keep]] = out[keep]
  missing = int(np.isnan(logits).any(axis=1).sum())
  if missing:
    raise RuntimeError(
      f"teacher cache: {missing} training rows could not be read; fix or drop "
      "them from the datafile before caching"
    )
  if jax.process_index() == 0:
    # The metadata last: a cache whose .json is missing or names other settings is not used.
    files.save_npy(path, logits)
    files.write_json(f"{path}.json", {**_meta(teacher, cfg, it.num_classes), "num_rows": num_rows})
  multihost_utils.sync_global_devices("teacher_cache_written")


def _stale_reason(path: str, want: dict[str, Any]) -> str | None:
  """Why the cache at `path` must be (re)built for a teacher/data described by `want`, or None
  when it can be used; raises ValueError when it belongs to another teacher folder or data."""
  meta_path = f"{path}.json"
  if not os.path.isfile(path):
    return "it does not exist yet"
  if not os.path.isfile(meta_path):
    return f"it has no {os.path.basename(meta_path)} (an interrupted build)"
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  other = {
    k: (meta.get(k), v) for k, v in want.items() if k not in _TEACHER_IDENTITY and meta.get(k) != v
  }
  if other:
    raise ValueError(
      f"teacher cache {path} was built for other settings (cached, wanted): {other}; give this "
      "run a cache file of its own or delete it to rebuild"
    )
  changed = {k: (meta.get(k), want[k]) for k in _TEACHER_IDENTITY if meta.get(k) != want[k]}
  if changed:
    return f"the teacher changed since it was built (cached, now): {changed} (retrained in place?)"
  return None


def ensure_cache(
  path: str,
  teacher: Teacher,
  data_cfg: ml_collections.ConfigDict,
  mesh,
  batch_size: int,
  num_classes: int,
) -> np.ndarray:
  """The teacher's cached (rows, classes) logits at `path`, built first when missing or stale
  (see the module docstring); every process decides alike from the same files."""
  reason = _stale_reason(path, _meta(teacher, data_cfg, num_classes))
  if reason is not None:
    logging.info("building the teacher logits cache %s for %s: %s", path, teacher.name, reason)
    build_cache(path, teacher, data_cfg, mesh, batch_size)
  with open(f"{path}.json", encoding="utf-8") as f:
    num_rows = json.load(f)["num_rows"]
  logits = np.load(path)
  if logits.shape != (num_rows, num_classes):
    raise ValueError(
      f"teacher cache {path} has shape {logits.shape}, its metadata says ({num_rows}, "
      f"{num_classes})"
    )
  return logits
