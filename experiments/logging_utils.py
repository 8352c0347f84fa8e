"""Training logs: a JSON-lines file, TensorBoard events (tensorboardX) and a tqdm progress bar.

Only the writing process (process 0 by default) creates files; the others get no-op writers, so
callers never branch on the process index. Files in the work directory:

  metrics.jsonl   one JSON object per `write` call: {"step": s, "time": unix_s, name: value, ...}
  tensorboard/    tensorboardX event files with the same scalars
  train_config.json  the resolved config (`write_config`)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from dass_jax import files

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
TRAIN_CONFIG_FILE = "train_config.json"


def _scalar(value: Any) -> float | int:
  value = np.asarray(value)
  if value.size != 1:
    raise ValueError(f"metric values must be scalars, got shape {value.shape}")
  value = value.reshape(()).item()
  return value if isinstance(value, int) else float(value)


class MetricWriter:
  """Writes scalar metrics to `workdir/metrics.jsonl` and TensorBoard (when `enabled`)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._file = None
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      # Open for the writer's lifetime; close() closes it.
      self._file = open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8")  # noqa: SIM115
      self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: _scalar(v) for k, v in metrics.items()}
    self._file.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
    self._file.flush()
    for name, value in values.items():
      self._tb.add_scalar(name, value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._tb.close()
      self._file = self._tb = None


def write_config(workdir: str, config: Any, enabled: bool = True) -> None:
  """Writes the resolved config (an `ml_collections.ConfigDict`) as `workdir/config.json`."""
  if not enabled:
    return
  files.write_text(
    os.path.join(workdir, TRAIN_CONFIG_FILE),
    config.to_json_best_effort(indent=2, sort_keys=True) + "\n",
  )


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of `workdir/metrics.jsonl` (empty if absent)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def progress_bar(total: int, initial: int, enabled: bool = True, desc: str = "train"):
  """A tqdm bar over training steps (disabled on non-writing processes)."""
  return tqdm(
    total=total,
    initial=initial,
    desc=desc,
    disable=not enabled,
    dynamic_ncols=True,
    mininterval=2.0,
    file=sys.stderr,
    unit="step",
  )


def setup_logging(level: int = logging.INFO) -> None:
  """Timestamped Python logging to stderr, with the process index in multi-process runs."""
  prefix = f"[p{jax.process_index()}] " if jax.process_count() > 1 else ""
  logging.basicConfig(
    level=level,
    force=True,
    format=f"%(asctime)s {prefix}%(levelname)s %(message)s",
    datefmt="%H:%M:%S",
  )
  # orbax and grain log every checkpoint operation at INFO through absl.
  logging.getLogger("absl").setLevel(max(level, logging.WARNING))
