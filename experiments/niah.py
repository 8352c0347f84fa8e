r"""Audio needle in a haystack (NIAH): classification mAP of DASS and AST versus input duration.

    python -m experiments.niah --config experiments/configs/niah.py --workdir work_dirs/niah

Each evaluation clip (the needle, cropped to `needle_seconds`) is placed at each relative position
inside a haystack of each duration (zeros, white noise or babble at each SNR; see
`experiments.haystack`), the whole input is normalised as in training and classified in one pass,
and the mAP over the needles is computed against the needle's labels. `retained` is that mAP over
the mAP at the first (shortest, normally 10 s) duration for the same model, haystack, SNR and
position.

Models: `config.models` maps a name to a converted checkpoint folder or an `experiments.train` work
directory (`load_for_eval`). DASS takes any length. AST's position embeddings are resized to the
input's time-patch count with `dass_jax.models.ast.with_max_length` (bilinear over the (frequency,
time) patch grid, half-pixel centres, i.e. torch `F.interpolate(mode="bilinear",
align_corners=False)`; the frequency axis keeps its size, so only the time axis is stretched). AST
attention materialises (heads, tokens, tokens) scores, quadratic in duration, so AST runs only up to
`ast_max_duration_s`; DASS memory is linear in duration (batch 1 once a batch of `batch_frames`
frames holds a single input).

Work directory outputs: niah.csv (model, haystack, snr, duration_s, position, mAP, retained; snr
is empty for the zeros haystack), niah.png (mAP averaged over positions vs duration, log x, one
line per model and haystack/SNR) and niah_config.json.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import dass_jax
from dass_jax import data
from dass_jax.audio import load_audio
from dass_jax.constants import NUM_MEL_BINS, SAMPLE_RATE
from dass_jax.data import datafile as datafile_lib
from dass_jax.data import synthetic
from dass_jax.frontends import kaldi_fbank
from dass_jax.models import AstConfig, build_model
from dass_jax.models.ast import with_max_length
from experiments import haystack as haystack_lib
from experiments import metrics as metrics_lib
from experiments import teacher as teacher_lib

CSV_FILE, PLOT_FILE, STUDY_CONFIG_FILE = "niah.csv", "niah.png", "niah_config.json"
CSV_FIELDS = ("model", "haystack", "snr", "duration_s", "position", "mAP", "retained")


def load_for_eval(path: str) -> tuple[Any, Any, Any]:
  """(module, params, model config) from a converted checkpoint folder or a train work directory.

  A work directory resolves to its `export_wa/` (weight-averaged) or else `export/` folder, as the
  distillation teacher does (`experiments.teacher.resolve_dir`).
  """
  return dass_jax.load_model(teacher_lib.resolve_dir(path))


@dataclasses.dataclass(frozen=True)
class Clips:
  """Needle waveforms with their labels, and the clips reserved for babble.

  Attributes:
    needles: (samples,) float32 waveforms at 16 kHz, each at most needle_seconds long.
    targets: (needles, classes) float32 multi-hot labels.
    babble_pool: (samples,) float32 waveforms mixed into babble haystacks (never needles).
  """

  needles: list[np.ndarray]
  targets: np.ndarray
  babble_pool: list[np.ndarray]


def load_clips(config: ml_collections.ConfigDict) -> Clips:
  """Reads the eval datafile: the first `babble_pool` rows feed babble, the next `num_needles`
  rows are the needles (synthetic dataset of `config.data.synthetic` when no datafile is set)."""
  cfg = config.data
  datafile, label_csv = cfg.datafile, cfg.label_csv
  if not datafile:
    ds = synthetic.ensure_dataset(
      cfg.synthetic.cache_dir or None,
      **{k: v for k, v in cfg.synthetic.to_dict().items() if k != "cache_dir"},
    )
    datafile, label_csv = ds.eval_datafile, ds.label_csv
  labels = data.read_label_csv(label_csv)
  entries = data.read_datafile(datafile)
  pool, count = config.babble_pool, config.num_needles
  if pool + count > len(entries):
    raise ValueError(
      f"{datafile} has {len(entries)} rows; babble_pool + num_needles = {pool + count}"
    )
  max_samples = int(round(config.needle_seconds * SAMPLE_RATE))
  needle_rows = entries[pool : pool + count]
  targets = np.zeros((count, len(labels)), np.float32)
  for i, classes in enumerate(datafile_lib.label_indices(needle_rows, labels, datafile)):
    targets[i, list(classes)] = 1.0
  return Clips(
    needles=[load_audio(e.wav)[:max_samples] for e in needle_rows],
    targets=targets,
    babble_pool=[load_audio(e.wav) for e in entries[:pool]],
  )


class Classifier:
  """A loaded model applied to normalised fbank of any frame count it supports.

  `__call__` maps (batch, frames, 128) normalised fbank to (batch, classes) float32 logits. Each
  frame count gets its own jitted function (and, for AST, its own interpolated position
  embeddings), kept for the other haystacks.
  """

  def __init__(self, name: str, module, params, model_config, max_frames: int | None):
    self.name, self.max_frames = name, max_frames
    self._module, self._params, self._config = module, params, model_config
    self._is_ast = isinstance(model_config, AstConfig)
    self._by_frames: dict[int, tuple[Callable, Any]] = {}

  def supports(self, frames: int) -> bool:
    return self.max_frames is None or frames <= self.max_frames

  def _compiled(self, frames: int) -> tuple[Callable, Any]:
    if frames not in self._by_frames:
      module, params = self._module, self._params
      if self._is_ast:
        params, cfg = with_max_length(params, self._config, frames)
        module = build_model(cfg)
      forward = jax.jit(lambda p, x, m=module: m.apply({"params": p}, x, train=False))
      self._by_frames[frames] = (forward, params)
    return self._by_frames[frames]

  def __call__(self, fbank: np.ndarray) -> np.ndarray:
    forward, params = self._compiled(fbank.shape[1])
    return np.asarray(forward(params, fbank), np.float32)


def build_classifiers(config: ml_collections.ConfigDict) -> list[Classifier]:
  """One `Classifier` per `config.models` entry with a path; AST capped at ast_max_duration_s."""
  out = []
  ast_cap = haystack_lib.num_frames(int(round(config.ast_max_duration_s * SAMPLE_RATE)))
  for name, path in config.models.items():
    if not path:
      continue
    module, params, model_config = load_for_eval(path)
    cap = ast_cap if isinstance(model_config, AstConfig) else None
    out.append(Classifier(name, module, params, model_config, cap))
  if not out:
    raise ValueError("config.models names no checkpoint; set e.g. --config.models.dass=PATH")
  return out


def haystack_features(
  kind: str,
  needle: np.ndarray,
  noise,
  snr_db: float | None,
  total_samples: int,
  position: float,
  block_samples: int,
) -> np.ndarray:
  """(frames, 128) unnormalised fbank of one needle waveform in one haystack."""
  if kind == "zeros":
    return haystack_lib.zeros_haystack(
      kaldi_fbank.fbank(needle), haystack_lib.num_frames(total_samples), position
    )
  return haystack_lib.noisy_haystack(needle, noise, snr_db, total_samples, position, block_samples)


def _noise(kind: str, clips: Clips, config: ml_collections.ConfigDict):
  if kind == "white":
    return haystack_lib.WhiteNoise(config.seed)
  if kind == "babble":
    return haystack_lib.BabbleNoise(clips.babble_pool, config.babble_talkers, config.seed)
  return None


def _conditions(config: ml_collections.ConfigDict):
  """(haystack, snr or None) pairs in run order."""
  for kind in config.haystacks:
    if kind not in haystack_lib.HAYSTACKS:
      raise ValueError(f"unknown haystack {kind!r}; choose from {haystack_lib.HAYSTACKS}")
    for snr in [None] if kind == "zeros" else config.snrs_db:
      yield kind, snr


def _check_durations(durations, clips: Clips) -> None:
  if list(durations) != sorted(durations) or len(set(durations)) != len(durations):
    raise ValueError(
      f"durations_s must be strictly increasing (the first is the reference), "
      f"got {tuple(durations)}"
    )
  longest = max(n.size for n in clips.needles) / SAMPLE_RATE
  if durations[0] < longest:
    raise ValueError(
      f"the shortest duration {durations[0]} s is shorter than the longest needle ({longest:.2f} s)"
    )


def evaluate_condition(
  classifiers: list[Classifier],
  clips: Clips,
  kind: str,
  noise,
  snr_db: float | None,
  duration_s: float,
  position: float,
  config: ml_collections.ConfigDict,
) -> dict[str, float]:
  """mAP of every classifier that supports this duration, over all needles: {name: mAP}."""
  total_samples = int(round(duration_s * SAMPLE_RATE))
  frames = haystack_lib.num_frames(total_samples)
  active = [c for c in classifiers if c.supports(frames)]
  if not active:
    return {}
  count = len(clips.needles)
  batch = max(1, min(count, config.batch_frames // frames))
  scores = {c.name: np.zeros((count, clips.targets.shape[1]), np.float32) for c in active}
  for first in range(0, count, batch):
    rows = range(first, min(first + batch, count))
    x = np.zeros((batch, frames, NUM_MEL_BINS), np.float32)
    for j, i in enumerate(rows):
      x[j] = kaldi_fbank.normalize(
        haystack_features(
          kind, clips.needles[i], noise, snr_db, total_samples, position, config.block_samples
        )
      )
    for c in active:
      scores[c.name][first : first + len(rows)] = c(x)[: len(rows)]
  return {name: metrics_lib.compute_metrics(s, clips.targets)["mAP"] for name, s in scores.items()}


def with_retained(rows: list[dict]) -> list[dict]:
  """Adds `retained`: mAP over the shortest duration's mAP (same model/haystack/snr/position)."""
  reference = {}
  for row in sorted(rows, key=lambda r: r["duration_s"]):
    reference.setdefault((row["model"], row["haystack"], row["snr"], row["position"]), row["mAP"])
  return [
    {
      **row,
      "retained": row["mAP"]
      / reference[(row["model"], row["haystack"], row["snr"], row["position"])],
    }
    for row in rows
  ]


def write_csv(rows: list[dict], path: str) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
      writer.writerow({**row, "snr": "" if row["snr"] is None else row["snr"]})


def plot(rows: list[dict], path: str) -> None:
  """mAP (mean over positions) vs duration, log x, one line per model and haystack/SNR."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  lines: dict[tuple[str, str, str], dict[float, list[float]]] = {}
  for row in rows:
    condition = row["haystack"] + ("" if row["snr"] is None else f" {row['snr']:g} dB")
    key = (row["model"], row["haystack"], condition)
    lines.setdefault(key, {}).setdefault(row["duration_s"], []).append(row["mAP"])
  models = sorted({model for model, _, _ in lines})
  styles = dict(zip(haystack_lib.HAYSTACKS, ("-", "--", ":")))
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for (model, kind, condition), points in lines.items():
    durations = sorted(points)
    ax.plot(
      durations,
      [np.mean(points[d]) for d in durations],
      marker="o",
      color=f"C{models.index(model)}",
      linestyle=styles[kind],
      label=f"{model} / {condition}",
    )
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel("input duration (s)")
  ax.set_ylabel("mAP (mean over needle positions)")
  ax.set_title("Audio needle in a haystack")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs the study, writes niah.csv / niah.png / niah_config.json into `workdir`; returns rows."""
  if not workdir:
    raise ValueError("no work directory: pass --workdir or set config.workdir")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, STUDY_CONFIG_FILE), "w", encoding="utf-8") as f:
    f.write(config.to_json(indent=2) + "\n")
  clips = load_clips(config)
  durations = [float(d) for d in config.durations_s]
  _check_durations(durations, clips)
  classifiers = build_classifiers(config)
  rows = []
  for kind, snr in _conditions(config):
    noise = _noise(kind, clips, config)
    for duration in durations:
      for position in config.positions:
        start = time.perf_counter()
        maps = evaluate_condition(classifiers, clips, kind, noise, snr, duration, position, config)
        for name, value in maps.items():
          rows.append(
            {
              "model": name,
              "haystack": kind,
              "snr": snr,
              "duration_s": duration,
              "position": float(position),
              "mAP": value,
            }
          )
        logging.info(
          "%s snr=%s %.0f s pos %.2f: %s (%.1f s)",
          kind,
          snr,
          duration,
          position,
          {k: round(v, 4) for k, v in maps.items()},
          time.perf_counter() - start,
        )
  rows = with_retained(rows)
  write_csv(rows, os.path.join(workdir, CSV_FILE))
  plot(rows, os.path.join(workdir, PLOT_FILE))
  return rows


def main(argv: list[str], config: ml_collections.ConfigDict, workdir: str | None) -> int:
  """Runs the study from the command line and prints its rows."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  logging.getLogger().setLevel(logging.INFO)
  workdir = workdir or config.workdir
  rows = run(config, workdir)
  print(f"{len(rows)} rows -> {os.path.join(workdir, CSV_FILE)}")
  for row in rows:
    snr = "" if row["snr"] is None else f"{row['snr']:g} dB"
    print(
      f"{row['model']:>10} {row['haystack']:>6} {snr:>6} {row['duration_s']:>8g} s "
      f"pos {row['position']:.2f}  mAP {row['mAP']:.4f}  retained {row['retained']:.3f}"
    )
  return 0


if __name__ == "__main__":
  # Flags are defined here, not at import, so that tests can import this module beside
  # experiments.train (which defines its own --config).
  _CONFIG = config_flags.DEFINE_config_file("config", None, "NIAH config file.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (overrides config.workdir).")
  flags.mark_flag_as_required("config")
  app.run(lambda argv: sys.exit(main(argv, _CONFIG.value, _WORKDIR.value)))
