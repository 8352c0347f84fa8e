"""Needle-in-a-haystack inputs (experiments.haystack): the `paper` protocol against a torch twin of
the authors' assembly (tests/torch_reference/niah_original.py), its command line, and the
`streamed` protocol.

Tolerances: features are compared in raw log-mel units (normalised * 2 std + mean) with the rule of
tests/test_features.py (<= 1e-3 within 16 nats of a frame's loudest filter, <= 2e-2 deeper, where
float32 implementations disagree in rounding); zeros and the needle's placement are exact. The twin
computes fbank with kaldi_native_fbank in float32 and the noise arithmetic in torch float32, ours in
float64.
"""

import numpy as np
import pytest
from test_features import assert_logmel_close, kaldi_native

from dass_jax.constants import AUDIOSET_FBANK_MEAN, AUDIOSET_FBANK_STD, SAMPLE_RATE
from dass_jax.frontends import kaldi_fbank
from experiments import haystack as H

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")
pytest.importorskip("kaldi_native_fbank")

from torch_reference import niah_original as T

SR = SAMPLE_RATE


def _needle(seconds: float, seed: int = 0) -> np.ndarray:
  """A tone burst with a DC offset (the paper's needle RMS includes DC), float32."""
  t = np.arange(int(seconds * SR)) / SR
  rng = np.random.default_rng(seed)
  wave = 0.3 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(t.size) + 0.1
  return wave.astype(np.float32)


def _babble(seconds: float = 3.0) -> np.ndarray:
  """A short stand-in recording: amplitude-modulated harmonic mixtures, float32."""
  t = np.arange(int(seconds * SR)) / SR
  wave = sum(
    np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * m * t))
    for f, m in ((180, 3.1), (260, 4.3), (410, 2.2))
  )
  return (0.05 * wave + 0.01 * np.random.default_rng(5).standard_normal(t.size)).astype(np.float32)


def _raw(x: np.ndarray) -> np.ndarray:
  """Normalised features back to raw log-mel."""
  return x.astype(np.float64) * 2 * AUDIOSET_FBANK_STD + AUDIOSET_FBANK_MEAN


def _twin(needle, kind, total, position, snr=10.0, seed=(0, 0), babble=None, needle_frames=1024):
  white = lambda n: torch.from_numpy(H.WhiteNoise(seed).segment(0, n)).float()[None]
  fbank, noise = T.dataset_item(
    torch.from_numpy(needle)[None],
    needle_frames,
    total,
    kind != "zeros",
    kind,
    snr,
    white=white,
    babble=None if babble is None else torch.from_numpy(babble)[None],
  )
  return T.model_input(fbank[None], noise[None], total, position)[0].numpy()


def _ours(needle, kind, total, position, snr=10.0, seed=(0, 0), babble=None, needle_frames=1024):
  noise = {"zeros": None, "white": H.WhiteNoise(seed)}.get(kind)
  if kind == "babble":
    noise = H.TiledRecording(babble)
  return H.paper_input(H.paper_needle(needle, needle_frames), kind, total, position, snr, noise)


def _cli(tmp_path, *args) -> tuple[int, str]:
  import contextlib
  import io

  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    code = H.main([str(a) for a in args])
  return code, err.getvalue()


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
  folder = tmp_path_factory.mktemp("wav")
  paths = {}
  for name, wave in (("needle", _needle(10.0)), ("long", _needle(12.5, 1)), ("babble", _babble())):
    paths[name] = folder / f"{name}.wav"
    sf.write(paths[name], wave, SR, subtype="FLOAT")
  return paths


# ---------------------------------------------------------------------------------------------
# paper protocol


@pytest.mark.parametrize("total", [1024, 3000, 50_000])
@pytest.mark.parametrize("position", [0.0, 0.25])
def test_cli_paper_zeros_is_the_normalised_needle_between_zeros(tmp_path, wavs, total, position):
  """Acceptance: cat(zeros[:int(L t)], normalised 1024-frame needle fbank, zeros[int(L t):])."""
  out = tmp_path / "x.npy"
  code, err = _cli(
    tmp_path, "--protocol", "paper", "--needle", wavs["needle"], "--total-frames", total,
    "--position", position, "--haystack", "zeros", "--out", out,
  )  # fmt: skip
  assert code == 0, err
  x = np.load(out)
  assert x.dtype == np.float32 and x.shape == (total, 128)
  waveform = sf.read(wavs["needle"], dtype="float32")[0]
  kaldi = kaldi_native(waveform - waveform.mean())
  assert kaldi.shape[0] == 998  # padded with 26 zero frames (raw 0) before normalising
  needle = kaldi_fbank.normalize(np.concatenate([kaldi, np.zeros((1024 - 998, 128), np.float32)]))
  zeros, ind = np.zeros((total - 1024, 128), np.float32), int(total * position)
  expected = np.concatenate([zeros[:ind], needle, zeros[ind:]])  # slices clamp, as torch's do
  is_needle = np.zeros(total, bool)
  is_needle[min(ind, total - 1024) :][:1024] = True
  assert_logmel_close(_raw(x[is_needle]), _raw(expected[is_needle]))
  np.testing.assert_array_equal(x[~is_needle], expected[~is_needle])  # exactly 0


@pytest.mark.parametrize("kind", ["zeros", "white", "babble"])
@pytest.mark.parametrize(("total", "position"), [(1900, 0.0), (3000, 0.25), (5000, 0.5)])
def test_paper_input_matches_torch_twin(kind, total, position):
  needle, babble = _needle(10.0), _babble()
  ours = _ours(needle, kind, total, position, snr=5.0, seed=(3, 1), babble=babble)
  ref = _twin(needle, kind, total, position, snr=5.0, seed=(3, 1), babble=babble)
  assert ours.shape == ref.shape == (total, 128)
  assert_logmel_close(_raw(ours), _raw(ref))
  start = int(total * position)
  np.testing.assert_array_equal(ours[start : start + 1024], _ours(needle, "zeros", 1024, 0.0))


@pytest.mark.parametrize("kind", ["white", "babble"])
def test_paper_noise_in_independent_400s_chunks_matches_twin(kind):
  """45 000 frames: 7.2 M noise samples, two 400 s chunks (frames never straddle them)."""
  needle, babble = _needle(10.0), _babble()
  ours = _ours(needle, kind, 45_000, 0.25, snr=0.0, babble=babble)
  ref = _twin(needle, kind, 45_000, 0.25, snr=0.0, babble=babble)
  assert_logmel_close(_raw(ours), _raw(ref))
  # The chunk boundary drops the frames that would straddle it: a continuous fbank differs there.
  pn = H.paper_needle(needle)
  assert H.paper_noise_samples(pn, 45_000 - 1024) > H.PAPER_CHUNK_SAMPLES


def test_paper_long_needle_is_cropped_and_short_needle_padded():
  for seconds, frames in ((12.5, 1248), (3.0, 298)):
    needle = _needle(seconds)
    ours = _ours(needle, "white", 4000, 0.25, needle_frames=1024)
    ref = _twin(needle, "white", 4000, 0.25, needle_frames=1024)
    assert kaldi_fbank.fbank(needle).shape[0] == frames
    assert_logmel_close(_raw(ours), _raw(ref))


def test_paper_babble_tiles_the_recording_from_its_first_sample():
  recording = _babble(1.0)
  tiled = H.TiledRecording(recording)
  np.testing.assert_array_equal(tiled.segment(0, 3 * SR + 5), np.tile(recording, 4)[: 3 * SR + 5])
  np.testing.assert_array_equal(tiled.segment(SR - 7, SR + 7), np.r_[recording[-7:], recording[:7]])


def test_paper_snr_uses_raw_needle_rms_and_measured_noise_rms():
  """Noise frames equal the fbank of (g * noise - mean) with g = rms(raw needle) / 10^(S/20) /
  rms(noise), computed directly on one chunk."""
  needle = _needle(10.0) + 0.2  # a large DC offset: the paper's RMS includes it
  pn = H.paper_needle(needle)
  haystack_frames = 2000
  n = H.paper_noise_samples(pn, haystack_frames)
  noise = H.WhiteNoise(9).segment(0, n)
  gain = (
    np.sqrt(np.mean(needle.astype(np.float64) ** 2)) / 10 ** (3.0 / 20) / np.sqrt(np.mean(noise**2))
  )
  expected = kaldi_fbank.normalize(kaldi_fbank.fbank(gain * noise - gain * noise.mean()))[
    :haystack_frames
  ]
  got = H.paper_noise_fbank(pn, H.WhiteNoise(9), 3.0, haystack_frames, 7777)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("total", "position"), [(3000, 0.75), (2000, 1.0), (1025, 0.01)])
def test_paper_refuses_where_the_original_crashes(total, position):
  needle = _needle(10.0)
  with pytest.raises(TypeError):
    _twin(needle, "zeros", total, position)
  with pytest.raises(ValueError, match="the original crashes there"):
    _ours(needle, "zeros", total, position)


def test_paper_refuses_inputs_the_original_would_make_short():
  """At L = 1500 the original's noise (int(r 476) + 1 samples) yields 475 frames: its input
  would have 1499 frames."""
  needle = _needle(10.0)
  assert _twin(needle, "white", 1500, 0.0).shape[0] == 1499
  with pytest.raises(ValueError, match="gives only 475 frames"):
    _ours(needle, "white", 1500, 0.0)


def test_paper_needle_alone_where_the_original_fails_on_discarded_work():
  """L = 1024: the original computes fbank of a 1-sample noise waveform (torchaudio refuses) and
  crashes for t >= 1/L; no haystack frame is kept, so the input is the normalised needle alone."""
  needle = _needle(10.0)
  with pytest.raises(AssertionError):
    _twin(needle, "white", 1024, 0.0)
  with pytest.raises(TypeError):
    _twin(needle, "zeros", 1024, 0.5)
  alone = _ours(needle, "zeros", 1024, 0.0)
  assert_logmel_close(_raw(alone), _raw(_twin(needle, "zeros", 1024, 0.0)))
  for kind, position in (("white", 0.0), ("babble", 0.5), ("zeros", 1.0)):
    np.testing.assert_array_equal(_ours(needle, kind, 1024, position, babble=_babble()), alone)


def test_cli_paper_babble_and_white_match_twin(tmp_path, wavs):
  waveform = sf.read(wavs["needle"], dtype="float32")[0]
  recording = sf.read(wavs["babble"], dtype="float32")[0]
  for kind, extra, kwargs in (
    ("babble", ["--babble-wav", wavs["babble"]], {"babble": recording}),
    ("white", ["--seed", 4, "--needle-index", 7], {"seed": (4, 7)}),
  ):
    out = tmp_path / f"{kind}.npy"
    code, err = _cli(
      tmp_path, "--needle", wavs["needle"], "--total-frames", 3000, "--position", 0.25,
      "--haystack", kind, "--snr-db", 0, "--out", out, *extra,
    )  # fmt: skip
    assert code == 0, err
    ref = _twin(waveform, kind, 3000, 0.25, snr=0.0, **kwargs)
    assert_logmel_close(_raw(np.load(out)), _raw(ref))


@pytest.mark.parametrize(
  ("args", "message"),
  [
    (["--needle", "missing.wav"], "no such file"),
    (["--position", "0.9"], "the original crashes there"),
    (["--total-frames", "1000"], "shorter than the 1024-frame needle"),
    (["--total-frames", "0"], "must be positive"),
    (["--haystack", "babble"], "needs --babble-wav"),
    (["--position", "1.5"], "position must be in"),
    (["--out", "no_such_folder/x.npy"], "does not exist"),
  ],
)
def test_cli_bad_inputs_exit_2_with_a_message(tmp_path, wavs, monkeypatch, args, message):
  monkeypatch.chdir(tmp_path)
  base = {
    "--needle": str(wavs["needle"]),
    "--total-frames": "3000",
    "--position": "0.25",
    "--haystack": "zeros",
    "--out": "x.npy",
  }
  base.update(dict(zip(args[::2], args[1::2])))
  code, err = _cli(tmp_path, *[v for kv in base.items() for v in kv])
  assert code == 2
  assert message in err
  assert not (tmp_path / "x.npy").exists()


def test_cli_refuses_to_overwrite(tmp_path, wavs):
  out = tmp_path / "x.npy"
  out.write_bytes(b"keep")
  code, err = _cli(
    tmp_path, "--needle", wavs["needle"], "--total-frames", 2000, "--position", 0,
    "--haystack", "zeros", "--out", out,
  )  # fmt: skip
  assert code == 2 and "exists" in err
  assert out.read_bytes() == b"keep"


def test_cli_streamed_protocol_is_different(tmp_path, wavs):
  """Streamed zeros: raw zeros normalised (+0.467) and a 998-frame needle centred by round()."""
  out = tmp_path / "s.npy"
  code, err = _cli(
    tmp_path, "--protocol", "streamed", "--needle", wavs["needle"], "--total-frames", 3000,
    "--position", 0.5, "--haystack", "zeros", "--out", out,
  )  # fmt: skip
  assert code == 0, err
  x = np.load(out)
  start = round(0.5 * (3000 - 998))
  zero = kaldi_fbank.normalize(np.float32(0.0))
  assert x.shape == (3000, 128)
  np.testing.assert_array_equal(x[:start], zero)
  np.testing.assert_array_equal(x[start + 998 :], zero)
  waveform = sf.read(wavs["needle"], dtype="float32")[0]
  assert_logmel_close(_raw(x[start : start + 998]), kaldi_native(waveform - waveform.mean()))


# ---------------------------------------------------------------------------------------------
# streamed protocol


@pytest.mark.parametrize("position", [0.0, 0.37, 1.0])
def test_zeros_haystack_places_needle_frames(position):
  needle = np.random.default_rng(1).standard_normal((57, 128)).astype(np.float32)
  total = 400
  out = H.zeros_haystack(needle, total, position)
  start = {0.0: 0, 0.37: round(0.37 * 343), 1.0: 343}[position]
  assert out.shape == (total, 128)
  np.testing.assert_array_equal(out[start : start + 57], needle)
  rest = np.delete(out, np.arange(start, start + 57), axis=0)
  assert not rest.any()


def test_needle_longer_than_haystack_and_bad_position_raise():
  with pytest.raises(ValueError, match="longer than the haystack"):
    H.needle_start_frame(0.5, 10, 11)
  with pytest.raises(ValueError, match="position"):
    H.needle_start_frame(1.5, 10, 5)


def test_noisy_haystack_needle_only_changes_its_frames():
  needle = _needle(0.5)
  total_samples, position = 3 * SR + 77, 0.6
  noise = H.WhiteNoise(seed=3, block_samples=5000)
  out = H.noisy_haystack(needle, noise, 5.0, total_samples, position, block_samples=9000)
  scale = H.noise_scale(needle, 5.0)
  noise_only = kaldi_fbank.fbank(scale * noise.segment(0, total_samples))
  n = H.num_frames(needle.size)
  start = H.needle_start_frame(position, H.num_frames(total_samples), n)
  assert out.shape == noise_only.shape == (H.num_frames(total_samples), 128)
  # Frames whose 400-sample window misses the needle samples [160 start, 160 start + size).
  first_touched = start - (H.WINDOW - 1) // H.HOP
  last_touched = (start * H.HOP + needle.size - 1) // H.HOP
  np.testing.assert_allclose(out[:first_touched], noise_only[:first_touched], atol=1e-4)
  np.testing.assert_allclose(out[last_touched + 1 :], noise_only[last_touched + 1 :], atol=1e-4)
  inside = slice(start, start + n)
  assert np.all(np.abs(out[inside] - noise_only[inside]).max(axis=1) > 0.5)


def _measured_snr(noise, snr_db: float, total: int) -> float:
  needle = _needle(1.0).astype(np.float64)
  scale = H.noise_scale(needle, snr_db)
  mixture = H.mixture_segment(noise, scale, needle, 1234, 0, total)
  added = mixture.copy()
  added[1234 : 1234 + needle.size] -= needle
  centred = needle - needle.mean()
  return 10 * np.log10(np.mean(centred**2) / np.mean(added**2))


def test_white_noise_snr():
  assert abs(_measured_snr(H.WhiteNoise(seed=0), 5.0, 20 * SR) - 5.0) < 0.05
  assert abs(_measured_snr(H.WhiteNoise(seed=1), -3.0, 20 * SR) + 3.0) < 0.05


def test_babble_snr_exact_over_its_period():
  rng = np.random.default_rng(0)
  clips = [rng.standard_normal(12000) * g + 0.2 for g in (0.1, 1.0, 3.0)]
  babble = H.BabbleNoise(clips, talkers=3, seed=0)
  assert abs(_measured_snr(babble, 2.0, 36000) - 2.0) < 1e-9
  assert np.mean(babble.segment(0, 36000) ** 2) == pytest.approx(1.0)
  # Periodic and seekable: a window far out equals the same phase of the first period.
  np.testing.assert_allclose(babble.segment(108_000, 109_000), babble.segment(0, 1000))


def test_white_noise_random_access_matches_one_pass():
  noise = H.WhiteNoise(seed=(7, 2), block_samples=1000)
  whole = noise.segment(0, 5000)
  np.testing.assert_array_equal(noise.segment(1234, 3456), whole[1234:3456])
  assert abs(np.std(whole) - 1.0) < 0.05
  assert not np.array_equal(whole, H.WhiteNoise(seed=(7, 3), block_samples=1000).segment(0, 5000))


def test_streamed_fbank_equals_one_shot():
  rng = np.random.default_rng(0)
  waveform = 0.1 * rng.standard_normal(2 * SR + 123) + 0.03
  waveform[SR : SR + 4000] += _needle(0.25)
  stream, pieces, start = kaldi_fbank.FbankStream(), [], 0
  for size in [100, 299, 401, 160, 7000, 1, 5555, 10**6]:
    pieces.append(stream.push(waveform[start : start + size]))
    start += size
  streamed = np.concatenate(pieces)
  one_shot = kaldi_fbank.fbank(waveform)
  assert streamed.shape == one_shot.shape
  np.testing.assert_allclose(streamed, one_shot, rtol=0, atol=1e-4)


def test_noisy_haystack_equals_one_shot_fbank_of_the_mixture():
  needle = _needle(0.4)
  total, babble = 2 * SR + 5, H.BabbleNoise([_needle(0.3, s) for s in range(3)], 2, seed=1)
  out = H.noisy_haystack(needle, babble, 0.0, total, 0.25, block_samples=3333)
  start = H.HOP * H.needle_start_frame(0.25, H.num_frames(total), H.num_frames(needle.size))
  mixture = H.mixture_segment(babble, H.noise_scale(needle, 0.0), needle, start, 0, total)
  np.testing.assert_allclose(out, kaldi_fbank.fbank(mixture), rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# waveform inputs (models that take audio): rebuilt here from the documented construction


def _paper_waveform_by_hand(needle, kind, total, position, snr, seed, babble, needle_frames):
  """The paper waveform input from its definition, independently of `H.paper_*`."""
  needle = needle.astype(np.float64)
  span = np.zeros(needle_frames * 160)
  kept = min(span.size, needle.size)
  span[:kept] = (needle - needle.mean())[:kept]
  hay_samples = (total - needle_frames) * 160
  if kind == "zeros":
    hay = np.zeros(hay_samples)
  else:
    ratio = needle.size / (1 + (needle.size - 400) // 160)
    noise_len = int(ratio * (total - needle_frames)) + 1
    if kind == "white":
      noise = H.WhiteNoise(seed).segment(0, noise_len)
    else:
      noise = np.resize(babble.astype(np.float64), noise_len)  # tiled from the first sample
    gain = np.sqrt(np.mean(needle**2)) / 10 ** (snr / 20) / np.sqrt(np.mean(noise**2))
    hay = (gain * noise - gain * noise.mean())[:hay_samples]
  ind = 160 * int(total * position)
  return np.concatenate([hay[:ind], span, hay[ind:]])


@pytest.mark.parametrize("kind", ["zeros", "white", "babble"])
@pytest.mark.parametrize(
  ("seconds", "total", "position", "needle_frames"),
  [(3.0, 1900, 0.25, 1024), (12.5, 3000, 0.5, 1024), (1.0, 98, 0.0, 98), (1.0, 300, 0.6, 98)],
)
def test_paper_waveform_is_the_documented_construction(
  kind, seconds, total, position, needle_frames
):
  """Clip minus its mean padded/cropped to 160 needle_frames samples, at sample 160 int(L t), in
  the first 160 (L - needle_frames) samples of the paper's scaled noise; zeros: silence."""
  needle, babble = _needle(seconds, 2) + 0.15, _babble(1.3)
  noise = {"zeros": None, "white": H.WhiteNoise((5, 2)), "babble": H.TiledRecording(babble)}[kind]
  pn = H.paper_needle(needle, needle_frames)
  got = H.paper_input(pn, kind, total, position, 4.0, noise, 7001, input_kind="waveform")
  want = _paper_waveform_by_hand(needle, kind, total, position, 4.0, (5, 2), babble, needle_frames)
  assert got.dtype == np.float32 and got.shape == (160 * total,)
  assert got.shape == H.input_shape("paper", total, "waveform")
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_paper_waveform_haystack_is_the_noise_of_the_fbank_haystack():
  """One noise implementation: the fbank of the waveform haystack is the fbank haystack."""
  needle = _needle(10.0)
  pn = H.paper_needle(needle)
  for noise in (H.WhiteNoise((1, 4)), H.TiledRecording(_babble())):
    wave = H.paper_haystack(pn, "white", 3000, 2.0, noise, 9000, input_kind="waveform")
    feats = H.paper_haystack(pn, "white", 3000, 2.0, noise, 9000)
    again = kaldi_fbank.normalize(kaldi_fbank.fbank(wave))
    assert again.shape[0] == feats.shape[0] - 2  # 160 H samples make H - 2 snip-edges frames
    assert_logmel_close(_raw(again), _raw(feats[: again.shape[0]]))


@pytest.mark.parametrize("kind", ["zeros", "white", "babble"])
@pytest.mark.parametrize("position", [0.0, 0.37, 1.0])
def test_streamed_waveform_is_the_mixture_the_fbank_is_made_from(kind, position):
  """160 (L - 1) + 400 samples: noise * noise_scale + the needle at 160 round(t (L - n)); zeros:
  the needle in silence; and for the noise haystacks, its fbank is the fbank input."""
  needle = _needle(0.5, 3)
  total = 400
  pool = [_needle(0.3, s) for s in range(3)]
  noise = {
    "zeros": None,
    "white": H.WhiteNoise(6, block_samples=4000),
    "babble": H.BabbleNoise(pool, 2, seed=1),
  }[kind]
  got = H.streamed_input(needle, kind, total, position, 3.0, noise, 5000, input_kind="waveform")
  samples = 160 * (total - 1) + 400
  start = 160 * round(position * (total - (1 + (needle.size - 400) // 160)))
  want = np.zeros(samples)
  if kind != "zeros":
    centred = needle - needle.astype(np.float64).mean()
    want += np.sqrt(np.mean(centred**2) / 10**0.3) * noise.segment(0, samples)
  placed = needle[: samples - start]
  want[start : start + placed.size] += placed
  assert got.dtype == np.float32 and got.shape == (samples,)
  assert got.shape == H.input_shape("streamed", total, "waveform")
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  if kind != "zeros":
    feats = H.streamed_input(needle, kind, total, position, 3.0, noise, 5000)
    assert_logmel_close(_raw(kaldi_fbank.normalize(kaldi_fbank.fbank(got))), _raw(feats))


def test_cli_writes_waveform_inputs(tmp_path, wavs):
  waveform = sf.read(wavs["needle"], dtype="float32")[0]
  recording = sf.read(wavs["babble"], dtype="float32")[0]
  for protocol, samples in (("paper", 160 * 3000), ("streamed", 160 * 2999 + 400)):
    out = tmp_path / f"{protocol}.npy"
    code, err = _cli(
      tmp_path, "--protocol", protocol, "--kind", "waveform", "--needle", wavs["needle"],
      "--total-frames", 3000, "--position", 0.25, "--haystack", "babble", "--snr-db", 0,
      "--babble-wav", wavs["babble"], "--out", out,
    )  # fmt: skip
    assert code == 0, err
    x = np.load(out)
    assert x.dtype == np.float32 and x.shape == (samples,)
    if protocol == "paper":
      want = _paper_waveform_by_hand(waveform, "babble", 3000, 0.25, 0.0, None, recording, 1024)
      np.testing.assert_allclose(x, want, rtol=0, atol=1e-6)
  code, err = _cli(
    tmp_path, "--kind", "waveform", "--needle", wavs["needle"], "--total-frames", 3000,
    "--position", 0.9, "--haystack", "zeros", "--out", tmp_path / "refused.npy",
  )  # fmt: skip
  assert code == 2 and "the original crashes there" in err
  assert not (tmp_path / "refused.npy").exists()
