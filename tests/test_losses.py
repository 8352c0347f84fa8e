"""experiments.losses against hand-computed numpy values and, when torch is installed, against the
torch expressions DASS `src/traintest.py` uses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import losses as L

STUDENT = np.array([[2.0, -1.0, 0.5], [0.0, 1.5, -2.0]], np.float32)
TEACHER = np.array([[1.0, 0.0, -1.0], [-0.5, 2.5, 0.0]], np.float32)
LABELS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], np.float32)


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  return (
    x
    - x.max(-1, keepdims=True)
    - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
  )


def _np_sigmoid(x):
  return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def _np_bce(logits, targets):
  p = _np_sigmoid(logits)
  return np.mean(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


def _np_cos_gap(s, t):
  cos = (s * t).sum(-1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
  return np.mean(1 - _np_sigmoid(cos))


def test_bce_hand_computed():
  # First element: x = 2, y = 1: -log(sigmoid(2)) = log(1 + e^-2).
  single = L.sigmoid_bce(jnp.array([[2.0]]), jnp.array([[1.0]]))
  assert float(single) == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-6)
  assert float(L.label_loss(STUDENT, LABELS, "bce")) == pytest.approx(
    _np_bce(STUDENT, LABELS), rel=1e-6
  )


def test_bce_is_stable_for_large_logits():
  out = L.sigmoid_bce(jnp.array([[100.0, -100.0]]), jnp.array([[0.0, 1.0]]))
  assert float(out) == pytest.approx(100.0, rel=1e-6)


def test_ce_soft_labels_hand_computed():
  soft = LABELS / LABELS.sum(-1, keepdims=True)
  expected = np.mean(-(soft * _np_log_softmax(STUDENT)).sum(-1))
  assert float(L.label_loss(STUDENT, soft, "ce")) == pytest.approx(expected, rel=1e-6)
  # Two equal logits, one-hot target: log 2.
  assert float(
    L.softmax_cross_entropy(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]))
  ) == pytest.approx(np.log(2))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kldiv_follows_dass(temperature):
  # DASS: only the teacher is divided by T, no T^2, mean over the batch of the per-row KL.
  log_p = _np_log_softmax(TEACHER / temperature)
  log_q = _np_log_softmax(STUDENT)
  expected = np.mean((np.exp(log_p) * (log_p - log_q)).sum(-1))
  got = L.distillation_loss(STUDENT, TEACHER, "kldiv", temperature)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_kldiv_hinton_scaling():
  log_p = _np_log_softmax(TEACHER / 2.0)
  log_q = _np_log_softmax(STUDENT / 2.0)
  expected = 4.0 * np.mean((np.exp(log_p) * (log_p - log_q)).sum(-1))
  got = L.distillation_loss(STUDENT, TEACHER, "kldiv_hinton", 2.0)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  one = L.distillation_loss(STUDENT, TEACHER, "kldiv_hinton", 1.0)
  assert float(one) == pytest.approx(
    float(L.distillation_loss(STUDENT, TEACHER, "kldiv", 1.0)), rel=1e-6
  )


def test_kldiv_zero_when_student_equals_teacher():
  assert float(L.distillation_loss(TEACHER, TEACHER, "kldiv")) == pytest.approx(0.0, abs=1e-6)
  # With T != 1 the DASS form compares softmax(s) with softmax(t / T): not zero.
  assert float(L.distillation_loss(TEACHER, TEACHER, "kldiv", 3.0)) > 0.01


@pytest.mark.parametrize("teacher_func", ["sigmoid", "softmax"])
def test_bce_distillation(teacher_func):
  t = TEACHER / 2.0
  if teacher_func == "sigmoid":
    targets = _np_sigmoid(t)
  else:
    targets = np.exp(_np_log_softmax(t))
  got = L.distillation_loss(STUDENT, TEACHER, "bce", 2.0, teacher_func)
  assert float(got) == pytest.approx(_np_bce(STUDENT, targets), rel=1e-5)


def test_l2_cosine_l2c():
  mse = np.mean((STUDENT - TEACHER) ** 2)
  gap = _np_cos_gap(STUDENT.astype(np.float64), TEACHER.astype(np.float64))
  assert float(L.distillation_loss(STUDENT, TEACHER, "l2")) == pytest.approx(mse, rel=1e-6)
  assert float(L.distillation_loss(STUDENT, TEACHER, "cosine")) == pytest.approx(gap, rel=1e-6)
  assert float(L.distillation_loss(STUDENT, TEACHER, "l2c")) == pytest.approx(mse + gap, rel=1e-6)
  # Identical vectors: cos = 1, loss 1 - sigmoid(1).
  assert float(L.distillation_loss(TEACHER, TEACHER, "cosine")) == pytest.approx(
    1 - _np_sigmoid(1.0)
  )


def test_temperature_only_affects_temperature_losses():
  for kind in ("l2", "cosine", "l2c"):
    assert float(L.distillation_loss(STUDENT, TEACHER, kind, 1.0)) == float(
      L.distillation_loss(STUDENT, TEACHER, kind, 4.0)
    )
  for kind in ("kldiv", "kldiv_hinton", "bce"):
    assert float(L.distillation_loss(STUDENT, TEACHER, kind, 1.0)) != pytest.approx(
      float(L.distillation_loss(STUDENT, TEACHER, kind, 4.0))
    )


@pytest.mark.parametrize("kd_kind", L.DISTILLATION_LOSSES)
def test_gradients_finite_and_teacher_frozen(kd_kind):
  student = jnp.asarray(STUDENT).at[1].set(0.0)  # an all-zero row exercises the cosine eps.

  def total(s, t):
    return L.combined_loss(s, LABELS, t, "bce", kd_kind, 0.5, 2.0)[0]

  grad_s, grad_t = jax.grad(total, argnums=(0, 1))(student, jnp.asarray(TEACHER))
  assert np.all(np.isfinite(np.asarray(grad_s))) and np.any(np.asarray(grad_s) != 0)
  assert np.all(np.asarray(grad_t) == 0)


def test_combined_loss_mixing():
  label = float(L.label_loss(STUDENT, LABELS, "bce"))
  kd = float(L.distillation_loss(STUDENT, TEACHER, "kldiv", 1.0))
  total, parts = L.combined_loss(STUDENT, LABELS, TEACHER, "bce", "kldiv", 0.3, 1.0)
  assert float(total) == pytest.approx(0.7 * label + 0.3 * kd, rel=1e-6)
  assert float(parts["label"]) == pytest.approx(label) and float(parts["kd"]) == pytest.approx(kd)
  alone, parts = L.combined_loss(STUDENT, LABELS)
  assert float(alone) == pytest.approx(label) and "kd" not in parts
  jitted = jax.jit(lambda s, t: L.combined_loss(s, LABELS, t, "ce", "l2c", 0.5)[0])
  assert np.isfinite(float(jitted(STUDENT, TEACHER)))


def test_bad_arguments():
  with pytest.raises(ValueError, match="distillation loss"):
    L.distillation_loss(STUDENT, TEACHER, "hinge")
  with pytest.raises(ValueError, match="label loss"):
    L.label_loss(STUDENT, LABELS, "focal")
  with pytest.raises(ValueError, match="teacher_func"):
    L.distillation_loss(STUDENT, TEACHER, "bce", teacher_func="relu")
  with pytest.raises(ValueError, match="temperature"):
    L.distillation_loss(STUDENT, TEACHER, "kldiv", 0.0)
  with pytest.raises(ValueError, match="kd_weight"):
    L.combined_loss(STUDENT, LABELS, TEACHER, kd_weight=1.5)
  with pytest.raises(ValueError, match="batch, classes"):
    L.distillation_loss(STUDENT, TEACHER[:1], "l2")


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_ensemble_probs_give_the_mean_of_the_teachers_targets(temperature):
  """'probs': the combined logits' targets are the mean of each teacher's targets (float64 numpy
  reference); 'logits': the mean of the logits; one teacher passes through unchanged."""
  teachers = [TEACHER, STUDENT, 4.0 * TEACHER - STUDENT]
  sig = L.combine_teacher_logits(teachers, "probs", "bce", temperature, "sigmoid")
  want = np.mean([_np_sigmoid(t / temperature) for t in teachers], axis=0)
  np.testing.assert_allclose(_np_sigmoid(np.asarray(sig) / temperature), want, atol=1e-6)
  soft = L.combine_teacher_logits(teachers, "probs", "kldiv", temperature)
  want = np.mean([np.exp(_np_log_softmax(t / temperature)) for t in teachers], axis=0)
  got = np.exp(_np_log_softmax(np.asarray(soft) / temperature))
  np.testing.assert_allclose(got, want, atol=1e-6)
  soft_bce = L.combine_teacher_logits(teachers, "probs", "bce", temperature, "softmax")
  np.testing.assert_allclose(soft_bce, soft, atol=1e-6)
  mean = L.combine_teacher_logits(teachers, "logits", "l2", temperature)
  np.testing.assert_allclose(mean, np.mean(teachers, axis=0), atol=1e-6)
  np.testing.assert_array_equal(L.combine_teacher_logits([TEACHER], "probs", "bce"), TEACHER)


def test_ensemble_probs_stay_finite_for_saturated_teachers():
  saturated = [np.array([[200.0, -300.0]], np.float32), np.array([[100.0, -100.0]], np.float32)]
  for kd_kind in ("bce", "kldiv"):
    combined = L.combine_teacher_logits(saturated, "probs", kd_kind)
    assert np.all(np.isfinite(combined))
    loss = L.distillation_loss(jnp.zeros((1, 2)), combined, kd_kind)
    assert np.isfinite(loss)
  # The mean of sigmoid(-100) and sigmoid(-300) is about e^-100 / 2: log-odds -100 - log 2.
  bce = L.combine_teacher_logits(saturated, "probs", "bce")
  np.testing.assert_allclose(bce, [[100.0 + np.log(2), -100.0 - np.log(2)]], rtol=1e-6)


def test_ensemble_bad_arguments():
  with pytest.raises(ValueError, match="compares logits"):
    L.combine_teacher_logits([TEACHER, STUDENT], "probs", "l2")
  with pytest.raises(ValueError, match="combine must be one of"):
    L.combine_teacher_logits([TEACHER, STUDENT], "median", "bce")
  with pytest.raises(ValueError, match="at least one teacher"):
    L.combine_teacher_logits([], "logits", "bce")
  with pytest.raises(ValueError, match="ensemble teacher logits"):
    L.combine_teacher_logits([TEACHER, TEACHER[:, :2]], "logits", "bce")


def test_matches_dass_torch_expressions():
  torch = pytest.importorskip("torch")
  functional = torch.nn.functional
  s, t, y = (torch.tensor(a) for a in (STUDENT, TEACHER, LABELS))
  temp = 2.0
  expected = {
    "kldiv": functional.kl_div(
      functional.log_softmax(s, dim=1),
      functional.log_softmax(t / temp, dim=1),
      reduction="batchmean",
      log_target=True,
    ),
    "bce": torch.nn.BCEWithLogitsLoss()(s, torch.sigmoid(t / temp)),
    "l2": functional.mse_loss(s, t),
    "cosine": 1 - torch.sigmoid(functional.cosine_similarity(s, t)).mean(),
    "l2c": functional.mse_loss(s, t)
    + (1 - torch.sigmoid(functional.cosine_similarity(s, t))).mean(),
  }
  for kind, value in expected.items():
    assert float(L.distillation_loss(STUDENT, TEACHER, kind, temp)) == pytest.approx(
      float(value), rel=1e-5
    )
  assert float(L.label_loss(STUDENT, LABELS, "bce")) == pytest.approx(
    float(torch.nn.BCEWithLogitsLoss()(s, y)), rel=1e-6
  )
  one_hot = np.eye(3, dtype=np.float32)[[0, 2]]
  assert float(L.label_loss(STUDENT, one_hot, "ce")) == pytest.approx(
    float(torch.nn.CrossEntropyLoss()(s, torch.tensor([0, 2]))), rel=1e-6
  )
