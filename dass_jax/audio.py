"""Audio file loading for feature extraction: mono float32 at 16 kHz, with clear errors.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, mp3 with libsndfile >= 1.1, and
more), falling back to librosa/audioread for anything libsndfile cannot open (needs an audioread
backend such as ffmpeg). Samples come back as float32 in [-1, 1], like torchaudio.load.

Channels are averaged to mono. (The AST/DASS dataloader passes the (channels, samples) tensor to
torchaudio's kaldi.fbank, which keeps channel 0 only; AudioSet clips are mono, where both agree.)

Resampling uses librosa.resample with res_type='soxr_hq' (the SoX resampler, libsoxr, at high
quality; librosa's default), the closest match to the `sox` conversion AST/DASS recipes use to
prepare 16 kHz data. `iter_audio_blocks` streams the same resampler (soxr.ResampleStream), so its
blocks join up to the one-shot result without edge effects.

soundfile, soxr and librosa are imported inside the functions that use them, so that `dass_jax`
imports with jax, flax and numpy alone (accelerator images often lack the audio libraries).

Every failure to produce audio raises `AudioLoadError` (a ValueError) naming the file: missing file,
directory, empty file, unrecognised or non-audio bytes, truncated or corrupt data, zero samples,
non-finite samples.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import warnings
from collections.abc import Iterator

import numpy as np

from dass_jax.constants import SAMPLE_RATE

# File extensions taken as audio when a folder is scanned (`dass_jax.prepare`, `tfds_folder`).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".aifc", ".au")
_RESAMPLE_TYPE = "soxr_hq"
_UNKNOWN_LENGTH = 2**62


class AudioLoadError(ValueError):
  """An audio file could not be turned into samples; the message names the file and the problem."""


def has_audio_extension(path: str | os.PathLike) -> bool:
  """Whether a file name ends in one of AUDIO_EXTENSIONS (any case)."""
  return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


def _check_path(path) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioLoadError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise AudioLoadError(f"{path}: not a regular file")
  if os.path.getsize(path) == 0:
    raise AudioLoadError(f"{path}: empty file (0 bytes)")
  return path


def _check_wav_complete(path: str) -> None:
  """Raises if a RIFF/WAVE file's data chunk is shorter than its header declares.

  libsndfile silently reads what is there; a download or recording cut short would otherwise load as
  a shorter clip.
  """
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    header = f.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
      return
    offset = 12
    while offset + 8 <= size:
      f.seek(offset)
      chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
      if chunk_id == b"data":
        declared = chunk_size
        present = size - offset - 8
        if 0 < declared < 0xFFFFFFFF and present < declared:
          raise AudioLoadError(
            f"{path}: truncated WAV file: header declares {declared} bytes of "
            f"audio data, only {present} present"
          )
        return
      offset += 8 + chunk_size + (chunk_size & 1)


def _read_soundfile(path: str) -> tuple[np.ndarray, int]:
  import soundfile as sf

  with sf.SoundFile(path) as f:
    declared = f.frames
    data = f.read(dtype="float32", always_2d=True)
    sample_rate = f.samplerate
  if 0 < declared < _UNKNOWN_LENGTH and data.shape[0] < declared:
    raise AudioLoadError(
      f"{path}: truncated or corrupt audio: header declares {declared} frames, "
      f"only {data.shape[0]} decoded"
    )
  return data, sample_rate


def _read_librosa(path: str) -> tuple[np.ndarray, int]:
  import librosa

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    data, sample_rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
  data = np.atleast_2d(data).T
  return data, int(sample_rate)


def _decode(path: str) -> tuple[np.ndarray, int]:
  """(samples, channels) float32 and the file's sample rate."""
  import soundfile as sf

  _check_wav_complete(path)
  try:
    return _read_soundfile(path)
  except sf.SoundFileError as sf_error:
    try:
      return _read_librosa(path)
    except Exception as fallback_error:  # audioread raises several unrelated exception types.
      reason = type(fallback_error).__name__
      if str(fallback_error):
        reason += f": {fallback_error}"
      raise AudioLoadError(
        f"{path}: cannot decode audio (soundfile: {sf_error}; librosa/audioread fallback: {reason})"
      ) from fallback_error


def _to_mono(data: np.ndarray, path: str) -> np.ndarray:
  if data.shape[0] == 0:
    raise AudioLoadError(f"{path}: file holds no audio samples (zero length)")
  if not np.all(np.isfinite(data)):
    raise AudioLoadError(f"{path}: audio contains NaN or inf samples")
  return data.mean(axis=1, dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Loads an audio file as mono float32 samples at `sample_rate`.

  Args:
    path: audio file.
    sample_rate: output rate in Hz (16000 for AST/DASS).

  Returns:
    (samples,) float32, roughly in [-1, 1]; channels averaged; resampled with soxr_hq if needed.

  Raises:
    AudioLoadError: missing, empty, truncated, corrupt or non-audio file, or no samples.
  """
  path = _check_path(path)
  data, file_rate = _decode(path)
  mono = _to_mono(data, path)
  return resample(mono, file_rate, sample_rate)


@dataclasses.dataclass(frozen=True)
class AudioInfo:
  """What a file holds: its own sample rate, channel count and length in samples (per channel)."""

  sample_rate: int
  channels: int
  frames: int

  @property
  def seconds(self) -> float:
    return self.frames / self.sample_rate


def inspect_audio(path: str | os.PathLike) -> AudioInfo:
  """Decodes a whole file at its own rate (no resampling) and describes it.

  Every check of `load_audio` applies (missing, empty, truncated, corrupt, non-audio, zero
  samples, NaN / inf), so a file that passes loads.

  Raises:
    AudioLoadError: as `load_audio`.
  """
  path = _check_path(path)
  data, file_rate = _decode(path)
  _to_mono(data, path)
  return AudioInfo(sample_rate=int(file_rate), channels=int(data.shape[1]), frames=len(data))


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
  """(samples,) mono audio at `orig_rate` -> float32 at `target_rate` (soxr_hq, as `load_audio`)."""
  if orig_rate == target_rate:
    return np.asarray(samples, np.float32)
  import librosa

  out = librosa.resample(
    np.asarray(samples, np.float32),
    orig_sr=orig_rate,
    target_sr=target_rate,
    res_type=_RESAMPLE_TYPE,
  )
  return out.astype(np.float32)


def soundfile_can_read(path: str | os.PathLike) -> bool:
  """Whether libsndfile opens `path` (then `iter_audio_blocks` can stream it)."""
  import soundfile as sf

  try:
    sf.info(os.fspath(path))
  except (sf.SoundFileError, RuntimeError, OSError):
    return False
  return True


def iter_audio_blocks(
  path: str | os.PathLike, block_seconds: float, sample_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
  """Streams a long file as mono float32 blocks at `sample_rate`, without loading it whole.

  Reads `block_seconds` of audio at the file's own rate per step, downmixes, and resamples through a
  streaming soxr resampler, so the concatenated blocks equal (to float rounding) what `load_audio`
  returns. Blocks hold about block_seconds * sample_rate samples (exactly that when no resampling
  is needed; the last one is shorter). Only formats soundfile opens are supported.

  Args:
    path: audio file.
    block_seconds: seconds per block (> 0).
    sample_rate: output rate in Hz.

  Yields:
    (samples,) float32 blocks.

  Raises:
    AudioLoadError: missing, empty, unreadable or zero-length file.
  """
  import soundfile as sf

  if block_seconds <= 0:
    raise ValueError(f"block_seconds must be positive, got {block_seconds}")
  path = _check_path(path)
  _check_wav_complete(path)
  try:
    f = sf.SoundFile(path)
  except sf.SoundFileError as e:
    raise AudioLoadError(f"{path}: cannot open audio for streaming ({e})") from e
  with f:
    if f.frames == 0:
      raise AudioLoadError(f"{path}: file holds no audio samples (zero length)")
    stream = None
    if f.samplerate != sample_rate:
      import soxr

      stream = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    block_frames = max(1, int(round(block_seconds * f.samplerate)))
    remaining = f.frames
    while remaining > 0:
      try:
        data = f.read(min(block_frames, remaining), dtype="float32", always_2d=True)
      except sf.SoundFileError as e:
        raise AudioLoadError(f"{path}: corrupt audio data ({e})") from e
      if data.shape[0] == 0:
        raise AudioLoadError(
          f"{path}: truncated or corrupt audio: stream ended {remaining} frames early"
        )
      remaining -= data.shape[0]
      mono = _to_mono(data, path)
      if stream is not None:
        mono = stream.resample_chunk(mono, last=remaining == 0)
      if mono.size:
        yield mono
