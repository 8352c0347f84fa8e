"""Parity of dass_jax.frontends.kaldi_fbank with two independent Kaldi fbank implementations.

References (torchaudio, which AST/DASS call, cannot be installed here):
  * kaldi_native_fbank (C++ port of Kaldi's compute-fbank-feats), configured as the AST/DASS call:
    dither 0, 'hanning' window, 128 bins, 16 kHz, snip_edges, DC removal, pre-emphasis 0.97.
    It computes in float32 (as torchaudio does); kaldi_fbank.fbank computes in float64 and
    casts the result to float32. From 1.23 on it applies Kaldi's own check that every mel filter
    covers at least one FFT bin; at 16 kHz with a 512-point FFT, 128 filters leave filter 3 empty
    (torchaudio keeps it as an all-zero filter, whose log is the floor), so 1.23 refuses the
    AST/DASS configuration. The 128-bin comparisons therefore run against 1.22 (pinned in
    pyproject.toml); `test_matches_kaldi_native_fbank_80_bins` checks a configuration every version
    accepts.
  * transformers.ASTFeatureExtractor's numpy path (used when torchaudio is absent), unnormalised
    (do_normalize=False) and with max_length set to the true frame count, so no padding is compared.
    It does not remove the global mean; the waveform is given to it already mean-removed, as the
    AST/DASS dataloader does before calling torchaudio. Its floor constant (1.192092955078125e-07)
    differs from float32 eps in the 9th digit: ln differs by 5e-8. Agreement is ~1e-6.
Both references give 0 frames for a waveform shorter than one 25 ms window, where dass_jax pads to
one window; there the references run on the same zero-padded waveform.
Tolerance: max abs difference <= 1e-3 on every log-mel value within 16 nats (a factor 1.1e-7, about
float32 eps) of its frame's loudest filter. Deeper values are float32 rounding noise of the loud
components: float32 implementations disagree there by up to ~5e-3 (measured on chirps, where a frame
spans > 20 nats), so they are only held to 2e-2. The float32 JAX path (`fbank_batch`) is held to the
same rule against the numpy path.
"""

import warnings

import numpy as np
import pytest
from numerics import record

from dass_jax.audio import load_audio
from dass_jax.frontends import kaldi_fbank as F

TOL = 1e-3
ROUNDING_TOL = 2e-2
RESOLVABLE_DEPTH = 16.0
LOG_EPS = float(np.log(np.finfo(np.float32).eps))


def assert_logmel_close(ours: np.ndarray, ref: np.ndarray) -> float:
  """<= TOL within RESOLVABLE_DEPTH nats of the frame's loudest filter, else <= ROUNDING_TOL;
  returns the former's max abs difference."""
  assert ours.shape == ref.shape
  diff = np.abs(ours.astype(np.float64) - ref)
  resolvable = ours.max(axis=1, keepdims=True) - ours <= RESOLVABLE_DEPTH
  assert diff[resolvable].max() <= TOL, diff[resolvable].max()
  assert diff.max() <= ROUNDING_TOL, diff.max()
  return float(diff[resolvable].max())


def kaldi_native(waveform: np.ndarray, sample_rate: int = 16000, num_bins: int = 128) -> np.ndarray:
  knf = pytest.importorskip("kaldi_native_fbank")
  opts = knf.FbankOptions()
  opts.frame_opts.dither = 0.0
  opts.frame_opts.window_type = "hanning"
  opts.frame_opts.samp_freq = sample_rate
  opts.frame_opts.snip_edges = True
  opts.mel_opts.num_bins = num_bins
  opts.mel_opts.low_freq = 20.0
  opts.mel_opts.high_freq = 0.0
  opts.use_energy = False
  computer = knf.OnlineFbank(opts)
  computer.accept_waveform(sample_rate, np.asarray(waveform, np.float32).tolist())
  computer.input_finished()
  return np.array([computer.get_frame(i) for i in range(computer.num_frames_ready)], np.float32)


def ast_extractor(waveform: np.ndarray, num_frames: int) -> np.ndarray:
  transformers = pytest.importorskip("transformers")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "a mel filter has all zero values": true, filter 3 is empty.
    extractor = transformers.ASTFeatureExtractor(do_normalize=False, max_length=num_frames)
    out = extractor(np.asarray(waveform, np.float32), sampling_rate=16000, return_tensors="np")
  return out["input_values"][0]


def _signals(sample_rate: int, seconds: float = 1.0) -> dict[str, np.ndarray]:
  t = np.arange(int(sample_rate * seconds)) / sample_rate
  rng = np.random.default_rng(0)
  top = 0.45 * sample_rate
  return {
    "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.1,
    "chirp": 0.3 * np.sin(2 * np.pi * (100.0 * t + 0.5 * (top - 100.0) / seconds * t**2)),
    "noise": 0.1 * rng.standard_normal(t.size),
    "quiet_noise": 1e-4 * rng.standard_normal(t.size),
    "silence": np.zeros(t.size),
  }


SIGNALS_16K = _signals(16000)


@pytest.mark.parametrize("name", sorted(SIGNALS_16K))
def test_matches_kaldi_native_fbank(name):
  x = SIGNALS_16K[name].astype(np.float32)
  ours = F.fbank(x)
  ref = kaldi_native(x - x.mean())
  assert ours.shape == ref.shape == (98, 128)
  assert ours.dtype == np.float32
  err = assert_logmel_close(ours, ref)
  record("fbank (128 bins) vs kaldi_native_fbank (5 signals; worst)", err, TOL, "max_abs_err (log)")


@pytest.mark.parametrize("name", sorted(SIGNALS_16K))
def test_matches_kaldi_native_fbank_80_bins(name):
  x = SIGNALS_16K[name].astype(np.float32)
  ours = F.fbank(x, num_mel_bins=80)
  ref = kaldi_native(x - x.mean(), num_bins=80)
  assert ours.shape == ref.shape == (98, 80)
  assert_logmel_close(ours, ref)


@pytest.mark.parametrize("name", sorted(SIGNALS_16K))
def test_matches_ast_feature_extractor(name):
  x = SIGNALS_16K[name].astype(np.float32)
  ours = F.fbank(x)
  ref = ast_extractor(x - x.mean(), ours.shape[0])
  err = assert_logmel_close(ours, ref)
  record(
    "fbank (128 bins) vs transformers' ASTFeatureExtractor (5 signals; worst)",
    err,
    TOL,
    "max_abs_err (log)",
  )


@pytest.mark.parametrize("num_samples", [1, 160, 399])
def test_shorter_than_one_window_pads_to_one_frame(num_samples):
  x = (0.2 * np.random.default_rng(1).standard_normal(num_samples)).astype(np.float32)
  ours = F.fbank(x)
  assert ours.shape == (1, 128)
  assert np.all(np.isfinite(ours))
  assert kaldi_native(x).shape[0] == 0  # the reference drops it; compare on the padded waveform.
  padded = np.pad(x - x.mean(), (0, 400 - num_samples))
  assert_logmel_close(ours, kaldi_native(padded))
  assert_logmel_close(ours, ast_extractor(padded, 1))


def test_exactly_one_window_gives_one_frame():
  x = SIGNALS_16K["noise"][:400].astype(np.float32)
  assert F.fbank(x).shape == (1, 128)
  assert F.fbank(SIGNALS_16K["noise"][:560]).shape == (2, 128)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
def test_resampled_inputs_match_kaldi_native(tmp_path, sample_rate):
  sf = pytest.importorskip("soundfile")
  for name in ("chirp", "noise"):
    path = tmp_path / f"{name}_{sample_rate}.wav"
    sf.write(path, _signals(sample_rate)[name].astype(np.float32), sample_rate, subtype="FLOAT")
    x = load_audio(path)
    assert abs(x.size - 16000) <= 1
    ours = F.fbank(x)
    assert_logmel_close(ours, kaldi_native(x - x.mean()))


def test_resampled_tone_matches_direct_16k_synthesis(tmp_path):
  """Resampling error only shows in near-floor filters: loud filters match a native 16 kHz tone."""
  sf = pytest.importorskip("soundfile")
  sf.write(
    tmp_path / "tone.wav", _signals(44100)["tone"].astype(np.float32), 44100, subtype="FLOAT"
  )
  resampled = F.fbank(load_audio(tmp_path / "tone.wav"))
  direct = F.fbank(SIGNALS_16K["tone"].astype(np.float32))
  n = min(len(resampled), len(direct))
  loud = direct[5 : n - 5] > -3.0  # skip edge frames (resampler transients) and quiet filters.
  assert loud.sum() > 100
  assert np.abs(resampled[5 : n - 5] - direct[5 : n - 5])[loud].max() < 0.05


def test_silence_is_finite_floor():
  out = F.fbank(np.zeros(16000, np.float32))
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, LOG_EPS, rtol=0, atol=1e-6)


def test_mel_filter_3_is_empty_as_in_kaldi():
  """At 16 kHz / 512-point FFT, Kaldi's 128-bin filter 3 covers no FFT bin: always ln(eps)."""
  banks = F.mel_banks(128, 512, 16000)
  assert banks.shape == (257, 128)
  assert np.count_nonzero(banks.sum(axis=0) == 0) == 1 and banks[:, 3].sum() == 0
  assert np.all(banks[-1] == 0)  # the Nyquist bin carries no weight.
  np.testing.assert_allclose(F.fbank(SIGNALS_16K["noise"])[:, 3], LOG_EPS, atol=1e-6)


def test_long_input_is_consistent_across_internal_chunks():
  x = (0.1 * np.random.default_rng(2).standard_normal(160 * 2300 + 240)).astype(np.float32)
  out = F.fbank(x)
  assert out.shape == (2300, 128)
  np.testing.assert_allclose(out[2000:], F.fbank(x[2000 * 160 :]), atol=1e-4)


def test_global_dc_offset_has_no_effect():
  x = SIGNALS_16K["noise"].astype(np.float32)
  np.testing.assert_allclose(F.fbank(x + 0.3), F.fbank(x), atol=1e-4)


@pytest.mark.parametrize("name", ["tone", "chirp", "noise", "silence"])
def test_jax_batch_matches_numpy(name):
  x = SIGNALS_16K[name].astype(np.float32)
  batch = np.stack([x, 0.5 * x[::-1].copy()])
  out = np.asarray(F.fbank_batch(batch))
  assert out.shape == (2, 98, 128)
  for row, waveform in zip(out, batch):
    assert_logmel_close(F.fbank(waveform), row)


def test_jax_batch_rejects_short_or_1d_input():
  with pytest.raises(ValueError, match="batch, samples"):
    F.fbank_batch(np.zeros((2, 100), np.float32))
  with pytest.raises(ValueError, match="batch, samples"):
    F.fbank_batch(np.zeros(16000, np.float32))


@pytest.mark.parametrize(
  "bad, message",
  [
    (np.zeros(0), "empty"),
    (np.zeros((2, 800)), "1-D"),
    (np.array([0.0, np.nan] * 300), "NaN"),
    (np.zeros(800, np.int16), "integer dtype"),
    (np.zeros(800, np.complex64), "real floating"),
  ],
)
def test_bad_waveforms_raise(bad, message):
  with pytest.raises(ValueError, match=message):
    F.fbank(bad)


def test_pad_or_crop_and_normalize():
  feats = np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0
  padded = F.pad_or_crop(feats, 6)
  assert padded.shape == (6, 3) and np.all(padded[4:] == 0) and np.all(padded[:4] == feats)
  assert np.all(F.pad_or_crop(feats, 2) == feats[:2])
  with pytest.raises(ValueError):
    F.pad_or_crop(feats, 0)
  np.testing.assert_allclose(F.normalize(np.float32(-4.2677393 + 2 * 4.5689974)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(F.normalize(feats, mean=1.0, std=0.5), feats - 1.0)


def test_audio_features_matches_manual_pipeline(tmp_path):
  sf = pytest.importorskip("soundfile")
  x = SIGNALS_16K["chirp"].astype(np.float32)
  sf.write(tmp_path / "clip.wav", x, 16000, subtype="FLOAT")
  out = F.audio_features(tmp_path / "clip.wav", target_frames=1024)
  assert out.shape == (1024, 128) and out.dtype == np.float32
  expected = (F.pad_or_crop(F.fbank(x), 1024) + 4.2677393) / (2 * 4.5689974)
  np.testing.assert_allclose(out, expected, atol=1e-6)
  assert np.all(out[98:] == np.float32(4.2677393 / (2 * 4.5689974)))  # zero padding, normalised.
  raw = F.audio_features(tmp_path / "clip.wav", normalized=False)
  np.testing.assert_allclose(raw, F.fbank(x), atol=1e-6)


def test_audio_features_all_zero_audio_is_finite(tmp_path):
  sf = pytest.importorskip("soundfile")
  sf.write(tmp_path / "zeros.wav", np.zeros(8000, np.float32), 16000)
  out = F.audio_features(tmp_path / "zeros.wav", target_frames=100)
  assert np.all(np.isfinite(out))
