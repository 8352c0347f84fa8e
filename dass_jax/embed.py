r"""Scene and timestamp embeddings of audio from any registered model (DASS, AST, AuM, Dasheng,
SSLAM).

    python -m dass_jax.embed --checkpoint NAME|FOLDER a.wav b.flac long_recording.wav --out x.npz

    embedder = Embedder.from_checkpoint("work_dirs/my_sounds/export")
    out = embedder.embed_file("a.wav")     # out.scene (D,), out.frames (T, D), out.times_ms (T,)

What the vectors are. The model's last hidden state as a sequence over time
(`dass_jax.models.ModelSpec.hidden_states`):
  DASS     the classifier's normalised last-stage map averaged over frequency: one vector per 32
           input frames (320 ms);
  AST, AuM, SSLAM  the final patch tokens (class/distillation tokens dropped) averaged over
           frequency: one per time patch (AST 100 ms hop, 160 ms patches; AuM, SSLAM 160 ms);
  Dasheng  its embeddings, one per 40 ms.
Timestamp embeddings are those vectors, token i stamped at its centre (i + 1/2) x hop, the hop
being the model's input per token: for DASS and Dasheng measured once from the token counts at two
input lengths (32 frames = 320 ms; 640 samples = 40 ms), for AST, AuM and SSLAM a window's length
over its tokens (AST: 1024 frames in 101 overlapping patches every 10 frames are stamped every 101.4
ms, up to 110 ms off the patch centres at the window's end); only tokens whose centre lies within
the recording are stamped. The scene embedding is the mean of every token that starts within the
recording (the "mean-pooled last hidden state"; for DASS, whose strided convolutions pad the last
token, exactly the vector its classifier reads), so it may count one token more than the
timestamp embeddings.

Long files, no silent crop. The whole recording is read (`dass_jax.predict.load_input`: audio of
any length, streamed where soundfile reads the format). DASS and Dasheng take any length in one
pass (Dasheng encodes 10.08 s chunks internally). AST and AuM have position embeddings for
`max_length` frames, and SSLAM is fed clips of its `max_length` as its authors do: their input is
cut into consecutive windows of exactly max_length frames (no overlap, hop = max_length), the last
one padded with the fbank of silence, and the windows' tokens are concatenated in time order;
tokens whose centre lies in the padding are dropped (so are those of any padding, for every
model). A recording shorter than one token is padded to one;
shorter than half a token, it is stamped at the middle of the recording.

Shapes compile once per input length. `bucket_seconds` > 0 pads every input to a multiple of
that length (the padding's tokens dropped as above), so that many clips of different lengths
share a few compiled shapes (`experiments.probe` uses 0.32 s, DASS's token length); the tokens next
to the padding then see some of it, so results differ slightly from exact lengths (0, the
default).

X.npz (`--out`): "files" (N,) str, "scene" (N, D) float32, "frames" (sum of T_i, D) float32 and
"times_ms" (sum of T_i,) float64 (every file's timestamp embeddings one after another), "offsets"
(N + 1,) int64 (file i's rows are offsets[i]:offsets[i + 1]), "model_type" str.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

import jax
import numpy as np

from dass_jax import files, models
from dass_jax.constants import SAMPLE_RATE
from dass_jax.frontends import kaldi_fbank

FBANK_STEP_MS = 10.0  # one Kaldi frame
WAVEFORM_STEP_MS = 1000.0 / SAMPLE_RATE  # one sample
MIN_WAVEFORM_SAMPLES = 640  # one 40 ms Dasheng token


@dataclasses.dataclass(frozen=True)
class Embeddings:
  """One recording's embeddings: scene (D,) float32, frames (T, D) float32, times_ms (T,)."""

  scene: np.ndarray
  frames: np.ndarray
  times_ms: np.ndarray


class Embedder:
  """Embeddings of a model's last hidden state (see the module docstring).

  Args:
    model, params, config: a loaded model (`dass_jax.load_model`).
    batch_size: windows of a fixed-length model run per call.
    bucket_seconds: pad inputs to a multiple of this many seconds (0: exact lengths).
  """

  def __init__(self, model, params, config, batch_size: int = 16, bucket_seconds: float = 0.0):
    spec = models.spec_of(config)
    if spec.hidden_states is None:
      raise ValueError(f"{config.model_type} registers no hidden_states: it has no embeddings")
    self.model, self.params, self.config = model, params, config
    self.input_kind = spec.input_kind
    self.batch_size = batch_size
    self.step_ms = WAVEFORM_STEP_MS if self.input_kind == "waveform" else FBANK_STEP_MS
    self.bucket_steps = int(round(bucket_seconds * 1000.0 / self.step_ms))
    self.fixed_length = models.fixed_length(config)
    self.sample_rate = SAMPLE_RATE
    self._info = None  # predict.ModelInfo, for reading files

    def hidden(params, x):
      _, state = model.apply({"params": params}, x, train=False, mutable=["intermediates"])
      return spec.hidden_states(state["intermediates"], config).astype(np.float32)

    self._hidden = jax.jit(hidden)
    self.dim = int(jax.eval_shape(hidden, params, self._example_input()).shape[-1])
    tokens = lambda steps: jax.eval_shape(hidden, params, self._example_input(steps)).shape[1]
    if self.fixed_length is not None:
      self.token_steps = self.fixed_length / tokens(self.fixed_length)
    else:  # input steps per token, free of the edge effects of one length
      base = 40960 if self.input_kind == "waveform" else 1024
      self.token_steps = base / (tokens(2 * base) - tokens(base))

  @classmethod
  def from_checkpoint(cls, checkpoint: str | os.PathLike, **kwargs) -> Embedder:
    """From a converted checkpoint folder, a training export, or a published name."""
    from dass_jax.checkpoint import load_model

    return cls(*load_model(checkpoint), **kwargs)

  def _example_input(self, steps: int | None = None) -> jax.ShapeDtypeStruct:
    if self.input_kind == "waveform":
      return jax.ShapeDtypeStruct((1, steps or MIN_WAVEFORM_SAMPLES), np.float32)
    frames = steps or self.fixed_length or 64
    return jax.ShapeDtypeStruct((1, frames, self.config.num_mel_bins), np.float32)

  @property
  def _pad_value(self) -> float:
    """The model input of silence: 0 samples, or the normalised fbank of zeros (as the data
    pipeline pads clips)."""
    if self.input_kind == "waveform":
      return 0.0
    return float(kaldi_fbank.normalize(np.zeros(1, np.float32))[0])

  def model_input(self, waveforms: np.ndarray) -> np.ndarray:
    """(batch, samples) 16 kHz float audio -> the model's input: itself for waveform models,
    else (batch, frames, mel) normalised Kaldi fbank."""
    waveforms = np.asarray(waveforms, np.float32)
    if self.input_kind == "waveform":
      return waveforms
    mel = self.config.num_mel_bins
    return np.stack(
      [
        np.asarray(kaldi_fbank.normalize(kaldi_fbank.fbank(w, num_mel_bins=mel)), np.float32)
        for w in waveforms
      ]
    )

  def embed_inputs(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene and timestamp embeddings of a batch of equally long model inputs.

    Args:
      inputs: (batch, steps, ...) model input (fbank frames or samples).

    Returns:
      (batch, D) scene embeddings: the mean of every token that starts within the input (so a
      token the model's own stride padding cuts short counts, as in the classifier's pooling);
      (batch, T, D) float32 timestamp embeddings: the tokens whose centre lies within the input;
      (T,) float64 their times in ms.
    """
    batch, steps = inputs.shape[:2]
    length = self.fixed_length
    if length is not None:
      padded = math.ceil(steps / length) * length
    else:
      padded = max(steps, MIN_WAVEFORM_SAMPLES if self.input_kind == "waveform" else 1)
      if self.bucket_steps:
        padded = math.ceil(padded / self.bucket_steps) * self.bucket_steps
    if padded > steps:
      pad = [(0, 0), (0, padded - steps)] + [(0, 0)] * (inputs.ndim - 2)
      inputs = np.pad(inputs, pad, constant_values=self._pad_value)
    window = length or padded
    windows = inputs.reshape((batch * (padded // window), window) + inputs.shape[2:])
    hidden = np.concatenate(
      [
        np.asarray(self._hidden(self.params, windows[i : i + self.batch_size]))
        for i in range(0, windows.shape[0], self.batch_size)
      ]
    )
    hidden = hidden.reshape(batch, -1, hidden.shape[-1])
    starts = np.arange(hidden.shape[1]) * self.token_steps  # in input steps
    covering = max(1, int(np.sum(starts < steps)))
    scene = hidden[:, :covering].mean(axis=1)
    centres = starts + 0.5 * self.token_steps
    stamped = max(1, int(np.sum(centres < steps)))
    times = centres[:stamped] * self.step_ms
    if centres[0] >= steps:  # an input shorter than half a token: one token, at its middle
      times = np.array([steps * self.step_ms / 2])
    return scene, hidden[:, :stamped], times

  def embed_model_input(self, x: np.ndarray) -> Embeddings:
    """One recording's embeddings from its model input (steps, ...) (no batch axis)."""
    scene, frames, times = self.embed_inputs(x[None])
    return Embeddings(scene=scene[0], frames=frames[0], times_ms=times)

  def embed_waveform(self, waveform: np.ndarray) -> Embeddings:
    """One recording's embeddings from (samples,) 16 kHz audio."""
    return self.embed_model_input(self.model_input(np.asarray(waveform)[None])[0])

  def embed_file(self, path: str | os.PathLike) -> Embeddings:
    """One audio file's embeddings (the whole recording; also a .npy of model input)."""
    from dass_jax.predict import load_input, model_info

    if self._info is None:
      self._info = model_info(self.config)
    batch = load_input(path, self._info)
    if batch.shape[0] != 1:
      raise ValueError(f"{path}: holds a batch of {batch.shape[0]} inputs; embed one recording")
    return self.embed_model_input(batch[0])


def save_npz(path: str | os.PathLike, names: list[str], results: list[Embeddings], model_type: str):
  """Writes X.npz (module docstring) atomically."""
  offsets = np.cumsum([0] + [len(r.times_ms) for r in results]).astype(np.int64)
  with files.atomic_file(path) as tmp:
    np.savez(
      tmp,
      files=np.asarray(names, dtype=str),
      scene=np.stack([r.scene for r in results]).astype(np.float32),
      frames=np.concatenate([r.frames for r in results]).astype(np.float32),
      times_ms=np.concatenate([r.times_ms for r in results]).astype(np.float64),
      offsets=offsets,
      model_type=np.asarray(model_type),
    )


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m dass_jax.embed",
    description="Scene and timestamp embeddings (last hidden state) of audio files.",
  )
  parser.add_argument(
    "--checkpoint", required=True, help="converted checkpoint folder or a published name"
  )
  parser.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files of any length")
  parser.add_argument("--out", required=True, help="the .npz to write")
  parser.add_argument(
    "--batch-size", type=int, default=16, help="windows per call (AST, AuM, SSLAM)"
  )
  args = parser.parse_args(argv)
  if not args.out.endswith(".npz"):
    parser.error("--out must end in .npz")
  from dass_jax.predict import InputError, load_checkpoint

  try:
    model, params, config = load_checkpoint(args.checkpoint, need_head=False)
    embedder = Embedder(model, params, config, batch_size=args.batch_size)
    results = [embedder.embed_file(path) for path in args.inputs]
  except (InputError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  save_npz(args.out, [str(Path(p)) for p in args.inputs], results, config.model_type)
  for path, r in zip(args.inputs, results):
    step = float(np.diff(r.times_ms).mean()) if len(r.times_ms) > 1 else float("nan")
    print(f"{path}: {len(r.times_ms)} timestamps every {step:.1f} ms, dim {r.frames.shape[1]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
