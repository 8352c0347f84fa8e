"""Top-class predictions of a converted checkpoint (DASS, AST, AuM, Dasheng): recordings, timelines.

    python -m dass_jax.predict --checkpoint converted/dass_small clip.npy batch.npy song.wav \\
        [--top-k 5] [--logits-npy logits.npy] [--json] [--label-kind bce|ce] [--crop] \\
        [--timeline-window 10 [--timeline-hop 1] [--timeline-out tl.json] [--timeline-out tl.csv]]

`--checkpoint` also takes a published name (`dass-small-47.2`, see `python -m convert_torch
--list`), an hf:// hub id or an https:// URL: converted on first use into the user's cache.

    python -m dass_jax.predict --onnx model.onnx clip.wav ...   (the same options)

runs a file written by `python -m dass_jax.export --format onnx` with onnxruntime instead, and
imports no JAX (numpy, soundfile and onnxruntime are all it needs; `dass_jax.onnx_model`): the
model type, input kind, input length and class names come from the file's metadata. A graph
exported at a fixed length (`--frames N`) takes audio padded to N frames and refuses longer audio
without --crop or --timeline-window, as AST and AuM do below (a .npy must have exactly that
length); a `--dynamic` DASS graph takes any length. Its probabilities are sigmoids when it has the
527 AudioSet classes; for another classifier pass --label-kind.

What an INPUT holds depends on the model's input kind (`dass_jax.models.MODELS`):
  * fbank models (DASS, AST, AuM): a `.npy` array of model input, normalised fbank (frames, 128) or
    (batch, frames, 128), exactly what the PyTorch `DASS.forward` takes; or an audio file of any
    length, turned into the normalised fbank of the whole recording by
    `dass_jax.frontends.kaldi_fbank.audio_features` (streamed block by block for the formats
    soundfile reads);
  * waveform models (Dasheng): a `.npy` array of 16 kHz samples, (samples,) or (batch, samples);
    or an audio file of any length, decoded block by block (soxr's streaming resampler to 16 kHz
    where soundfile reads the format, `dass_jax.audio.load_audio` otherwise) into the whole
    recording's waveform, which the model takes in one pass (its front end sees the whole
    recording, so Dasheng's dB floor is the recording's own maximum, as for that clip in the
    `dasheng` package; its encoder works on 10.08 s chunks, so memory grows linearly).
DASS classifies every frame of an input in one forward pass, with no cropping (it has no position
embedding; activation memory grows linearly with the length). The position embeddings of AST and
AuM fix their input length (`dass_jax.models.fixed_length`): shorter audio is padded to
`max_length` frames, as their dataloaders do. Longer audio is refused (exit 2) unless the command
says what to do with the rest: `--timeline-window W` classifies the whole recording in windows of
at most `max_length` frames, `--crop` classifies its first `max_length` frames only (what the
training dataloaders do). In both cases the whole-recording result is of the first `max_length`
frames, says so ("cropped_from": the recording's frames, in the JSON; a note in the text) and a
warning goes to stderr. (A refusal rather than a warning alone: cropped scores presented as the
recording's would be wrong without a sign in the JSON a pipeline reads. For another input length
resize the embeddings with the registry's `with_max_length`.)

Inputs run one file at a time (in chunks of --batch-size along the batch axis), never padded
together, so every logit is what the model gives for that input alone. Scores are printed as
logit and probability, by the checkpoint's label kind (`dass_jax.checkpoint.label_kind`): a
sigmoid per class for a multi-label model ('bce': the converted AudioSet checkpoints, a training
export of a 'bce' run), a softmax over the classes for a single-label one ('ce': e.g. a fine-tune
with `config.loss.label_kind='ce'`, which its export records). `--label-kind` sets it for a
checkpoint that does not record it (a warning says when it is assumed 'bce'); the JSON header
says which was used. `--logits-npy` saves the raw logits, (total batch, classes) float32 in input
order; `--json` prints the results as JSON instead of text (each result's length is `frames` for
fbank models, `samples` for waveform models).

Timeline: `--timeline-window W` (seconds) also classifies each recording in windows of W seconds
every `--timeline-hop H` seconds (default H = W; both whole multiples of the 10 ms frame shift,
H <= W), each window on its own crop of the whole-recording input (fbank frames at 100 per second,
or the waveform's samples in 10 ms steps of 160), batched --batch-size windows at a time;
`dass_jax.timeline` describes the window placement. The top-k of every window is printed after
the input's whole-recording result (a "timeline" list in the JSON) and written to each
`--timeline-out` file: `.json` (the settings and, per input, every window with its frames, times
and top-k) or `.csv` (one row per input, window and rank:
input,window,start_s,end_s,rank,class,name,logit,probability). A timeline needs one recording per
input (a .npy with batch > 1 is rejected); for a fixed-length model (AST, AuM) a window may not
exceed `max_length` frames and is padded to it.

Exit status: 0 on success, 2 for a bad option, a bad checkpoint folder (or one without a
classifier head) or a bad input (missing file, wrong rank, wrong number of mel bins, empty,
NaN / inf, audio that cannot be decoded (`dass_jax.audio.AudioLoadError`), too short for the model,
longer than a fixed-length model takes without --timeline-window or --crop); the message names the
option or file. Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dass_jax import audio, timeline
from dass_jax.constants import FRAMES_PER_SECOND, SAMPLE_RATE
from dass_jax.frontends import kaldi_fbank
from dass_jax.labels import class_names
from dass_jax.onnx_model import ModelInfo

# JAX, the models and the checkpoint reader are imported only for --checkpoint (`load_checkpoint`
# and `main`), so that --onnx runs where JAX is not installed.

# Samples per 10 ms timeline step of a waveform input.
SAMPLES_PER_FRAME = SAMPLE_RATE // FRAMES_PER_SECOND
# --label-kind: 'bce' multi-label (sigmoid per class), 'ce' single-label (softmax over classes).
LABEL_KINDS = ("bce", "ce")


class InputError(ValueError):
  """A checkpoint folder or input file that cannot be used; the message names it."""


def is_audio(path: str | os.PathLike) -> bool:
  """Whether an INPUT is read as audio (anything but a .npy array)."""
  return Path(path).suffix.lower() != ".npy"


def model_info(config) -> ModelInfo:
  """The `ModelInfo` of a model config (its `models.MODELS` entry, class names)."""
  from dass_jax import models

  return ModelInfo(
    model_type=config.model_type,
    input_kind=models.spec_of(config).input_kind,
    num_mel_bins=getattr(config, "num_mel_bins", 0),
    fixed_length=models.fixed_length(config),
    num_classes=config.num_classes,
    names=tuple(class_names(config.num_classes)),
  )


def _audio_features(path: Path) -> np.ndarray:
  try:
    return kaldi_fbank.audio_features(path)
  except audio.AudioLoadError as e:  # the file cannot be decoded; any other error is a bug
    raise InputError(f"{path}: could not turn the audio into features ({e})") from e


def _audio_waveform(path: Path) -> np.ndarray:
  """The whole recording at 16 kHz, decoded block by block where soundfile reads the format."""
  try:
    if audio.soundfile_can_read(path):
      blocks = audio.iter_audio_blocks(path, kaldi_fbank.STREAM_BLOCK_SECONDS)
      return np.concatenate(list(blocks))
    return audio.load_audio(path, sample_rate=SAMPLE_RATE)
  except audio.AudioLoadError as e:  # the file cannot be decoded; any other error is a bug
    raise InputError(f"{path}: could not read the audio ({e})") from e


def _check_array(path: Path, array: np.ndarray) -> None:
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
    raise InputError(f"{path}: dtype {array.dtype} is not a real number type")


def _check_values(path: Path, array: np.ndarray) -> None:
  if array.size == 0:
    raise InputError(f"{path}: empty input, shape {array.shape}")
  bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
  if bad:
    raise InputError(f"{path}: {bad} NaN / inf values")


def _read(path: Path, from_audio) -> np.ndarray:
  if not path.is_file():
    raise InputError(f"{path}: input file not found")
  if is_audio(path):
    return from_audio(path)
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise InputError(f"{path}: not a readable .npy array ({e})") from e


def load_input(path: str | os.PathLike, info: ModelInfo) -> np.ndarray:
  """Reads one INPUT as the model's float32 input, checking every property.

  fbank models: (batch, frames, num_mel_bins); audio gives batch 1 and all of the recording's
  frames (see `model_input` for fixed lengths). Waveform models: (batch, samples) at 16 kHz; audio
  gives batch 1 and the whole recording.
  """
  path = Path(path)
  if info.input_kind == "waveform":
    array = _read(path, _audio_waveform)
    _check_array(path, array)
    if array.ndim not in (1, 2):
      raise InputError(
        f"{path}: shape {array.shape} has rank {array.ndim}; expected 16 kHz samples "
        "(samples,) or (batch, samples)"
      )
    _check_values(path, array)
    return np.asarray(array, np.float32).reshape((-1, array.shape[-1]))
  array = _read(path, _audio_features)
  mel = info.num_mel_bins
  _check_array(path, array)
  if array.ndim not in (2, 3):
    raise InputError(
      f"{path}: shape {array.shape} has rank {array.ndim}; expected "
      f"(frames, {mel}) or (batch, frames, {mel})"
    )
  if array.shape[-1] != mel:
    raise InputError(
      f"{path}: last axis has {array.shape[-1]} mel bins; the model takes {mel} "
      f"(expected (frames, {mel}) or (batch, frames, {mel}))"
    )
  _check_values(path, array)
  return np.asarray(array, np.float32).reshape((-1,) + array.shape[-2:])


def pad_value() -> float:
  """The normalised value of the dataloader's zero padding, float32 `kaldi_fbank.normalize(0)`."""
  return float(kaldi_fbank.normalize(np.zeros(1, np.float32))[0])


def too_long(batch: np.ndarray, info: ModelInfo, from_audio: bool) -> bool:
  """Whether audio is longer than a fixed-length model (AST, AuM, a fixed ONNX graph) takes."""
  length = info.fixed_length
  if length is None or not from_audio:
    return False
  per_frame = SAMPLES_PER_FRAME if info.input_kind == "waveform" else 1
  return batch.shape[1] > length * per_frame


def model_input(batch: np.ndarray, info: ModelInfo, from_audio: bool) -> np.ndarray:
  """Audio padded / cropped to a fixed-length model's input (AST, AuM, a fixed ONNX graph).

  fbank features are padded with `pad_value()`, a waveform (a fixed-length ONNX Dasheng graph:
  160 samples per frame) with zeros; any other input is returned unchanged. Cropping keeps the
  first max_length frames; `main` crops only when asked (`_check_length`, the module doc).
  """
  length = info.fixed_length
  if length is None or not from_audio:
    return batch
  waveform = info.input_kind == "waveform"
  length = length * SAMPLES_PER_FRAME if waveform else length
  if batch.shape[1] >= length:
    return batch[:, :length]
  pad = [(0, 0), (0, length - batch.shape[1])] + [(0, 0)] * (batch.ndim - 2)
  return np.pad(batch, pad, constant_values=0.0 if waveform else pad_value())


def _check_length(path: str, batch: np.ndarray, info: ModelInfo, args: argparse.Namespace) -> None:
  """Refuses audio longer than a fixed-length model's input unless --crop or a timeline says what
  to do with it; warns on stderr when it is cropped."""
  if not too_long(batch, info, is_audio(path)):
    return
  length = info.fixed_length
  per_frame = SAMPLES_PER_FRAME if info.input_kind == "waveform" else 1
  frames = batch.shape[1] // per_frame
  seconds, limit = frames / FRAMES_PER_SECOND, length / FRAMES_PER_SECOND
  if not (args.crop or args.timeline_window is not None):
    raise InputError(
      f"{path}: {seconds:g} s ({frames} frames) is longer than this "
      f"{info.model_type} checkpoint takes (max_length={length} frames, {limit:g} s; its "
      f"input length is fixed). Classify the whole recording in windows with "
      f"--timeline-window {limit:g} (or shorter), or pass --crop to classify its first "
      f"{limit:g} s only"
    )
  print(
    f"warning: {path}: the whole-recording result is of the first {limit:g} s "
    f"({length} of {frames} frames): this {info.model_type} checkpoint takes at most "
    f"max_length={length} frames",
    file=sys.stderr,
  )


def predict_logits(apply_fn, params, batch: np.ndarray, batch_size: int) -> np.ndarray:
  """(batch, frames, mel) -> (batch, classes) float32 via `apply_fn(params, x)`, in chunks."""
  chunks = [
    np.asarray(apply_fn(params, batch[i : i + batch_size]))
    for i in range(0, batch.shape[0], batch_size)
  ]
  return np.concatenate(chunks, axis=0).astype(np.float32)


def probabilities(logits: np.ndarray, kind: str) -> np.ndarray:
  """(classes,) logits -> probabilities: a sigmoid per class ('bce', multi-label) or a softmax over
  the classes ('ce', single-label), in float64."""
  x = np.asarray(logits, np.float64)
  if kind == "ce":
    e = np.exp(x - x.max())
    return e / e.sum()
  if kind == "bce":
    return 1.0 / (1.0 + np.exp(-x))
  raise ValueError(f"label kind must be one of {LABEL_KINDS}, got {kind!r}")


def top_classes(
  logits: np.ndarray, k: int, names: list[str], kind: str = "bce"
) -> list[dict[str, Any]]:
  """The k highest logits of one row: class index, name, logit, probability (`probabilities`)."""
  order = np.argsort(-logits, kind="stable")[:k]
  probs = probabilities(logits, kind)
  return [
    {
      "class": int(c),
      "name": names[c],
      "logit": float(logits[c]),
      "probability": float(probs[c]),
    }
    for c in order
  ]


def timeline_steps(recording: np.ndarray, info: ModelInfo) -> np.ndarray:
  """One recording as (10 ms steps, values) rows for `timeline.window_logits` to crop.

  fbank features are already (frames, mel); a waveform (samples,) becomes (samples // 160, 160),
  dropping the last samples that do not fill a 10 ms step.
  """
  if info.input_kind != "waveform":
    return recording
  steps = len(recording) // SAMPLES_PER_FRAME
  return recording[: steps * SAMPLES_PER_FRAME].reshape(steps, SAMPLES_PER_FRAME)


def timeline_windows(
  apply_fn, params, recording: np.ndarray, info: ModelInfo, args: argparse.Namespace
) -> list[dict[str, Any]]:
  """Per-window records of one recording's timeline.

  Args:
    apply_fn: `apply_fn(params, x)`, model input (batch, ...) -> (batch, classes).
    params: model params (None for an ONNX model).
    recording: the whole recording's model input without the batch axis: (frames, mel)
      normalised features, or (samples,) 16 kHz waveform.
    info: the model (fixed-length models' windows are padded to `info.fixed_length`; class
      names).
    args: parsed options (timeline_window_frames, timeline_hop_frames, top_k, batch_size,
      label_kind).

  Returns:
    [{"window", "start_frame", "end_frame", "start_s", "end_s", "top": top_classes(...)}], one per
    window in time order; seconds are frames / 100.
  """
  steps = timeline_steps(recording, info)
  bounds = timeline.window_bounds(len(steps), args.timeline_window_frames, args.timeline_hop_frames)
  length = info.fixed_length
  window_fn = apply_fn
  if steps is not recording:  # waveform windows go back to (batch, samples)
    window_fn = lambda p, x: apply_fn(p, x.reshape(x.shape[0], -1))
  logits = timeline.window_logits(
    window_fn,
    params,
    steps,
    bounds,
    args.batch_size,
    length=length,
    pad_value=pad_value() if length and info.input_kind == "fbank" else 0.0,
  )
  fps = timeline.FRAMES_PER_SECOND
  return [
    {
      "window": i,
      "start_frame": int(start),
      "end_frame": int(end),
      "start_s": start / fps,
      "end_s": end / fps,
      "top": top_classes(row, args.top_k, info.names, args.label_kind),
    }
    for i, ((start, end), row) in enumerate(zip(bounds, logits))
  ]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m dass_jax.predict",
    description="Print the top classes of a converted DASS / AST / AuM / Dasheng checkpoint for "
    ".npy arrays or audio files of any length, optionally as a sliding-window timeline.",
  )
  model = parser.add_mutually_exclusive_group(required=True)
  model.add_argument(
    "--checkpoint",
    help="folder written by `python -m convert_torch` (config.json + params/), or a published "
    "name / hf:// id / https:// URL converted on first use (python -m convert_torch --list)",
  )
  model.add_argument(
    "--onnx",
    help="a file written by `python -m dass_jax.export --format onnx`, run with onnxruntime "
    "(no JAX needed)",
  )
  parser.add_argument(
    "inputs",
    nargs="+",
    metavar="INPUT",
    help="an audio file, or a .npy of model input: fbank (frames, 128) / (batch, frames, 128) "
    "for DASS / AST / AuM, 16 kHz samples (samples,) / (batch, samples) for Dasheng",
  )
  parser.add_argument(
    "--top-k", type=int, default=5, help="classes shown per input and per window (default 5)"
  )
  parser.add_argument(
    "--logits-npy",
    default=None,
    help="write all logits, (total batch, classes) float32, to this .npy file",
  )
  parser.add_argument("--json", action="store_true", help="print JSON instead of text")
  parser.add_argument(
    "--label-kind",
    choices=LABEL_KINDS,
    default=None,
    help="probabilities as a sigmoid per class (bce, multi-label) or a softmax over the classes "
    "(ce, single-label); default: what the checkpoint records",
  )
  parser.add_argument(
    "--crop",
    action="store_true",
    help="fixed-length models (AST, AuM): classify only the first max_length frames of longer "
    "audio (without it such audio is refused unless --timeline-window is given)",
  )
  parser.add_argument(
    "--batch-size",
    type=int,
    default=32,
    help="rows of a batched input, or timeline windows, per call (default 32)",
  )
  parser.add_argument(
    "--timeline-window",
    type=float,
    default=None,
    metavar="SECONDS",
    help="also classify each recording in windows of this many seconds",
  )
  parser.add_argument(
    "--timeline-hop",
    type=float,
    default=None,
    metavar="SECONDS",
    help="seconds between window starts (default: the window, no overlap)",
  )
  parser.add_argument(
    "--timeline-out",
    action="append",
    default=[],
    metavar="PATH",
    help="write the timeline to PATH (.json or .csv); may be repeated",
  )
  args = parser.parse_args(argv)
  if args.top_k < 1 or args.batch_size < 1:
    parser.error("--top-k and --batch-size must be positive")
  _check_timeline_args(parser, args)
  return args


def _check_timeline_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Validates the timeline options; adds timeline_window_frames / timeline_hop_frames."""
  if args.timeline_window is None:
    if args.timeline_hop is not None or args.timeline_out:
      parser.error("--timeline-hop and --timeline-out need --timeline-window")
    return
  try:
    args.timeline_window_frames = timeline.seconds_to_frames(
      args.timeline_window, "--timeline-window"
    )
    hop = args.timeline_window if args.timeline_hop is None else args.timeline_hop
    args.timeline_hop_frames = timeline.seconds_to_frames(hop, "--timeline-hop")
  except ValueError as e:
    parser.error(str(e))
  if args.timeline_hop_frames > args.timeline_window_frames:
    parser.error(
      f"--timeline-hop {args.timeline_hop} s is longer than --timeline-window "
      f"{args.timeline_window} s: the audio between windows would not be classified"
    )
  for out in args.timeline_out:
    if Path(out).suffix.lower() not in (".json", ".csv"):
      parser.error(f"--timeline-out {out}: the file must end in .json or .csv")
    if not Path(out).absolute().parent.is_dir():
      parser.error(f"--timeline-out {out}: folder {Path(out).absolute().parent} does not exist")


def load_checkpoint(folder: str, need_head: bool = True):
  """(model, params, config) of a checkpoint folder or published name; InputError naming the
  problem (missing, not a converted checkpoint, or without a classifier head when `need_head`)."""
  from dass_jax.checkpoint import is_source_name, load_model

  if not Path(folder).is_dir() and not is_source_name(folder):
    raise InputError(
      f"{folder}: checkpoint folder not found (nor a published name, hf:// id or https:// URL)"
    )
  try:
    model, params, config = load_model(folder)
  except (FileNotFoundError, ValueError, TypeError, KeyError, OSError) as e:
    raise InputError(f"{folder}: not a usable converted checkpoint ({e})") from e
  if need_head and config.num_classes < 1:
    raise InputError(
      f"{folder}: this {config.model_type} checkpoint has no classifier head (num_classes 0, an "
      "encoder): it gives embeddings, not labels"
    )
  return model, params, config


def _recorded_label_kind(folder: str) -> str | None:
  """The label kind a loaded checkpoint's metadata records (`checkpoint.label_kind`), or None."""
  from dass_jax.checkpoint import label_kind, read_metadata, resolve

  return label_kind(read_metadata(resolve(folder)))


def _choose_label_kind(args: argparse.Namespace, recorded: str | None) -> str:
  """--label-kind, else the checkpoint's; 'bce' with a warning when neither says."""
  if args.label_kind:
    return args.label_kind
  if recorded:
    return recorded
  print(
    f"warning: {args.checkpoint or args.onnx} does not record whether its classes are "
    "multi-label or single-label; probabilities are sigmoids (multi-label). Pass --label-kind ce "
    "for a single-label model (softmax)",
    file=sys.stderr,
  )
  return "bce"


def _check_timeline_inputs(
  args: argparse.Namespace, info: ModelInfo, inputs: list[tuple[str, np.ndarray]]
) -> None:
  """Raises InputError for a window a fixed-length model cannot take or a batched input."""
  length = info.fixed_length
  if length is not None and args.timeline_window_frames > length:
    raise InputError(
      f"--timeline-window {args.timeline_window} s is "
      f"{args.timeline_window_frames} frames; this {info.model_type} checkpoint takes at most "
      f"max_length={length} frames"
    )
  for path, batch in inputs:
    if batch.shape[0] != 1:
      raise InputError(
        f"{path}: a timeline needs one recording per input, the array holds a "
        f"batch of {batch.shape[0]}"
      )


def _print_text(results: list[dict[str, Any]]) -> None:
  for result in results:
    unit = "samples" if "samples" in result else "frames"
    length = f"{result[unit]} {unit}"
    if "cropped_from" in result:
      length = f"the first {result[unit]} of {result['cropped_from']} {unit}"
    print(f"{result['input']}[{result['index']}] ({length})")
    for rank, top in enumerate(result["top"], 1):
      print(
        f"  {rank:2d}. {top['name']:<40s} class {top['class']:4d}  "
        f"logit {top['logit']:+8.4f}  p {top['probability']:.4f}"
      )
    if "timeline" in result:
      print(f"  timeline: {len(result['timeline'])} windows")
      for window in result["timeline"]:
        labels = " | ".join(f"{t['name']} {t['probability']:.3f}" for t in window["top"])
        print(f"    {window['start_s']:9.2f}-{window['end_s']:9.2f} s  {labels}")


def _write_timelines(
  args: argparse.Namespace, header: dict[str, Any], results: list[dict[str, Any]]
) -> None:
  report = {
    **header,
    "window_s": args.timeline_window_frames / timeline.FRAMES_PER_SECOND,
    "hop_s": args.timeline_hop_frames / timeline.FRAMES_PER_SECOND,
    "window_frames": args.timeline_window_frames,
    "hop_frames": args.timeline_hop_frames,
    "frames_per_second": timeline.FRAMES_PER_SECOND,
    "top_k": args.top_k,
    "inputs": [
      {"input": r["input"], "frames": r["timeline"][-1]["end_frame"], "windows": r["timeline"]}
      for r in results
    ],
  }
  for out in args.timeline_out:
    timeline.write_timeline(out, report)


def _load_onnx(path: str):
  from dass_jax.onnx_model import OnnxModel

  if not Path(path).is_file():
    raise InputError(f"{path}: ONNX file not found")
  try:
    return OnnxModel(path)
  except ValueError as e:
    raise InputError(str(e)) from e


def _load(args: argparse.Namespace):
  """(apply_fn(params, x), params, ModelInfo, recorded label kind or None) of --checkpoint
  (jitted JAX) or --onnx (an export of the 527 AudioSet classes is multi-label; other ONNX
  classifiers do not record it)."""
  if args.onnx:
    model = _load_onnx(args.onnx)
    kind = "bce" if model.config.get("label_kind") == "audioset" else None
    return (lambda _, x: model(x)), None, model.info, kind
  import jax

  model, params, config = load_checkpoint(args.checkpoint)
  kind = _recorded_label_kind(args.checkpoint)
  return jax.jit(lambda p, x: model.apply({"params": p}, x)), params, model_info(config), kind


def main(argv: list[str] | None = None) -> int:
  """Runs the CLI; returns the exit status (0, or 2 for a bad checkpoint or input)."""
  args = _parse_args(argv)
  timeline_on = args.timeline_window is not None
  try:
    apply_fn, params, info, recorded_kind = _load(args)
    inputs = [(path, load_input(path, info)) for path in args.inputs]
    if timeline_on:
      _check_timeline_inputs(args, info, inputs)
    for path, features in inputs:
      _check_length(path, features, info, args)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  args.label_kind = _choose_label_kind(args, recorded_kind)
  length_key = "samples" if info.input_kind == "waveform" else "frames"
  results, all_logits = [], []
  for path, features in inputs:
    batch = model_input(features, info, is_audio(path))
    try:
      logits = predict_logits(apply_fn, params, batch, args.batch_size)
    except ValueError as e:  # the model rejects this input's shape (e.g. AST length)
      print(f"error: {path}: {e}", file=sys.stderr)
      return 2
    all_logits.append(logits)
    for i, row in enumerate(logits):
      result = {
        "input": str(path),
        "index": i,
        length_key: int(batch.shape[1]),
        "top": top_classes(row, args.top_k, info.names, args.label_kind),
      }
      if too_long(features, info, is_audio(path)):
        result["cropped_from"] = int(features.shape[1])
      if timeline_on:
        result["timeline"] = timeline_windows(apply_fn, params, features[0], info, args)
      results.append(result)
  if args.logits_npy:
    np.save(args.logits_npy, np.concatenate(all_logits, axis=0))
  header = {
    "checkpoint": str(args.checkpoint or args.onnx),
    "model_type": info.model_type,
    "num_classes": info.num_classes,
    "label_kind": args.label_kind,
    "probability": "softmax" if args.label_kind == "ce" else "sigmoid",
  }
  if timeline_on:
    _write_timelines(args, header, results)
  if args.json:
    print(json.dumps({**header, "results": results}, indent=2))
  else:
    _print_text(results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
