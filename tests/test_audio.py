"""dass_jax.audio: loading, downmix, resampling, streaming, and clear errors on bad files.

Documented results checked here: every unreadable input raises AudioLoadError (a ValueError) naming
the file; a WAV whose data chunk is cut short is rejected (libsndfile alone would silently load the
shorter clip); all-zero audio loads and gives finite features (ln(float32 eps) everywhere).
"""

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from dass_jax.audio import AudioLoadError, iter_audio_blocks, load_audio
from dass_jax.frontends.kaldi_fbank import audio_features, fbank


def _noise(num_samples: int, channels: int = 1, seed: int = 0) -> np.ndarray:
  x = 0.1 * np.random.default_rng(seed).standard_normal((num_samples, channels))
  return x.astype(np.float32).squeeze()


def _write(path, data, sample_rate=16000, **kwargs):
  sf.write(path, data, sample_rate, **kwargs)
  return path


def test_wav_float_roundtrip_is_exact(tmp_path):
  x = _noise(16000)
  out = load_audio(_write(tmp_path / "a.wav", x, subtype="FLOAT"))
  assert out.dtype == np.float32 and out.shape == (16000,)
  np.testing.assert_array_equal(out, x)


def test_int16_wav_scaled_to_unit_range(tmp_path):
  x = np.array([0, 16384, -32768, 32767] * 100, np.int16)
  out = load_audio(_write(tmp_path / "a.wav", x, subtype="PCM_16"))
  np.testing.assert_allclose(out[:4], [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-7)


@pytest.mark.parametrize(
  "fmt, subtype, atol",
  [("flac", "PCM_16", 1e-4), ("ogg", "VORBIS", None), ("mp3", "MPEG_LAYER_III", None)],
)
def test_compressed_roundtrips(tmp_path, fmt, subtype, atol):
  if fmt.upper() not in sf.available_formats():
    pytest.skip(f"libsndfile here cannot write {fmt}")
  t = np.arange(32000) / 16000
  x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  out = load_audio(_write(tmp_path / f"a.{fmt}", x, format=fmt.upper(), subtype=subtype))
  if atol is not None:  # lossless
    assert out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=atol)
  else:  # lossy: same length up to codec padding, same tone energy
    assert abs(out.size - x.size) < 0.05 * x.size
    assert abs(np.sqrt(np.mean(out**2)) - 0.5 / np.sqrt(2)) < 0.02


def test_multichannel_downmixed_by_mean(tmp_path):
  x = _noise(8000, channels=3)
  out = load_audio(_write(tmp_path / "a.wav", x, subtype="FLOAT"))
  assert out.shape == (8000,)
  np.testing.assert_allclose(out, x.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
def test_resampled_to_16k(tmp_path, sample_rate):
  t = np.arange(sample_rate) / sample_rate
  x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
  out = load_audio(_write(tmp_path / "a.wav", x, sample_rate, subtype="FLOAT"))
  assert out.size == 16000
  spectrum = np.abs(np.fft.rfft(out[2000:14000] * np.hanning(12000)))
  assert abs(np.argmax(spectrum) * 16000 / 12000 - 1000) < 2
  assert abs(np.sqrt(np.mean(out[2000:14000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_missing_file(tmp_path):
  with pytest.raises(AudioLoadError, match="no such file") as info:
    load_audio(tmp_path / "missing.wav")
  assert "missing.wav" in str(info.value)
  assert isinstance(info.value, ValueError)


def test_directory(tmp_path):
  with pytest.raises(AudioLoadError, match="not a regular file"):
    load_audio(tmp_path)


def test_empty_file(tmp_path):
  (tmp_path / "empty.wav").write_bytes(b"")
  with pytest.raises(AudioLoadError, match="empty file") as info:
    load_audio(tmp_path / "empty.wav")
  assert "empty.wav" in str(info.value)


def test_zero_length_audio(tmp_path):
  path = _write(tmp_path / "zero.wav", np.zeros(0, np.float32))
  with pytest.raises(AudioLoadError, match="no audio samples"):
    load_audio(path)
  with pytest.raises(AudioLoadError, match="no audio samples"):
    list(iter_audio_blocks(path, 1.0))


def test_header_only_wav(tmp_path):
  data = _write(tmp_path / "full.wav", _noise(1600)).read_bytes()
  (tmp_path / "header.wav").write_bytes(data[:30])
  with pytest.raises(AudioLoadError, match="cannot decode") as info:
    load_audio(tmp_path / "header.wav")
  assert "header.wav" in str(info.value)


def test_truncated_wav_data(tmp_path):
  data = _write(tmp_path / "full.wav", _noise(16000)).read_bytes()
  (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
  with pytest.raises(AudioLoadError, match="truncated") as info:
    load_audio(tmp_path / "cut.wav")
  assert "cut.wav" in str(info.value)
  with pytest.raises(AudioLoadError, match="truncated"):
    list(iter_audio_blocks(tmp_path / "cut.wav", 0.5))


def test_corrupt_flac(tmp_path):
  data = _write(tmp_path / "full.flac", _noise(32000), format="FLAC").read_bytes()
  (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
  with pytest.raises(AudioLoadError, match=r"cut\.flac"):
    load_audio(tmp_path / "cut.flac")


@pytest.mark.parametrize(
  "name, payload",
  [
    ("random.wav", np.random.default_rng(0).bytes(5000)),
    ("text.flac", b"this is not audio at all\n" * 50),
    ("notes.txt", b"just text"),
  ],
)
def test_non_audio_bytes(tmp_path, name, payload):
  (tmp_path / name).write_bytes(payload)
  with pytest.raises(AudioLoadError, match="cannot decode") as info:
    load_audio(tmp_path / name)
  assert name in str(info.value)


def test_all_zero_audio_gives_finite_features(tmp_path):
  path = _write(tmp_path / "zeros.wav", np.zeros(16000, np.float32))
  wave = load_audio(path)
  assert np.all(wave == 0)
  feats = fbank(wave)
  assert np.all(np.isfinite(feats))
  normalised = audio_features(path, target_frames=1024)
  assert normalised.shape == (1024, 128) and np.all(np.isfinite(normalised))


def test_very_short_file_gives_one_frame(tmp_path):
  path = _write(tmp_path / "short.wav", _noise(100), subtype="FLOAT")
  assert audio_features(path).shape == (1, 128)


@pytest.mark.parametrize("sample_rate, channels", [(16000, 1), (44100, 2)])
def test_streamed_blocks_join_to_load_audio(tmp_path, sample_rate, channels):
  x = _noise(int(2.3 * sample_rate), channels)
  path = _write(tmp_path / "long.wav", x, sample_rate, subtype="FLOAT")
  blocks = list(iter_audio_blocks(path, block_seconds=0.5))
  assert len(blocks) >= 4 and all(b.dtype == np.float32 for b in blocks)
  joined = np.concatenate(blocks)
  whole = load_audio(path)
  assert abs(joined.size - whole.size) <= 1
  n = min(joined.size, whole.size)
  np.testing.assert_allclose(joined[:n], whole[:n], atol=1e-5)
  if sample_rate == 16000:
    assert [b.size for b in blocks[:-1]] == [8000] * (len(blocks) - 1)


def test_stream_rejects_bad_block_size_and_non_audio(tmp_path):
  (tmp_path / "x.wav").write_bytes(b"not audio" * 10)
  with pytest.raises(ValueError, match="block_seconds"):
    list(iter_audio_blocks(tmp_path / "x.wav", 0))
  with pytest.raises(AudioLoadError, match=r"x\.wav"):
    list(iter_audio_blocks(tmp_path / "x.wav", 1.0))
