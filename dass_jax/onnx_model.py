"""An exported ONNX model (`python -m dass_jax.export --format onnx`) run with onnxruntime, no JAX.

    model = OnnxModel("dass_small.onnx")
    model.info.input_kind, model.info.fixed_length, model.info.names
    logits = model(features)            # (batch, frames, 128) float32 -> (batch, classes)

Everything `dass_jax.predict` needs to know about the model comes from the file's metadata_props
(`dass_jax.export.METADATA_KEYS`, read here by name so that this module imports with onnxruntime
and numpy alone): what the input is, its fixed length if any, the class names. A graph exported
with batch 1 (`--frames N`) is run row by row; a `--dynamic` graph takes the whole batch.

Threads: onnxruntime's defaults (one intra-op thread per physical core), all graph optimisations.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from dass_jax.constants import FRAMES_PER_SECOND, SAMPLE_RATE

PREFIX = "dass_jax."


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What `dass_jax.predict` needs to know about a model, from a config or from ONNX metadata.

  fixed_length: frames (10 ms) every input must have (fbank: frames; waveform: samples / 160), or
  None for any; names: one display name per logit.
  """

  model_type: str
  input_kind: str
  num_mel_bins: int
  fixed_length: int | None
  num_classes: int
  names: tuple[str, ...]


class OnnxModel:
  """An onnxruntime session of an exported file, with the file's `ModelInfo`.

  Raises (constructor):
    ValueError: the file is not a readable ONNX model, or lacks the dass_jax metadata.
  """

  def __init__(self, path: str | os.PathLike, intra_op_threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3  # errors only: no notes on folded initializers
    try:
      self.session = ort.InferenceSession(
        os.fspath(path), options, providers=["CPUExecutionProvider"]
      )
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
      raise ValueError(f"{path}: not a readable ONNX model ({e})") from e
    props = self.session.get_modelmeta().custom_metadata_map
    try:
      frames = int(props[PREFIX + "frames"])
      fixed = int(props[PREFIX + "fixed_length"])
      self.batch = int(props[PREFIX + "batch"])
      names = tuple(json.loads(props[PREFIX + "class_names"]))
      self.info = ModelInfo(
        model_type=props[PREFIX + "model_type"],
        input_kind=props[PREFIX + "input_kind"],
        num_mel_bins=int(props[PREFIX + "num_mel_bins"]),
        fixed_length=frames or fixed or None,
        num_classes=int(props[PREFIX + "num_classes"]),
        names=names,
      )
    except (KeyError, ValueError) as e:
      raise ValueError(
        f"{path}: no dass_jax metadata ({e}); export it with python -m dass_jax.export"
      ) from e
    self.input_name = self.session.get_inputs()[0].name
    self.config = {key[len(PREFIX) :]: value for key, value in props.items()}

  def expected_shape(self) -> tuple[int | None, ...]:
    """The input shape the graph takes (None: any), without the batch axis."""
    info = self.info
    if info.input_kind != "waveform":
      return (info.fixed_length, info.num_mel_bins)
    if info.fixed_length is None:
      return (None,)
    return (info.fixed_length * (SAMPLE_RATE // FRAMES_PER_SECOND),)

  def __call__(self, batch: np.ndarray) -> np.ndarray:
    """(batch, ...) model input -> (batch, classes) float32 logits.

    Raises:
      ValueError: the input's shape is not one the graph takes (the message says which).
    """
    batch = np.asarray(batch, np.float32)
    expected = self.expected_shape()
    if batch.ndim != len(expected) + 1 or any(
      e is not None and e != n for e, n in zip(expected, batch.shape[1:])
    ):
      want = ", ".join("any" if e is None else str(e) for e in expected)
      raise ValueError(
        f"input shape {batch.shape} does not fit the exported graph's (batch, {want})"
      )
    rows = [batch] if self.batch != 1 else [row[None] for row in batch]
    outs = [self.session.run(None, {self.input_name: row})[0] for row in rows]
    return np.concatenate(outs, axis=0).astype(np.float32)
