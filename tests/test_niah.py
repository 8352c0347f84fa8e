"""The audio needle-in-a-haystack study: haystacks, streamed fbank, the study outputs."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dass_jax.checkpoint import build_model, save_converted
from dass_jax.frontends import kaldi_fbank
from dass_jax.models import AstConfig, DassConfig
from experiments import haystack as H
from experiments import niah
from experiments.configs import niah as niah_config
from experiments.metrics import compute_metrics

SR = H.SAMPLE_RATE


def _needle(seconds: float, seed: int = 0) -> np.ndarray:
  """A tone burst with a DC offset (mean removal matters for the needle power)."""
  t = np.arange(int(seconds * SR)) / SR
  rng = np.random.default_rng(seed)
  return 0.3 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(t.size) + 0.1


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
  needle = _needle(1.0)
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
  noise = H.WhiteNoise(seed=7, block_samples=1000)
  whole = noise.segment(0, 5000)
  np.testing.assert_array_equal(noise.segment(1234, 3456), whole[1234:3456])
  assert abs(np.std(whole) - 1.0) < 0.05


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


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """Tiny random-init DASS and AST (13 classes) saved as converted checkpoints.

  The two-stage DASS with the sequential scan compiles in a fraction of the time of four stages
  with the associative scan; both run any input length.
  """
  root = tmp_path_factory.mktemp("ckpt")
  configs = {
    "dass": DassConfig(num_classes=13, depths=(1, 1), dims=(8, 16), scan_impl="sequential"),
    # 48 frames: every NIAH input is longer, so AST always interpolates.
    "ast": AstConfig(
      num_classes=13, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=48
    ),
  }
  for name, cfg in configs.items():
    params = build_model(cfg).init(jax.random.key(0), jnp.zeros((1, 48, 128)))["params"]
    save_converted(root / name, cfg, params)
  return {name: str(root / name) for name in configs}


@pytest.fixture(scope="module")
def study(checkpoints, tmp_path_factory):
  config = niah_config.get_config("runlocal")
  config.data.synthetic.cache_dir = str(tmp_path_factory.mktemp("synthetic"))
  config.models.dass, config.models.ast = checkpoints["dass"], checkpoints["ast"]
  workdir = tmp_path_factory.mktemp("niah")
  rows = niah.run(config, str(workdir))
  return config, workdir, rows


def test_study_csv_rows_follow_the_config(study):
  config, workdir, rows = study
  with open(workdir / niah.CSV_FILE, newline="") as f:
    table = list(csv.DictReader(f))
  assert tuple(table[0]) == niah.CSV_FIELDS
  assert len(table) == len(rows)
  conditions = [("zeros", "")] + [(k, str(s)) for k in ("white", "babble") for s in config.snrs_db]
  durations = [float(d) for d in config.durations_s]
  got = {
    (r["model"], r["haystack"], r["snr"], float(r["duration_s"]), float(r["position"]))
    for r in table
  }
  want = {
    ("dass", k, s, d, float(p)) for k, s in conditions for d in durations for p in config.positions
  }
  want |= {
    ("ast", k, s, d, float(p))
    for k, s in conditions
    for d in durations
    for p in config.positions
    if d <= config.ast_max_duration_s
  }
  assert got == want
  assert len(got) == len(table)
  assert max(float(r["duration_s"]) for r in table if r["model"] == "ast") == 1.0
  for r in table:
    assert 0.0 < float(r["mAP"]) <= 1.0
    if float(r["duration_s"]) == durations[0]:
      assert float(r["retained"]) == 1.0
    else:
      ref = next(
        float(x["mAP"])
        for x in table
        if float(x["duration_s"]) == durations[0]
        and (x["model"], x["haystack"], x["snr"], x["position"])
        == (r["model"], r["haystack"], r["snr"], r["position"])
      )
      assert float(r["retained"]) == pytest.approx(float(r["mAP"]) / ref)


def test_study_writes_plot_and_config(study):
  _, workdir, _ = study
  png = (workdir / niah.PLOT_FILE).read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
  assert "durations_s" in (workdir / niah.STUDY_CONFIG_FILE).read_text()


def test_zeros_reference_equals_plain_padded_input(study, checkpoints):
  """Zeros haystack, position 0: the model input is the clip padded with zeros (AST/DASS eval)."""
  config, _, rows = study
  clips = niah.load_clips(config)
  module, params, _ = niah.load_for_eval(checkpoints["dass"])
  frames = H.num_frames(int(config.durations_s[-1] * SR))
  x = np.stack(
    [
      kaldi_fbank.normalize(kaldi_fbank.pad_or_crop(kaldi_fbank.fbank(n), frames))
      for n in clips.needles
    ]
  ).astype(np.float32)
  logits = np.asarray(jax.jit(module.apply)({"params": params}, x))
  expected = compute_metrics(logits, clips.targets)["mAP"]
  got = next(
    r["mAP"]
    for r in rows
    if r["model"] == "dass"
    and r["haystack"] == "zeros"
    and r["duration_s"] == config.durations_s[-1]
    and r["position"] == 0.0
  )
  assert got == pytest.approx(expected, abs=1e-6)


def test_durations_must_increase_and_fit_the_needle():
  clips = niah.Clips(needles=[np.zeros(2 * SR)], targets=np.ones((1, 1)), babble_pool=[])
  with pytest.raises(ValueError, match="strictly increasing"):
    niah._check_durations([10.0, 2.0], clips)
  with pytest.raises(ValueError, match="shorter than the longest needle"):
    niah._check_durations([1.0, 10.0], clips)
  niah._check_durations([2.0, 10.0], clips)
