"""Label and knowledge-distillation losses of DASS training, in pure jax.numpy.

Layout: logits, labels and teacher logits are (batch, classes); every loss returns a scalar averaged
over the batch. The definitions follow DASS `src/traintest.py` (PyTorch):

  label losses
    'bce'  torch BCEWithLogitsLoss: sigmoid cross-entropy, mean over batch and classes.
    'ce'   softmax cross-entropy against (soft) label distributions, summed over classes, mean over
           batch. DASS uses CrossEntropyLoss(logits, argmax(labels)); both agree on one-hot labels.
  distillation losses (student s, teacher t, temperature T)
    'kldiv'   DASS: KL(softmax(t / T) || softmax(s)), batchmean. Only the teacher is divided by T
              and there is no T^2 factor (F.kl_div(log_softmax(s), log_softmax(t / T), 'batchmean',
              log_target=True)). Identical to the classic form at T = 1, the DASS setting.
    'kldiv_hinton'  Hinton's form: T^2 KL(softmax(t / T) || softmax(s / T)), batchmean.
    'bce'     BCEWithLogits(s, sigmoid(t / T)), or softmax(t / T) with teacher_func='softmax'.
    'l2'      mean squared error between logits (F.mse_loss, mean over batch and classes).
    'cosine'  1 - mean(sigmoid(cos(s, t))): DASS squashes the per-example cosine similarity with a
              sigmoid, so the loss lies in [1 - sigmoid(1), 1 - sigmoid(-1)] = [0.269, 0.731].
    'l2c'     'l2' + mean(1 - sigmoid(cos(s, t))).
  mixing: total = (1 - kd_weight) * label + kd_weight * distillation; without a teacher, the label
  loss alone.
  ensembles (`combine_teacher_logits`): several teachers' logits become one logits array, either
    'logits'  their mean, or
    'probs'   the logits whose distillation target is the mean of the teachers' targets: with f the
              loss's target function (softmax for 'kldiv'/'kldiv_hinton', `teacher_func` for
              'bce') and T the temperature, f(c / T) = mean_i f(t_i / T). Logit-space losses
              ('l2', 'cosine', 'l2c') have no target distribution and take 'logits' only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LABEL_LOSSES = ("bce", "ce")
DISTILLATION_LOSSES = ("kldiv", "kldiv_hinton", "bce", "l2", "cosine", "l2c")
TEACHER_FUNCS = ("sigmoid", "softmax")
ENSEMBLE_COMBINES = ("logits", "probs")
_COSINE_EPS = 1e-8


def _check_pair(a: jax.Array, b: jax.Array, names: str) -> None:
  if a.ndim != 2 or a.shape != b.shape:
    raise ValueError(f"{names} must both be (batch, classes), got {a.shape} and {b.shape}")


def sigmoid_bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """BCEWithLogitsLoss: mean over all elements of -[y log sigmoid(x) + (1 - y) log sigmoid(-x)]."""
  _check_pair(logits, targets, "logits and targets")
  logits = logits.astype(jnp.float32)
  per_element = jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return per_element.mean()


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Batch mean of -sum_c targets_c log softmax(logits)_c (targets: rows of probabilities)."""
  _check_pair(logits, targets, "logits and targets")
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -(targets * log_probs).sum(axis=-1).mean()


def label_loss(logits: jax.Array, labels: jax.Array, kind: str = "bce") -> jax.Array:
  """Supervised loss: kind 'bce' (multi-label AudioSet) or 'ce' (single-label, soft labels ok)."""
  if kind == "bce":
    return sigmoid_bce(logits, labels)
  if kind == "ce":
    return softmax_cross_entropy(logits, labels)
  raise ValueError(f"label loss must be one of {LABEL_LOSSES}, got {kind!r}")


def _sigmoid_cosine_gap(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Mean over the batch of 1 - sigmoid(cos(s, t)); cos as torch F.cosine_similarity(dim=1)."""
  # sqrt(max(|x|^2, eps^2)) == max(|x|, eps), with a finite gradient at x = 0.
  student_norm = jnp.sqrt(jnp.maximum((student * student).sum(axis=-1), _COSINE_EPS**2))
  teacher_norm = jnp.sqrt(jnp.maximum((teacher * teacher).sum(axis=-1), _COSINE_EPS**2))
  cosine = (student * teacher).sum(axis=-1) / (student_norm * teacher_norm)
  return (1.0 - jax.nn.sigmoid(cosine)).mean()


def _kl_batchmean(teacher_log_probs: jax.Array, student_log_probs: jax.Array) -> jax.Array:
  teacher_probs = jnp.exp(teacher_log_probs)
  return (teacher_probs * (teacher_log_probs - student_log_probs)).sum(axis=-1).mean()


def distillation_loss(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  kind: str = "kldiv",
  temperature: float = 1.0,
  teacher_func: str = "sigmoid",
) -> jax.Array:
  """Distillation loss between student and teacher logits (see the module docstring per kind).

  Args:
    student_logits: (batch, classes).
    teacher_logits: (batch, classes); gradients are not propagated into the teacher.
    kind: one of DISTILLATION_LOSSES.
    temperature: T > 0 ('kldiv', 'kldiv_hinton', 'bce'; 'l2', 'cosine', 'l2c' ignore it, as DASS).
    teacher_func: 'sigmoid' or 'softmax' teacher targets for kind 'bce'.

  Returns:
    scalar float32.
  """
  _check_pair(student_logits, teacher_logits, "student and teacher logits")
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be positive, got {temperature}")
  student = student_logits.astype(jnp.float32)
  teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  if kind == "kldiv":
    return _kl_batchmean(
      jax.nn.log_softmax(teacher / temperature, axis=-1), jax.nn.log_softmax(student, axis=-1)
    )
  if kind == "kldiv_hinton":
    return temperature**2 * _kl_batchmean(
      jax.nn.log_softmax(teacher / temperature, axis=-1),
      jax.nn.log_softmax(student / temperature, axis=-1),
    )
  if kind == "bce":
    if teacher_func == "sigmoid":
      return sigmoid_bce(student, jax.nn.sigmoid(teacher / temperature))
    if teacher_func == "softmax":
      return sigmoid_bce(student, jax.nn.softmax(teacher / temperature, axis=-1))
    raise ValueError(f"teacher_func must be one of {TEACHER_FUNCS}, got {teacher_func!r}")
  if kind == "l2":
    return jnp.mean((student - teacher) ** 2)
  if kind == "cosine":
    return _sigmoid_cosine_gap(student, teacher)
  if kind == "l2c":
    return jnp.mean((student - teacher) ** 2) + _sigmoid_cosine_gap(student, teacher)
  raise ValueError(f"distillation loss must be one of {DISTILLATION_LOSSES}, got {kind!r}")


def combined_loss(
  student_logits: jax.Array,
  labels: jax.Array,
  teacher_logits: jax.Array | None = None,
  label_kind: str = "bce",
  kd_kind: str = "kldiv",
  kd_weight: float = 0.0,
  temperature: float = 1.0,
  teacher_func: str = "sigmoid",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DASS training loss: (1 - kd_weight) * label loss + kd_weight * distillation loss.

  Args:
    student_logits: (batch, classes).
    labels: (batch, classes) multi-hot or soft labels.
    teacher_logits: (batch, classes), or None for plain supervised training.
    label_kind: 'bce' or 'ce'.
    kd_kind: a DISTILLATION_LOSSES entry.
    kd_weight: mixing weight in [0, 1] (DASS dist_loss_weight).
    temperature: distillation temperature (DASS dist_temp).
    teacher_func: teacher targets for kd_kind 'bce'.

  Returns:
    (total, parts): scalar total loss and {'label', 'kd', 'total'} scalars ('kd' with a teacher).
  """
  if isinstance(kd_weight, (int, float)) and not 0.0 <= kd_weight <= 1.0:
    raise ValueError(f"kd_weight must be in [0, 1], got {kd_weight}")
  supervised = label_loss(student_logits, labels, label_kind)
  if teacher_logits is None:
    return supervised, {"label": supervised, "total": supervised}
  distill = distillation_loss(student_logits, teacher_logits, kd_kind, temperature, teacher_func)
  total = (1.0 - kd_weight) * supervised + kd_weight * distill
  return total, {"label": supervised, "kd": distill, "total": total}


def target_function(kd_kind: str, teacher_func: str = "sigmoid") -> str | None:
  """The function that turns (tempered) teacher logits into the distillation target of `kd_kind`:
  'softmax', 'sigmoid', or None for the losses that compare logits ('l2', 'cosine', 'l2c')."""
  if kd_kind in ("kldiv", "kldiv_hinton"):
    return "softmax"
  if kd_kind == "bce":
    if teacher_func not in TEACHER_FUNCS:
      raise ValueError(f"teacher_func must be one of {TEACHER_FUNCS}, got {teacher_func!r}")
    return teacher_func
  if kd_kind in ("l2", "cosine", "l2c"):
    return None
  raise ValueError(f"distillation loss must be one of {DISTILLATION_LOSSES}, got {kd_kind!r}")


def combine_teacher_logits(
  teacher_logits: list[jax.Array],
  combine: str = "logits",
  kd_kind: str = "kldiv",
  temperature: float = 1.0,
  teacher_func: str = "sigmoid",
) -> jax.Array:
  """One (batch, classes) teacher logits array from an ensemble's (see the module docstring).

  'probs' works in log space, so saturated teachers give finite logits: for softmax targets
  c = T (logsumexp_i log_softmax(t_i / T) - log n); for sigmoid targets
  c = T (logsumexp_i log_sigmoid(t_i / T) - logsumexp_i log_sigmoid(-t_i / T)), the log-odds of
  the mean probability. One teacher is returned unchanged.

  Args:
    teacher_logits: the teachers' (batch, classes) logits, at least one.
    combine: 'logits' or 'probs' (ENSEMBLE_COMBINES).
    kd_kind, temperature, teacher_func: the distillation loss's (they fix the target function).

  Returns:
    (batch, classes) float32 logits.
  """
  if combine not in ENSEMBLE_COMBINES:
    raise ValueError(f"ensemble combine must be one of {ENSEMBLE_COMBINES}, got {combine!r}")
  if not teacher_logits:
    raise ValueError("an ensemble needs at least one teacher")
  for other in teacher_logits[1:]:
    _check_pair(teacher_logits[0], other, "ensemble teacher logits")
  func = target_function(kd_kind, teacher_func)
  if combine == "probs" and func is None:
    raise ValueError(
      f"kd_kind {kd_kind!r} compares logits: combine the ensemble with 'logits', not 'probs'"
    )
  if len(teacher_logits) == 1:
    return teacher_logits[0].astype(jnp.float32)
  stacked = jnp.stack([t.astype(jnp.float32) for t in teacher_logits])  # (n, batch, classes)
  if combine == "logits":
    return stacked.mean(axis=0)
  scaled = stacked / temperature
  log_n = jnp.log(float(len(teacher_logits)))
  if func == "softmax":
    log_mean = jax.nn.logsumexp(jax.nn.log_softmax(scaled, axis=-1), axis=0) - log_n
    return temperature * log_mean
  log_p = jax.nn.logsumexp(jax.nn.log_sigmoid(scaled), axis=0)
  log_q = jax.nn.logsumexp(jax.nn.log_sigmoid(-scaled), axis=0)
  return temperature * (log_p - log_q)
