"""Label timelines of long recordings: sliding windows over a recording's features.

    features = kaldi_fbank.audio_features("long.wav")              # (frames, 128), normalised
    bounds = timeline.window_bounds(len(features), 1000, 100)        # 10 s windows every 1 s
    logits = timeline.window_logits(apply_fn, params, features, bounds, batch_size=16)

Features arrive at `FRAMES_PER_SECOND` (100) frames per second: frame k covers samples
[160 k, 160 k + 400) at 16 kHz, i.e. 25 ms from k * 10 ms (the streamed features of a whole
recording come from `dass_jax.frontends.kaldi_fbank.audio_features`).

Windows. `window_bounds` places windows of `window` frames every `hop` frames from frame 0 for as
long as they fit; if the last one ends before the recording does, one more window ending at the
last frame is added, so every frame is classified and all windows have the same length. A
recording shorter than one window gives a single window over all of it. Each window is classified
on its own crop of the whole-file features, exactly as if the crop were the input; windows are
stacked into batches.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dass_jax.constants import FRAMES_PER_SECOND

CSV_FIELDS = (
  "input",
  "window",
  "start_s",
  "end_s",
  "rank",
  "class",
  "name",
  "logit",
  "probability",
)


def seconds_to_frames(seconds: float, what: str) -> int:
  """Converts a positive duration to a whole number of 10 ms frames.

  Args:
    seconds: the duration.
    what: how to name the value in an error (e.g. '--timeline-hop').

  Returns:
    round(seconds * 100) frames, >= 1.

  Raises:
    ValueError: not finite, not positive, or not a whole number of frames (to 1e-6 of a frame).
  """
  seconds = float(seconds)
  if not math.isfinite(seconds) or seconds <= 0:
    raise ValueError(f"{what} must be a positive number of seconds, got {seconds}")
  frames = seconds * FRAMES_PER_SECOND
  if abs(frames - round(frames)) > 1e-6:
    raise ValueError(
      f"{what} {seconds} s is not a whole number of 10 ms frames ({frames:g} frames)"
    )
  return int(round(frames))


def window_bounds(num_frames: int, window: int, hop: int) -> np.ndarray:
  """Frame ranges of the sliding windows over a recording (see the module docstring).

  Args:
    num_frames: frames of the recording (>= 1).
    window: frames per window (>= 1).
    hop: frames between window starts (1 <= hop <= window, so that no frame is skipped).

  Returns:
    (windows, 2) int64 [start, end) rows, starts increasing; every row has end - start ==
    min(window, num_frames), and the last row ends at num_frames.

  Raises:
    ValueError: a non-positive size or hop > window.
  """
  if num_frames < 1 or window < 1 or hop < 1:
    raise ValueError(f"num_frames, window and hop must be >= 1, got {num_frames}, {window}, {hop}")
  if hop > window:
    raise ValueError(
      f"hop ({hop} frames) is longer than the window ({window} frames): the audio "
      "between windows would not be classified"
    )
  if num_frames <= window:
    return np.array([[0, num_frames]], np.int64)
  starts = np.arange(0, num_frames - window + 1, hop, dtype=np.int64)
  if starts[-1] + window < num_frames:
    starts = np.append(starts, num_frames - window)
  return np.stack([starts, starts + window], axis=1)


def window_logits(
  apply_fn: Callable[[Any, np.ndarray], Any],
  params: Any,
  features: np.ndarray,
  bounds: np.ndarray,
  batch_size: int,
  length: int | None = None,
  pad_value: float = 0.0,
) -> np.ndarray:
  """Classifies every window on its own crop of the features.

  Args:
    apply_fn: `apply_fn(params, x)`: (batch, frames, mel) -> (batch, classes).
    params: model params.
    features: (frames, mel) normalised features of one recording.
    bounds: (windows, 2) [start, end) frame rows of equal length (from `window_bounds`).
    batch_size: windows per model call. When there is more than one call, the last batch is
      filled up by repeating its last window (and those rows dropped), so every call has the
      same shape and the model compiles once.
    length: if given, each crop is padded at the end with `pad_value` (or cropped) to this many
      frames, for a model with a fixed input length (AST).
    pad_value: the padding value (for AST: `features.normalize(0.0)`, the dataloader's zero
      padding after normalisation).

  Returns:
    (windows, classes) float32 logits, row i for window i.

  Raises:
    ValueError: bad features / bounds / batch size.
  """
  features = np.asarray(features, np.float32)
  bounds = np.asarray(bounds, np.int64)
  if features.ndim != 2:
    raise ValueError(f"features must be (frames, mel), got shape {features.shape}")
  if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] == 0:
    raise ValueError(f"bounds must be (windows >= 1, 2), got shape {bounds.shape}")
  sizes = bounds[:, 1] - bounds[:, 0]
  if (sizes != sizes[0]).any() or sizes[0] < 1 or bounds.min() < 0 or bounds.max() > len(features):
    raise ValueError(f"bounds must be equal-length ranges inside the {len(features)} frames")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")

  def crop(start: int, end: int) -> np.ndarray:
    x = features[start:end]
    if length is None:
      return x
    if len(x) >= length:
      return x[:length]
    return np.pad(x, ((0, length - len(x)), (0, 0)), constant_values=pad_value)

  rows = min(batch_size, len(bounds))
  out = []
  for first in range(0, len(bounds), rows):
    chosen = list(range(first, min(first + rows, len(bounds))))
    filled = chosen + [chosen[-1]] * (rows - len(chosen))
    batch = np.stack([crop(*bounds[i]) for i in filled])
    out.append(np.asarray(apply_fn(params, batch), np.float32)[: len(chosen)])
  return np.concatenate(out, axis=0)


def write_timeline(path: str | os.PathLike, report: dict[str, Any]) -> Path:
  """Writes a timeline report as JSON or CSV, chosen by the file suffix.

  Args:
    path: output file ending in .json or .csv.
    report: {"window_s", "hop_s", ..., "inputs": [{"input": str, "windows": [{"window": int,
      "start_s": float, "end_s": float, "top": [{"class", "name", "logit", "probability"}, ...]},
      ...]}, ...]}. JSON gets all of it; CSV one row per (input, window, rank) with the columns
      `CSV_FIELDS` (rank counts from 1).

  Returns:
    The path written.

  Raises:
    ValueError: a suffix other than .json / .csv.
  """
  path = Path(path)
  suffix = path.suffix.lower()
  if suffix not in (".json", ".csv"):
    raise ValueError(f"{path}: timeline output must end in .json or .csv")
  if suffix == ".json":
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(CSV_FIELDS)
    for item in report["inputs"]:
      for window in item["windows"]:
        for rank, top in enumerate(window["top"], 1):
          writer.writerow(
            [
              item["input"],
              window["window"],
              f"{window['start_s']:.2f}",
              f"{window['end_s']:.2f}",
              rank,
              top["class"],
              top["name"],
              f"{top['logit']:.6g}",
              f"{top['probability']:.6g}",
            ]
          )
  return path
