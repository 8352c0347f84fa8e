"""Top-class predictions from a converted checkpoint (DASS or AST).

    python -m dass_jax.predict --checkpoint converted/dass_small clip.npy batch.npy song.wav \\
        [--top-k 5] [--logits-npy logits.npy] [--json]

Each INPUT is either
  * a `.npy` array of model input: normalised fbank, (frames, 128) or (batch, frames, 128), exactly
    what the PyTorch `DASS.forward` takes; or
  * an audio file, turned into that input by `dass_jax.features.audio_to_features` (all frames for
    DASS; padded / cropped to `max_length` frames for AST, whose position embeddings need it).

Inputs run one file at a time (in chunks of --batch-size along the batch axis), never padded
together, so every logit is what the model gives for that input alone. Scores are printed as
logit and sigmoid probability (AudioSet is multi-label). `--logits-npy` saves the raw logits,
(total batch, classes) float32 in input order; `--json` prints the results as JSON instead of text.

Exit status: 0 on success, 2 for a bad checkpoint folder or a bad input (missing file, wrong rank,
wrong number of mel bins, empty, NaN / inf, unreadable audio); the message names the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


class InputError(ValueError):
  """A checkpoint folder or input file that cannot be used; the message names it."""


def class_names(num_classes: int) -> list[str]:
  """Label names from `dass_jax.labels` when it has them for `num_classes`, else `class_<i>`."""
  try:
    from dass_jax import labels
    names = list(labels.class_names(num_classes))
  except (ImportError, ValueError, KeyError, OSError):
    names = []
  if len(names) != num_classes:
    names = [f"class_{i}" for i in range(num_classes)]
  return names


def _audio_features(path: Path, config) -> np.ndarray:
  try:
    from dass_jax.features import audio_to_features
  except ImportError as e:
    raise InputError(f"{path}: audio input needs dass_jax.features ({e}); pass a .npy fbank "
                     "array instead") from e
  target = getattr(config, "max_length", None) if config.to_dict()["model_type"] == "ast" else None
  try:
    return audio_to_features(path, target_frames=target)
  except Exception as e:  # any decoder error is a bad input file, reported with its name
    raise InputError(f"{path}: could not turn the audio into features ({e})") from e


def load_input(path: str | os.PathLike, config) -> np.ndarray:
  """Reads one INPUT as float32 (batch, frames, num_mel_bins), checking every property."""
  path = Path(path)
  if not path.is_file():
    raise InputError(f"{path}: input file not found")
  if path.suffix.lower() == ".npy":
    try:
      array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
      raise InputError(f"{path}: not a readable .npy array ({e})") from e
  else:
    array = _audio_features(path, config)
  mel = config.num_mel_bins
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
    raise InputError(f"{path}: dtype {array.dtype} is not a real number type")
  if array.ndim not in (2, 3):
    raise InputError(f"{path}: shape {array.shape} has rank {array.ndim}; expected "
                     f"(frames, {mel}) or (batch, frames, {mel})")
  if array.shape[-1] != mel:
    raise InputError(f"{path}: last axis has {array.shape[-1]} mel bins; the model takes {mel} "
                     f"(expected (frames, {mel}) or (batch, frames, {mel}))")
  if array.size == 0:
    raise InputError(f"{path}: empty input, shape {array.shape}")
  bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
  if bad:
    raise InputError(f"{path}: {bad} NaN / inf values")
  return np.asarray(array, np.float32).reshape((-1,) + array.shape[-2:])


def predict_logits(apply_fn, params, batch: np.ndarray, batch_size: int) -> np.ndarray:
  """(batch, frames, mel) -> (batch, classes) float32 via `apply_fn(params, x)`, in chunks."""
  chunks = [np.asarray(apply_fn(params, batch[i:i + batch_size]))
            for i in range(0, batch.shape[0], batch_size)]
  return np.concatenate(chunks, axis=0).astype(np.float32)


def top_classes(logits: np.ndarray, k: int, names: list[str]) -> list[dict[str, Any]]:
  """The k highest logits of one row: class index, name, logit, sigmoid probability."""
  order = np.argsort(-logits, kind="stable")[:k]
  return [{"class": int(c), "name": names[c], "logit": float(logits[c]),
           "probability": float(1.0 / (1.0 + np.exp(-float(logits[c]))))} for c in order]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m dass_jax.predict",
      description="Print the top classes of a converted DASS / AST checkpoint for fbank .npy "
                  "arrays or audio files.")
  parser.add_argument("--checkpoint", required=True,
                      help="folder written by `python -m convert_torch` (config.json + params/)")
  parser.add_argument("inputs", nargs="+", metavar="INPUT",
                      help=".npy fbank (frames, 128) / (batch, frames, 128), or an audio file")
  parser.add_argument("--top-k", type=int, default=5, help="classes shown per input (default 5)")
  parser.add_argument("--logits-npy", default=None,
                      help="write all logits, (total batch, classes) float32, to this .npy file")
  parser.add_argument("--json", action="store_true", help="print JSON instead of text")
  parser.add_argument("--batch-size", type=int, default=32,
                      help="rows of a batched input run together (default 32)")
  args = parser.parse_args(argv)
  if args.top_k < 1 or args.batch_size < 1:
    parser.error("--top-k and --batch-size must be positive")
  return args


def _load_checkpoint(folder: str):
  from dass_jax.checkpoint import load_model

  if not Path(folder).is_dir():
    raise InputError(f"{folder}: checkpoint folder not found")
  try:
    return load_model(folder)
  except (FileNotFoundError, ValueError, TypeError, KeyError, OSError) as e:
    raise InputError(f"{folder}: not a usable converted checkpoint ({e})") from e


def _print_text(results: list[dict[str, Any]]) -> None:
  for result in results:
    print(f"{result['input']}[{result['index']}] ({result['frames']} frames)")
    for rank, top in enumerate(result["top"], 1):
      print(f"  {rank:2d}. {top['name']:<40s} class {top['class']:4d}  "
            f"logit {top['logit']:+8.4f}  p {top['probability']:.4f}")


def main(argv: list[str] | None = None) -> int:
  """Runs the CLI; returns the exit status (0, or 2 for a bad checkpoint or input)."""
  args = _parse_args(argv)
  import jax

  try:
    model, params, config = _load_checkpoint(args.checkpoint)
    inputs = [(path, load_input(path, config)) for path in args.inputs]
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  apply_fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
  names = class_names(config.num_classes)
  results, all_logits = [], []
  for path, batch in inputs:
    try:
      logits = predict_logits(apply_fn, params, batch, args.batch_size)
    except ValueError as e:  # the model rejects this input's shape (e.g. AST length)
      print(f"error: {path}: {e}", file=sys.stderr)
      return 2
    all_logits.append(logits)
    for i, row in enumerate(logits):
      results.append({"input": str(path), "index": i, "frames": int(batch.shape[1]),
                      "top": top_classes(row, args.top_k, names)})
  if args.logits_npy:
    np.save(args.logits_npy, np.concatenate(all_logits, axis=0))
  if args.json:
    print(json.dumps({"checkpoint": str(args.checkpoint),
                      "model_type": config.to_dict()["model_type"],
                      "num_classes": config.num_classes, "results": results}, indent=2))
  else:
    _print_text(results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
