r"""Audio needle in a haystack (NIAH): classification mAP of each model versus input duration.

    python -m experiments.niah --config experiments/configs/niah.py --workdir work_dirs/niah

Each evaluation clip (the needle) is placed at each relative position inside a haystack of each
duration (zeros, white noise or babble at each SNR), the model input is built by the configured
protocol (`experiments.haystack`: `paper`, the DASS authors' construction, or `streamed`, this
repository's earlier one; the two measure different things), every model classifies it in one
pass, and the mAP over the needles is computed against the needle's labels from sigmoid scores
taken in the compute dtype (as the original scores its fp16 autocast outputs). `retained` is that
mAP over the reference: the mAP at the first duration for the same model, haystack and SNR,
averaged over the positions evaluated there (at the first duration, normally the needle's own
length, every position gives the same input).

Durations become input frames by protocol: `paper` takes L = round(100 d) frames (the original
gives L directly; the needle is `needle_frames` long, so d = 10.24 s is the plain 10 s clip) and
`streamed` the frames of a d-second waveform (100 d - 2). Under `paper`, (duration, position)
pairs the original could not run (the needle would end past the input) are skipped with a log
line, white noise is drawn per needle from (seed, needle index), and babble tiles `babble_wav`
(the paper's is `babble_all.wav` from the authors' repository; '' = a `babble_seconds` recording
made from the babble pool, written to the work directory).

Models: `config.models` maps a name to a converted checkpoint folder or an `experiments.train` work
directory (`load_for_eval`); the model kind comes from the checkpoint's config, and each model gets
the input of its registry input kind: normalised fbank (AST, DASS, AuM) or, for a model that takes
audio (Dasheng), the waveform analogue of the same haystack (`experiments.haystack`, "Waveform
inputs": the same noise, SNR rule, seeds, durations and positions; zeros are digital silence).
Both kinds are built for the same batches of needles, each only when some model takes it. A
Dasheng runs with its per-clip dB floor (`db_floor='clip'` whatever its checkpoint says), so a
needle's score does not depend on the other needles of its batch, and its chunking (10.08 s
chunks, or `chunk_tokens`) runs any length. Model types whose position embeddings may fix
the input length register a length adapter in `LENGTH_ADAPTERS` (AST: `dass_jax.models.ast.
for_length`, AuM: `dass_jax.models.aum.for_length`); `config.length_extension` tells it what to
do with fixed embeddings: 'sine' (replace them by the authors' sinusoid at every length, as their
study does to every AST), 'interpolate' (bilinear resize to each length) or 'refuse' (run the
trained length only). An AST trained with `pos_embed_type="sine"` computes its positions for any
length whatever the extension; AuM's are resampled to each length under 'sine' and 'interpolate'
alike (antialiased bilinear, as its own loader does); DASS has no position embedding. There is
no built-in length cap: attention models materialise (heads, tokens, tokens) scores, quadratic in
duration, so memory (or the time the user gives it, `max_duration_s` per model) is the limit.
`compute_dtype` ('float32', or 'bfloat16' as the half-precision stand-in for the original's fp16
autocast) replaces every model's compute dtype.

Work directory outputs: niah.csv (model, protocol, haystack, snr, duration_s, frames, position,
mAP, retained; snr is empty for the zeros haystack; frames is the protocol's L for every model, a
waveform model's input having the samples of `haystack.input_shape`), niah.png (mAP averaged over
positions vs duration, log x, one line per model and haystack/SNR) and niah_config.json.
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
import jax.numpy as jnp
import ml_collections
import numpy as np
import soundfile as sf
from absl import app, flags
from ml_collections import config_flags

import dass_jax
from dass_jax import data
from dass_jax.audio import load_audio
from dass_jax.checkpoint import load_config
from dass_jax.constants import FRAMES_PER_SECOND, SAMPLE_RATE
from dass_jax.data import datafile as datafile_lib
from dass_jax.data import synthetic
from dass_jax.models import ast as ast_lib
from dass_jax.models import aum as aum_lib
from dass_jax.models import build_model, spec_of
from experiments import haystack as haystack_lib
from experiments import metrics as metrics_lib
from experiments import teacher as teacher_lib

CSV_FILE, PLOT_FILE, STUDY_CONFIG_FILE = "niah.csv", "niah.png", "niah_config.json"
BABBLE_FILE = "babble_pool.wav"
CSV_FIELDS = (
  "model",
  "protocol",
  "haystack",
  "snr",
  "duration_s",
  "frames",
  "position",
  "mAP",
  "retained",
)
EXTENSIONS = ast_lib.LENGTH_EXTENSIONS


def load_for_eval(path: str, **config_overrides) -> tuple[Any, Any, Any]:
  """(module, params, model config) from a converted checkpoint folder or a train work directory.

  A work directory resolves to its `export/` folder (the model it chose on valid), as the
  distillation teacher does (`experiments.teacher.resolve_dir`). `config_overrides` replace config
  fields that leave the params unchanged (e.g. dtype).
  """
  return dass_jax.load_model(teacher_lib.resolve_dir(path), **config_overrides)


@dataclasses.dataclass(frozen=True)
class Clips:
  """Needle waveforms with their labels, and the clips reserved for babble.

  Attributes:
    needles: (samples,) float32 whole clips at 16 kHz (the streamed protocol crops them to
      needle_seconds; the paper protocol pads/crops their fbank to needle_frames).
    targets: (needles, classes) float32 multi-hot labels.
    babble_pool: (samples,) float32 waveforms for babble (never needles).
  """

  needles: list[np.ndarray]
  targets: np.ndarray
  babble_pool: list[np.ndarray]


def load_clips(config: ml_collections.ConfigDict) -> Clips:
  """Reads the eval datafile: the first `babble_pool` rows feed babble, the next `num_needles`
  rows (0: all the others) are the needles (synthetic dataset of `config.data.synthetic` when no
  datafile is set)."""
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
  pool, count = config.babble_pool, config.num_needles or len(entries) - config.babble_pool
  if count < 1 or pool + count > len(entries):
    raise ValueError(
      f"{datafile} has {len(entries)} rows; babble_pool + num_needles = {pool + count}"
    )
  needle_rows = entries[pool : pool + count]
  targets = np.zeros((count, len(labels)), np.float32)
  for i, classes in enumerate(datafile_lib.label_indices(needle_rows, labels, datafile)):
    targets[i, list(classes)] = 1.0
  return Clips(
    needles=[load_audio(e.wav) for e in needle_rows],
    targets=targets,
    babble_pool=[load_audio(e.wav) for e in entries[:pool]],
  )


# Config fields replaced for the study so that each input of a batch is scored on its own
# (Dasheng's 'batch' dB floor would floor a needle at the loudest needle of its batch).
PER_CLIP_OVERRIDES = {"db_floor": "clip"}


# A length adapter takes (params, model config, frames, extension) and returns the (params, config)
# that run `frames` frames, or None where the extension refuses that length. Model types without
# an adapter run any length unchanged.
LengthAdapter = Callable[[Any, Any, int, str], tuple[Any, Any] | None]
LENGTH_ADAPTERS: dict[str, LengthAdapter] = {"ast": ast_lib.for_length, "aum": aum_lib.for_length}


class Classifier:
  """A loaded model applied to the inputs of the frame counts it supports.

  `scores(x)` maps a batch of inputs of the model's `input_kind` ((batch, frames, 128) normalised
  fbank, or (batch, samples) 16 kHz waveforms) to (batch, classes) float32 sigmoid scores, the
  sigmoid taken in the model's compute dtype. Each input length gets its own jitted function
  (and, where a length adapter applies, its own params), kept for the other haystacks.
  `max_frames` (None: no limit) is a budget the user sets in the protocol's frames, e.g. for
  attention on a CPU.
  """

  def __init__(
    self, name: str, module, params, model_config, extension: str, max_frames: int | None = None
  ):
    if extension not in EXTENSIONS:
      raise ValueError(f"length_extension must be one of {EXTENSIONS}, got {extension!r}")
    self.name, self.extension, self.max_frames = name, extension, max_frames
    self._module, self._params, self._config = module, params, model_config
    self.input_kind = spec_of(model_config).input_kind
    self._adapter = LENGTH_ADAPTERS.get(model_config.model_type)
    if self._adapter is not None and self.input_kind != "fbank":
      raise ValueError(f"length adapters resize fbank models; {name!r} takes {self.input_kind}")
    self._dtype = jnp.dtype(getattr(model_config, "dtype", "float32"))
    self._by_length: dict[int, tuple[Callable, Any] | None] = {}

  def _compiled(self, length: int) -> tuple[Callable, Any] | None:
    """The jitted forward and params for inputs of `length` (frames, or samples)."""
    if length not in self._by_length:
      module, params = self._module, self._params
      if self._adapter is not None:
        adapted = self._adapter(params, self._config, length, self.extension)
        if adapted is None:
          self._by_length[length] = None
          return None
        params, cfg = adapted
        module = build_model(cfg)

      def forward(p, x, m=module):
        logits = m.apply({"params": p}, x, train=False)
        # Returned in the compute dtype: cast inside the jit, XLA may skip the rounding.
        return jax.nn.sigmoid(logits.astype(self._dtype))

      self._by_length[length] = (jax.jit(forward), params)
    return self._by_length[length]

  def supports(self, frames: int) -> bool:
    """Whether the model runs inputs of `frames` protocol frames (budget, length extension)."""
    if self.max_frames is not None and frames > self.max_frames:
      return False
    return self._adapter is None or self._compiled(frames) is not None

  def scores(self, x: np.ndarray) -> np.ndarray:
    """(batch, classes) float32 sigmoid scores of a batch of inputs of the model's kind."""
    compiled = self._compiled(x.shape[1])
    if compiled is None:
      raise ValueError(f"{self.name} does not run {x.shape[1]} frames ({self.extension})")
    forward, params = compiled
    return np.asarray(forward(params, x), np.float32)


def build_classifiers(config: ml_collections.ConfigDict) -> list[Classifier]:
  """One `Classifier` per `config.models` entry with a path, in `config.compute_dtype` (and
  `PER_CLIP_OVERRIDES` where the model has those fields), limited to
  `config.max_duration_s[name]` seconds where that is set (> 0)."""
  out = []
  for name, path in config.models.items():
    if not path:
      continue
    budget = config.max_duration_s.get(name, 0.0)
    max_frames = frames_for_duration(config.protocol, budget) if budget > 0 else None
    fields = {f.name for f in dataclasses.fields(load_config(teacher_lib.resolve_dir(path)))}
    overrides = {k: v for k, v in PER_CLIP_OVERRIDES.items() if k in fields}
    module, params, model_config = load_for_eval(path, dtype=config.compute_dtype, **overrides)
    out.append(Classifier(name, module, params, model_config, config.length_extension, max_frames))
  if not out:
    raise ValueError("config.models names no checkpoint; set e.g. --config.models.dass=PATH")
  return out


def frames_for_duration(protocol: str, duration_s: float) -> int:
  """Input frames of a duration: round(100 d) (paper) or the frames of d seconds (streamed)."""
  if protocol == "paper":
    return int(round(duration_s * FRAMES_PER_SECOND))
  return haystack_lib.num_frames(int(round(duration_s * SAMPLE_RATE)))


class Inputs:
  """Builds the model input of needle i for a condition under the configured protocol, as
  normalised fbank or as a waveform (`input_kind`, `experiments.haystack`)."""

  def __init__(self, config: ml_collections.ConfigDict, clips: Clips, workdir: str):
    self.protocol, self.config, self.clips = config.protocol, config, clips
    if self.protocol not in haystack_lib.PROTOCOLS:
      raise ValueError(f"unknown protocol {self.protocol!r}; choose from {haystack_lib.PROTOCOLS}")
    if self.protocol == "paper":
      self.paper_needles = [
        haystack_lib.paper_needle(n, config.needle_frames) for n in clips.needles
      ]
    else:
      crop = int(round(config.needle_seconds * SAMPLE_RATE))
      self.cropped = [n[:crop] for n in clips.needles]
    self._babble = None
    if "babble" in config.haystacks:
      self._babble = self._babble_source(workdir)

  def _babble_source(self, workdir: str):
    config, pool = self.config, self.clips.babble_pool
    if self.protocol == "streamed":
      return haystack_lib.BabbleNoise(pool, config.babble_talkers, config.seed)
    if config.babble_wav:
      return haystack_lib.TiledRecording(load_audio(config.babble_wav))
    if not pool:
      raise ValueError(
        "the babble haystack needs babble_wav (the paper's is the authors' babble_all.wav) or "
        "babble_pool > 0 eval clips to make a recording from"
      )
    samples = int(round(config.babble_seconds * SAMPLE_RATE))
    noise = haystack_lib.BabbleNoise(pool, config.babble_talkers, config.seed)
    recording = (0.1 * noise.segment(0, samples)).astype(np.float32)
    path = os.path.join(workdir, BABBLE_FILE)
    sf.write(path, recording, SAMPLE_RATE, subtype="FLOAT")
    logging.warning(
      "paper protocol without babble_wav: babble tiles %s (%g s made from %d pool clips), not the "
      "paper's babble_all.wav",
      path,
      config.babble_seconds,
      len(pool),
    )
    return haystack_lib.TiledRecording(recording)

  def check(self, frames: int, position: float) -> str | None:
    """Why the protocol cannot build this (frames, position) pair, or None."""
    if self.protocol != "paper":
      return None
    try:
      haystack_lib.paper_start_frame(position, frames, self.config.needle_frames)
    except ValueError as e:
      return str(e)
    return None

  def shape(self, frames: int, input_kind: str = "fbank") -> tuple[int, ...]:
    """Shape of one input of `frames` frames: (frames, 128), or (samples,) for a waveform."""
    return haystack_lib.input_shape(self.protocol, frames, input_kind)

  def haystack(
    self, i: int, kind: str, snr_db: float | None, frames: int, input_kind: str = "fbank"
  ) -> np.ndarray | None:
    """What needle i's inputs at every position share: the paper haystack (None: streamed)."""
    if self.protocol != "paper":
      return None
    noise = None
    if kind == "white":
      noise = haystack_lib.WhiteNoise((self.config.seed, i))
    elif kind == "babble":
      noise = self._babble
    needle = self.paper_needles[i]
    return haystack_lib.paper_haystack(
      needle, kind, frames, snr_db, noise, self.config.block_samples, input_kind
    )

  def build(
    self,
    i: int,
    kind: str,
    snr_db: float | None,
    frames: int,
    position: float,
    haystack: np.ndarray | None = None,
    out: np.ndarray | None = None,
    input_kind: str = "fbank",
  ) -> np.ndarray:
    """Float32 input of needle i of `shape(frames, input_kind)`, written into `out` when given
    (paper: assembled from its `haystack` of that kind, which is built here when not given)."""
    config = self.config
    if self.protocol == "paper":
      if haystack is None:
        haystack = self.haystack(i, kind, snr_db, frames, input_kind)
      return haystack_lib.paper_assemble(self.paper_needles[i], haystack, position, out)
    noise = None
    if kind == "white":
      noise = haystack_lib.WhiteNoise(config.seed)
    elif kind == "babble":
      noise = self._babble
    x = haystack_lib.streamed_input(
      self.cropped[i], kind, frames, position, snr_db, noise, config.block_samples, input_kind
    )
    if out is None:
      return x
    out[...] = x
    return out


def _conditions(config: ml_collections.ConfigDict):
  """(haystack, snr or None) pairs in run order."""
  for kind in config.haystacks:
    if kind not in haystack_lib.HAYSTACKS:
      raise ValueError(f"unknown haystack {kind!r}; choose from {haystack_lib.HAYSTACKS}")
    for snr in [None] if kind == "zeros" else config.snrs_db:
      yield kind, snr


def _check_durations(config: ml_collections.ConfigDict, clips: Clips) -> None:
  durations = [float(d) for d in config.durations_s]
  if durations != sorted(durations) or len(set(durations)) != len(durations):
    raise ValueError(
      f"durations_s must be strictly increasing (the first is the reference), "
      f"got {tuple(durations)}"
    )
  first = frames_for_duration(config.protocol, durations[0])
  if config.protocol == "paper":
    if first < config.needle_frames:
      raise ValueError(
        f"the shortest duration {durations[0]} s ({first} frames) is shorter than the "
        f"{config.needle_frames}-frame needle (needle_frames)"
      )
    return
  longest = min(config.needle_seconds, max(n.size for n in clips.needles) / SAMPLE_RATE)
  if durations[0] < longest:
    raise ValueError(
      f"the shortest duration {durations[0]} s is shorter than the longest needle ({longest:.2f} s)"
    )


def evaluate_condition(
  classifiers: list[Classifier],
  inputs: Inputs,
  targets: np.ndarray,
  kind: str,
  snr_db: float | None,
  frames: int,
  positions: list[float],
  batch_frames: int,
) -> dict[float, dict[str, float]]:
  """mAP of every classifier that runs this frame count, over all needles, at each position:
  {position: {name: mAP}}. Each needle's haystack is built once for all positions, in each input
  kind some classifier takes; a batch holds batch_frames // frames needles (at least one)."""
  active = [c for c in classifiers if c.supports(frames)]
  if not active or not positions:
    return {}
  input_kinds = sorted({c.input_kind for c in active})
  count = targets.shape[0]
  batch = max(1, min(count, batch_frames // frames))
  scores = {p: {c.name: np.zeros(targets.shape, np.float32) for c in active} for p in positions}
  for first in range(0, count, batch):
    rows = range(first, min(first + batch, count))
    haystacks = {
      k: [inputs.haystack(i, kind, snr_db, frames, k) for i in rows] for k in input_kinds
    }
    for position in positions:
      x = {k: np.zeros((batch, *inputs.shape(frames, k)), np.float32) for k in input_kinds}
      for k, hay in haystacks.items():
        for j, i in enumerate(rows):
          inputs.build(i, kind, snr_db, frames, position, hay[j], out=x[k][j], input_kind=k)
      for c in active:
        got = c.scores(x[c.input_kind])
        scores[position][c.name][first : first + len(rows)] = got[: len(rows)]
  return {
    p: {name: metrics_lib.compute_metrics(s, targets)["mAP"] for name, s in by_model.items()}
    for p, by_model in scores.items()
  }


def with_retained(rows: list[dict]) -> list[dict]:
  """Adds `retained`: mAP over the first duration's mAP (same model/haystack/snr), the latter
  averaged over the positions evaluated at that duration."""

  def key(row):
    return row["model"], row["haystack"], row["snr"]

  first: dict[tuple, float] = {}
  for row in rows:
    first[key(row)] = min(first.get(key(row), row["duration_s"]), row["duration_s"])
  reference: dict[tuple, list[float]] = {}
  for row in rows:
    if row["duration_s"] == first[key(row)]:
      reference.setdefault(key(row), []).append(row["mAP"])
  return [{**row, "retained": row["mAP"] / float(np.mean(reference[key(row)]))} for row in rows]


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
  protocol = rows[0]["protocol"] if rows else ""
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel("input duration (s)")
  ax.set_ylabel("mAP (mean over needle positions)")
  ax.set_title(f"Audio needle in a haystack ({protocol} protocol)")
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
  _check_durations(config, clips)
  inputs = Inputs(config, clips, workdir)
  classifiers = build_classifiers(config)
  rows = []
  for kind, snr in _conditions(config):
    for duration in [float(d) for d in config.durations_s]:
      frames = frames_for_duration(config.protocol, duration)
      positions = []
      for position in config.positions:
        reason = inputs.check(frames, position)
        if reason:
          logging.info("not run: %s %.4g s position %.2f: %s", kind, duration, position, reason)
        else:
          positions.append(float(position))
      start = time.perf_counter()
      by_position = evaluate_condition(
        classifiers, inputs, clips.targets, kind, snr, frames, positions, config.batch_frames
      )
      for position, maps in by_position.items():
        for name, value in maps.items():
          rows.append(
            {
              "model": name,
              "protocol": config.protocol,
              "haystack": kind,
              "snr": snr,
              "duration_s": duration,
              "frames": frames,
              "position": position,
              "mAP": value,
            }
          )
        logging.info(
          "%s snr=%s %.4g s (%d frames) pos %.2f: %s",
          kind,
          snr,
          duration,
          frames,
          position,
          {k: round(v, 4) for k, v in maps.items()},
        )
      logging.info("%s snr=%s %.4g s: %.1f s", kind, snr, duration, time.perf_counter() - start)
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
  print(f"{len(rows)} rows ({config.protocol} protocol) -> {os.path.join(workdir, CSV_FILE)}")
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
