"""The frozen distillation teacher and its optional on-disk logits cache.

Teacher weights come from a converted checkpoint folder (`config.json` + `params/`, as written by
`convert_torch` or `dass_jax.save_converted`) or from a work directory of `experiments.train`,
which exports the model it chose on its validation split as such a folder (`export/`). The
teacher is applied inside the student's train step under `jax.lax.stop_gradient` with
`train=False`; its params are an argument of the step, never part of the optimizer or of the
student's checkpoints, and are reloaded from their folder at every (re)start.

What the teacher sees. The batch entry named by the teacher's input kind (`dass_jax.models.MODELS`:
"fbank" or "waveform"; `dass_jax.data.request_inputs` asks the pipeline for the entries the
student and an online teacher read). An fbank teacher (AST, DASS) takes the batch's fbank: mixup,
SpecAugment and noise included, i.e. an fbank student's own input. A waveform teacher (Dasheng)
takes the batch's "waveform": the same (mixed) audio the fbank was made from, over the span of its
frames (`dass_jax.data`); SpecAugment's masks and the fbank noise act on the fbank only, so such
a teacher sees the clip unmasked. A waveform student (`experiments.train`) also reads the
unmasked waveform, so with an fbank teacher only the teacher sees SpecAugment and noise.

Logits cache. DASS runs the teacher on the student's *augmented* input (mixup, SpecAugment,
noise), so the teacher's logits differ every epoch. A cache holds one logits row per datafile row,
computed on the clean clip, so it reproduces the online teacher only when the teacher's input is
not augmented: for an fbank teacher data.mixup == 0, freqm == 0, timem == 0 and noise off; for a
waveform teacher data.mixup == 0 (the other three act on the student's fbank only, so the student
can keep them); `check_cache_allowed` refuses it otherwise. The cache file is `<path>` (float32
(rows, classes) .npy) plus `<path>.json` naming the teacher, datafile and frames it was computed
for; a mismatch is an error, not a silent reuse.
"""

from __future__ import annotations

import json
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
from dass_jax.checkpoint import CONFIG_FILE, is_converted, load_config
from experiments import checkpointing, sharding


def resolve_dir(path: str) -> str:
  """The converted-checkpoint folder for `path` (itself, or a train workdir's export)."""
  root = Path(path)
  if is_converted(root):
    return str(root)
  if is_converted(root / checkpointing.EXPORT_DIR):
    return str(root / checkpointing.EXPORT_DIR)
  raise FileNotFoundError(
    f"teacher {path!r} is neither a converted checkpoint folder (with {CONFIG_FILE}) nor a "
    f"finished experiments.train work directory (with {checkpointing.EXPORT_DIR}/)"
  )


def input_kind(path: str) -> str:
  """The input kind of the teacher at `path` ('fbank' or 'waveform'), which is its batch key."""
  return models.spec_of(load_config(resolve_dir(path))).input_kind


def load(
  path: str, mesh, rules, min_fsdp_size: int, **config_overrides
) -> tuple[Any, Any, Any, str]:
  """Loads the teacher as (module, params placed on `mesh` by `rules`, model config, folder)."""
  folder = resolve_dir(path)
  module, params, config = dass_jax.load_model(folder, **config_overrides)
  shardings = sharding.tree_shardings(params, mesh, rules, min_fsdp_size)
  params = jax.tree.map(
    lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx, x=x: np.asarray(x)[idx]),
    params,
    shardings,
  )
  return module, params, config, folder


# The data augmentations that change what a teacher of each input kind sees.
TEACHER_AUGMENTATIONS = {"fbank": ("mixup", "freqm", "timem", "noise"), "waveform": ("mixup",)}


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


def _meta(folder: str, data_cfg: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
  return {
    "teacher": os.path.abspath(folder),
    "datafile": os.path.abspath(data_cfg.datafile),
    "target_frames": int(data_cfg.target_frames),
    "num_classes": int(num_classes),
  }


def build_cache(
  path: str, module, params, folder: str, data_cfg: ml_collections.ConfigDict, mesh, batch_size: int
) -> None:
  """Runs the teacher over every row of the training datafile (clean input) and writes the cache.

  Every process takes part (the forward pass is sharded); process 0 writes `path` and its
  `.json` atomically. The teacher reads the batch entry of its input kind (see the module doc).
  """
  kind = models.spec_of(module.config).input_kind
  cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  cfg.batch_size = batch_size // jax.process_count()
  data.request_inputs(cfg, [kind])
  it = data.make_eval_iterator(
    cfg, shard_index=jax.process_index(), shard_count=jax.process_count()
  )
  batch_shard = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  forward = jax.jit(
    lambda p, x: module.apply({"params": p}, x, train=False).astype(jnp.float32),
    out_shardings=replicated,
  )
  gather = jax.jit(lambda x: x, out_shardings=replicated)
  num_rows = len(data.read_datafile(cfg.datafile))
  logits = np.full((num_rows, it.num_classes), np.nan, np.float32)
  for batch in it:
    out = np.asarray(
      forward(params, jax.make_array_from_process_local_data(batch_shard, batch[kind]))
    )
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
    # The metadata last: a cache whose .json is missing or names other settings is refused.
    files.save_npy(path, logits)
    files.write_json(f"{path}.json", {**_meta(folder, cfg, it.num_classes), "num_rows": num_rows})
  multihost_utils.sync_global_devices("teacher_cache_written")


def load_cache(
  path: str, folder: str, data_cfg: ml_collections.ConfigDict, num_classes: int
) -> np.ndarray:
  """The cached (rows, classes) logits, after checking they belong to this teacher and data."""
  meta_path = f"{path}.json"
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"teacher cache {path} has no {meta_path}; delete it to rebuild")
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  want = _meta(folder, data_cfg, num_classes)
  diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
  if diff:
    raise ValueError(
      f"teacher cache {path} was built for other settings (cached, wanted): "
      f"{diff}; delete it to rebuild"
    )
  logits = np.load(path)
  if logits.shape != (meta["num_rows"], num_classes):
    raise ValueError(
      f"teacher cache {path} has shape {logits.shape}, its metadata says "
      f"({meta['num_rows']}, {num_classes})"
    )
  return logits
