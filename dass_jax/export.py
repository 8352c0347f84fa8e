"""Export a converted checkpoint (DASS, AST, AuM, Dasheng) to ONNX or to serialized StableHLO.

    python -m dass_jax.export --checkpoint NAME|FOLDER --format onnx|stablehlo --out FILE \\
        [--frames N | --dynamic]

The graph has one input and one output, as `dass_jax.predict` feeds the model:
  * fbank models (DASS, AST, AuM): `input`, normalised Kaldi fbank (batch, frames, 128) float32
    (`dass_jax.frontends.kaldi_fbank.audio_features`), batch 1 accepted;
  * waveform models (Dasheng): `input`, 16 kHz samples (batch, samples) float32; the log-mel front
    end (STFT as an ONNX `DFT`, mel matrix, dB, BatchNorm) is inside the graph;
  * `logits` (batch, classes) float32.

Lengths. `--frames N` fixes the input at batch 1 and N frames of 10 ms (waveform models: 160 N
samples); the default is the model's `max_length` for AST / AuM (their position embeddings fix
it: any other N is refused) and 1024 (10.24 s) for DASS and Dasheng. `--dynamic` exports one
graph for any batch and, for DASS, any number of frames (its scan runs as loops whose trip counts
come from the input's shape, `pallas_kernels.loop_scan`); AST and AuM stay at `max_length` frames
(any batch); Dasheng's encoder cuts the tokens into 10.08 s chunks with Python-level slicing,
which needs a static length, so it only exports fixed lengths.

Formats:
  onnx       through jax2onnx (opset 23), with the model description in the file's
             `metadata_props` (`METADATA_KEYS`: model type, input kind, frames, class names...)
             so that `python -m dass_jax.predict --onnx FILE` needs no checkpoint folder and no
             JAX (`dass_jax.onnx_predict`);
  stablehlo  `jax.export(...).serialize()` bytes, reloaded with `jax.export.deserialize` (any
             process with jax, no dass_jax); the same description goes to FILE.json beside it.

The selective scan of DASS and AuM is exported as `scan_impl='loop'` (`pallas_kernels.loop_scan`,
the chunked scan's forward as `lax.scan` loops: ONNX `Loop`s over chunk steps with vector bodies),
except in a `--dynamic` ONNX graph, which takes the `sequential` scan (`export_scan_impl`);
DASS's inference MLP is not token-chunked (`mlp_token_chunk=0`), and in ONNX its depthwise 3x3
conv is one grouped `Conv` (`_depthwise_as_grouped_conv`). The exported function is the model's
own `apply` with these settings, so its logits equal our JAX forward's up to rounding
(tests/test_export.py holds them to 1e-5 relative).

Export needs the [export] extra (jax2onnx, onnx, onnx-ir; see pyproject.toml); prediction from an
ONNX file needs only onnxruntime, numpy and soundfile. Exit status: 0, or 2 for a bad option or
checkpoint (the message names it); an existing --out is replaced only once the new file is
complete (written beside it, then renamed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dass_jax import models
from dass_jax.constants import FRAMES_PER_SECOND, SAMPLE_RATE
from dass_jax.labels import class_names
from dass_jax.models.ss2d import DepthwiseConv3x3
from dass_jax.predict import InputError, load_checkpoint

FORMATS = ("onnx", "stablehlo")
EXPORT_SCAN_IMPL = "loop"
DEFAULT_FRAMES = 1024
ONNX_OPSET = 23
INPUT_NAME, OUTPUT_NAME = "input", "logits"
SAMPLES_PER_FRAME = SAMPLE_RATE // FRAMES_PER_SECOND
# metadata_props of an exported ONNX file (all strings; lists and numbers as JSON).
METADATA_KEYS = (
  "dass_jax.model_type",  # 'dass', 'ast', 'aum', 'dasheng'
  "dass_jax.input_kind",  # 'fbank' or 'waveform' (dass_jax.models.INPUT_KINDS)
  "dass_jax.num_mel_bins",  # fbank bins the input has (fbank models), else 0
  "dass_jax.frames",  # input frames (10 ms) of a fixed-length export, 0 for --dynamic frames
  "dass_jax.fixed_length",  # frames a fixed-length model (AST, AuM) needs, else 0
  "dass_jax.batch",  # batch of the graph's input, 0 for any
  "dass_jax.num_classes",
  "dass_jax.label_kind",  # 'audioset' (the 527 AudioSet classes) or 'index' (class_<i>)
  "dass_jax.class_names",  # JSON list, one name per logit
  "dass_jax.config",  # JSON of the model config as exported
)


class ExportError(ValueError):
  """An option or checkpoint that cannot be exported; the message names it."""


def export_scan_impl(fmt: str, dynamic: bool) -> str:
  """The scan an export runs: `loop`, or `sequential` for a --dynamic ONNX graph.

  jax2onnx 0.17.1 cannot build the zero padding of the loop scan to a symbolic multiple of its
  chunk (it does not materialise derived symbolic sizes), while the sequential scan's one loop
  over all L steps needs no padding.
  """
  return "sequential" if fmt == "onnx" and dynamic else EXPORT_SCAN_IMPL


def inference_config(config: models.ModelConfig, scan_impl: str = EXPORT_SCAN_IMPL):
  """The config as exported: `scan_impl` for DASS / AuM, DASS's MLP without token chunks."""
  if config.model_type == "dass":
    return dataclasses.replace(config, scan_impl=scan_impl, mlp_token_chunk=0)
  if config.model_type == "aum":
    return dataclasses.replace(config, scan_impl=scan_impl)
  return config


@dataclasses.dataclass(frozen=True)
class InputLayout:
  """The graph's input: shape with None for a dynamic axis, and what its axes mean."""

  kind: str  # 'fbank' or 'waveform'
  batch: int | None
  frames: int | None  # 10 ms frames (waveform: samples / 160)
  num_mel_bins: int

  def shape(self) -> tuple[int | None, ...]:
    if self.kind == "waveform":
      return (self.batch, None if self.frames is None else self.frames * SAMPLES_PER_FRAME)
    return (self.batch, self.frames, self.num_mel_bins)


def input_layout(config, frames: int | None, dynamic: bool) -> InputLayout:
  """The input a checkpoint is exported with (see the module docstring for the rules).

  Raises:
    ExportError: --frames with --dynamic, a non-positive --frames, a --frames that a fixed-length
      model cannot take, --dynamic for Dasheng.
  """
  if frames is not None and dynamic:
    raise ExportError("--frames and --dynamic exclude each other")
  if frames is not None and frames < 1:
    raise ExportError(f"--frames must be positive, got {frames}")
  kind = models.spec_of(config).input_kind
  fixed = models.fixed_length(config)
  mel = getattr(config, "num_mel_bins", 0) if kind == "fbank" else 0
  if fixed is not None:
    if frames not in (None, fixed):
      raise ExportError(
        f"--frames {frames}: this {config.model_type} checkpoint takes max_length={fixed} frames "
        "(its position embeddings fix it)"
      )
    return InputLayout(kind, None if dynamic else 1, fixed, mel)
  if dynamic and kind == "waveform":
    raise ExportError(
      f"--dynamic: {config.model_type} cuts its tokens into fixed chunks with static slicing, "
      "so it exports fixed lengths only (use --frames N)"
    )
  if dynamic:
    return InputLayout(kind, None, None, mel)
  return InputLayout(kind, 1, frames or DEFAULT_FRAMES, mel)


def metadata(config, layout: InputLayout) -> dict[str, str]:
  """The ONNX metadata_props / StableHLO sidecar of an export (keys: METADATA_KEYS)."""
  names = class_names(config.num_classes)
  values = {
    "model_type": config.model_type,
    "input_kind": layout.kind,
    "num_mel_bins": layout.num_mel_bins,
    "frames": layout.frames or 0,
    "fixed_length": models.fixed_length(config) or 0,
    "batch": layout.batch or 0,
    "num_classes": config.num_classes,
    "label_kind": "audioset" if names[0] != "class_0" else "index",
    "class_names": json.dumps(names),
    "config": json.dumps(config.to_dict()),
  }
  return {f"dass_jax.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def _apply_fn(model, params):
  return lambda x: model.apply({"params": params}, x)


def _depthwise_as_grouped_conv(next_fun, args, kwargs, context):
  """flax method interceptor: DASS's depthwise 3x3 conv as one grouped convolution.

  `DepthwiseConv3x3` computes the conv as nine shifted multiply-adds, which XLA fuses into one
  loop on CPU; exported as they are they become 26 ONNX ops per block (9 slices, 9 muls, 8 adds),
  each a full pass over the map in onnxruntime. Here the same kernel runs as
  `lax.conv_general_dilated` with one channel per group, which jax2onnx maps to one ONNX `Conv`
  (group = C) between two Transposes. The same sums in another order (rounding only).
  """
  if not (isinstance(context.module, DepthwiseConv3x3) and context.method_name == "__call__"):
    return next_fun(*args, **kwargs)
  (x,) = args
  kernel = context.module.get_variable("params", "kernel")  # (3, 3, 1, C)
  out = jax.lax.conv_general_dilated(
    x.astype(jnp.float32),
    kernel.astype(jnp.float32),
    window_strides=(1, 1),
    padding=((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=x.shape[-1],
  )
  return out.astype(context.module.dtype)


def _onnx_apply_fn(model, params):
  """The forward as exported to ONNX: `_apply_fn` with the depthwise conv as one `Conv`."""

  def apply(x):
    with nn.intercept_methods(_depthwise_as_grouped_conv):
      return model.apply({"params": params}, x)

  return apply


def _jax_specs(layout: InputLayout) -> jax.ShapeDtypeStruct:
  dims = layout.shape()
  names = iter(("batch", "length"))
  symbols = ", ".join(next(names) if d is None else str(d) for d in dims)
  return jax.ShapeDtypeStruct(jax.export.symbolic_shape(symbols), jnp.float32)


def _atomic_write(out: Path, write) -> None:
  """Calls write(tmp_path) on a temporary file beside `out`, then renames it to `out`."""
  fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def to_stablehlo(model, params, layout: InputLayout) -> bytes:
  """`jax.export` of the forward, serialized (params are constants of the module)."""
  exported = jax.export.export(jax.jit(_apply_fn(model, params)))(_jax_specs(layout))
  return bytes(exported.serialize())


def to_onnx(
  model, params, layout: InputLayout, props: dict[str, str], depthwise_as_conv: bool = True
):
  """jax2onnx conversion of the forward: an onnx.ModelProto with `props` as metadata_props.

  `depthwise_as_conv=False` keeps DASS's nine shifted multiply-adds (benchmarks compare both).
  """
  import onnx
  from jax2onnx import to_onnx as jax2onnx_to_onnx

  # jax2onnx imports every plugin it ships; those for libraries we do not install (equinox,
  # dm-pix) log import warnings, and onnx_ir warns about untyped shape constants: noise here.
  for name in ("jax2onnx", "onnx_ir"):
    logging.getLogger(name).setLevel(logging.ERROR)
  names = iter(("batch", "length"))
  shape = tuple(next(names) if d is None else d for d in layout.shape())
  proto = jax2onnx_to_onnx(
    (_onnx_apply_fn if depthwise_as_conv else _apply_fn)(model, params),
    [shape],
    model_name=f"dass_jax_{props['dass_jax.model_type']}",
    opset=ONNX_OPSET,
    input_names=[INPUT_NAME],
    output_names=[OUTPUT_NAME],
  )
  onnx.helper.set_model_props(proto, props)
  return proto


def export_checkpoint(
  checkpoint: str, fmt: str, out: str | os.PathLike, frames: int | None, dynamic: bool
) -> dict[str, Any]:
  """Exports a checkpoint folder or published name to `out`; returns a summary for the CLI.

  Raises:
    ExportError: bad format, lengths or checkpoint.
  """
  if fmt not in FORMATS:
    raise ExportError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
  out = Path(out)
  if not out.absolute().parent.is_dir():
    raise ExportError(f"--out {out}: folder {out.absolute().parent} does not exist")
  model, params, config = _load(checkpoint)
  config = inference_config(config, export_scan_impl(fmt, dynamic))
  model = models.build_model(config)
  layout = input_layout(config, frames, dynamic)
  props = metadata(config, layout)
  start = time.perf_counter()
  if fmt == "onnx":
    proto = to_onnx(model, params, layout, props)
    import onnx

    _atomic_write(out, lambda tmp: onnx.save(proto, tmp))
  else:
    blob = to_stablehlo(model, params, layout)
    _atomic_write(out, lambda tmp: Path(tmp).write_bytes(blob))
    sidecar = out.with_name(out.name + ".json")
    _atomic_write(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(props, indent=2) + "\n"))
  return {
    "out": str(out),
    "format": fmt,
    "model_type": config.model_type,
    "input_shape": [d if d is not None else "dynamic" for d in layout.shape()],
    "seconds": round(time.perf_counter() - start, 2),
    "bytes": out.stat().st_size,
  }


def _load(checkpoint: str):
  """(model, params, config) of a classifier checkpoint (`predict.load_checkpoint`'s checks)."""
  try:
    return load_checkpoint(checkpoint)
  except InputError as e:
    raise ExportError(str(e)) from e


def main(argv: list[str] | None = None) -> int:
  """Runs the CLI; returns the exit status (0, or 2 for a bad option or checkpoint)."""
  parser = argparse.ArgumentParser(
    prog="python -m dass_jax.export",
    description="Export a converted DASS / AST / AuM / Dasheng checkpoint to ONNX or StableHLO.",
  )
  parser.add_argument("--checkpoint", required=True, help="converted folder or published name")
  parser.add_argument("--format", required=True, choices=FORMATS)
  parser.add_argument("--out", required=True, help="file to write (.onnx / .stablehlo)")
  length = parser.add_mutually_exclusive_group()
  length.add_argument(
    "--frames", type=int, default=None, help="fixed input length in 10 ms frames (batch 1)"
  )
  length.add_argument(
    "--dynamic", action="store_true", help="any batch and (DASS) any number of frames"
  )
  args = parser.parse_args(argv)
  try:
    summary = export_checkpoint(args.checkpoint, args.format, args.out, args.frames, args.dynamic)
  except ExportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main())
