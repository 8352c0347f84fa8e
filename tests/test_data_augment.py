"""SpecAugment masks, mixup and noise (dass_jax.data.augment)."""

import numpy as np
import pytest

from dass_jax.data import augment


def _zero_band(masked, axis):
  """Indices along `axis` that are all zero across the other axis."""
  other = 1 - axis
  return np.flatnonzero(np.all(masked == 0, axis=other))


@pytest.mark.parametrize("axis,max_width", [(0, 192), (1, 48)])
def test_mask_positions_follow_torchaudio_formula(axis, max_width):
  x = np.ones((1024, 128), np.float32)
  for seed in range(50):
    masked = augment.mask_along_axis(x, max_width, axis, np.random.default_rng(seed))
    u, v = np.random.default_rng(seed).random(2)
    width = u * max_width
    start = int(v * (x.shape[axis] - width))
    expected = np.arange(start, start + int(width))
    np.testing.assert_array_equal(_zero_band(masked, axis), expected)
    assert np.count_nonzero(masked == 0) == expected.size * x.shape[1 - axis]
    assert np.all(x == 1)  # Input untouched.


def test_mask_widths_cover_range_and_stay_inside():
  x = np.ones((100, 128), np.float32)
  widths = []
  for seed in range(400):
    band = _zero_band(augment.mask_along_axis(x, 30, 0, np.random.default_rng(seed)), 0)
    widths.append(band.size)
    if band.size:
      assert band[-1] < 100 and np.all(np.diff(band) == 1)
  assert min(widths) == 0 and max(widths) == 29
  assert 12 < np.mean(widths) < 17  # E[floor(U * 30)] = 14.5.


def test_spec_augment_one_band_each_in_order():
  x = np.full((300, 128), 5.0, np.float32)
  masked = augment.spec_augment(x, 48, 56, np.random.default_rng(3))
  rng = np.random.default_rng(3)
  freq = augment.mask_along_axis(x, 48, 1, rng)
  expected = augment.mask_along_axis(freq, 56, 0, rng)
  np.testing.assert_array_equal(masked, expected)
  assert 0 < _zero_band(masked, 1).size < 48 and 0 < _zero_band(masked, 0).size < 56
  np.testing.assert_array_equal(augment.spec_augment(x, 0, 0, np.random.default_rng(3)), x)


def test_time_mask_scales_with_target_frames():
  assert augment.scaled_time_mask(192, 1024) == 192
  assert augment.scaled_time_mask(192, 300) == 56
  assert augment.scaled_time_mask(0, 300) == 0
  # The quickstart teacher's timem 96 on its 98-frame clips: at most 9 frames, 9 % of the clip.
  assert augment.scaled_time_mask(96, 98) == 9


@pytest.mark.parametrize(
  "field, value, message",
  [("freqm", 65, "half of the 128 mel bins"), ("timem", 513, "half of the clip")],
)
def test_masks_wider_than_half_their_axis_are_refused(field, value, message):
  from dass_jax.data import pipeline

  pipeline._resolve({field: augment.MAX_FREQM if field == "freqm" else augment.MAX_TIMEM})
  with pytest.raises(ValueError, match=message):
    pipeline._resolve({field: value})


def test_mixup_lambda_is_beta_10_10():
  rng = np.random.default_rng(0)
  lams = np.array([augment.sample_mixup_lambda(rng) for _ in range(20000)])
  assert np.all((lams > 0) & (lams < 1))
  assert abs(lams.mean() - 0.5) < 0.005
  assert abs(lams.var() - 100 / (400 * 21)) < 0.001  # Beta(10, 10) variance.


def test_mix_labels():
  first = np.array([1, 1, 0, 0], np.float32)
  second = np.array([0, 1, 1, 0], np.float32)
  np.testing.assert_allclose(
    augment.mix_labels(first, second, 0.7), [0.7, 1.0, 0.3, 0.0], rtol=1e-6
  )


@pytest.mark.parametrize("second_len", [600, 1000, 1500])
def test_mix_waveforms_fits_second_to_first(second_len):
  rng = np.random.default_rng(1)
  first = rng.standard_normal(1000).astype(np.float32) + 0.3
  second = rng.standard_normal(second_len).astype(np.float32) - 0.2
  mixed = augment.mix_waveforms(first, second, 0.6)
  fitted = np.zeros(1000)
  n = min(1000, second_len)
  fitted[:n] = second[:n] - second.mean()
  expected = 0.6 * (first - first.mean()) + 0.4 * fitted
  expected -= expected.mean()
  assert mixed.shape == (1000,) and mixed.dtype == np.float32
  np.testing.assert_allclose(mixed, expected, atol=1e-5)
  assert abs(mixed.mean()) < 1e-6


def test_noise_adds_small_positive_noise_then_rolls():
  x = np.tile(np.arange(300, dtype=np.float32)[:, None], (1, 128))
  for seed in range(20):
    noisy = augment.add_noise(x, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    rng.random(x.shape, dtype=np.float32)
    rng.random()
    shift = int(rng.integers(-10, 10))
    assert -10 <= shift < 10
    diff = noisy - np.roll(x, shift, axis=0)
    assert np.all(diff >= 0) and np.all(diff < 0.1)
