"""Optimizer and learning-rate schedule of the AST/DASS recipes.

The recipes use `torch.optim.Adam(lr, betas=(0.95, 0.999), weight_decay=5e-7)`: torch's Adam
adds `weight_decay * param` to the gradient before the moment estimates (L2 regularisation, not
AdamW's decoupled decay). Here: optional global-norm clipping -> `add_decayed_weights` -> Adam
moments -> learning rate, which is that update exactly.

Learning rate at (0-based) step s in (0-based) epoch k = s // steps_per_epoch, of a run of S steps:

  lr(s) = base_lr * warmup(s) * decay(s)
  warmup(s) = min(1, floor(s / w) * w / warmup_steps)       w = warmup_update_every
  schedule 'step' (the recipes):
    decay(s) = decay_rate ** n(k),  n(k) = 0 if k < decay_start
                                           else floor((k - decay_start) / decay_every) + 1
  schedule 'cosine':
    decay(s) = r + (1 - r) * (1 + cos(pi * p)) / 2,    r = final_lr_ratio,
    p = clip((s - warmup_steps) / (S - warmup_steps), 0, 1)

'step' is the recipes' manual warm-up (lr set to s / 1000 * base_lr every 50 steps) followed by
`MultiStepLR(milestones=range(decay_start, 1000, decay_every), gamma=decay_rate)` stepped at each
epoch end (so epoch k, counted from 1 in the recipes as k + 1, runs at the decayed rate once the
epochs completed, k, reach a milestone). 'cosine' (short runs such as the quickstart) decays
smoothly from the end of the warm-up to base_lr * final_lr_ratio at the last step.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      "lr": 1e-4,
      "b1": 0.95,
      "b2": 0.999,
      "eps": 1e-8,
      "weight_decay": 5e-7,
      "warmup_steps": 1000,
      "warmup_update_every": 50,
      "schedule": "step",  # 'step' or 'cosine'
      "final_lr_ratio": 0.0,  # 'cosine': lr at the last step / lr
      "decay_start": 10,
      "decay_every": 5,
      "decay_rate": 0.5,
      "grad_clip_norm": 0.0,
    }
  )


SCHEDULES = ("step", "cosine")


def make_schedule(
  cfg: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
  """Step -> learning rate (see the module docstring) for a run of `total_steps` steps."""
  if steps_per_epoch < 1 or total_steps < 1:
    raise ValueError(
      f"steps_per_epoch and total_steps must be >= 1, got {steps_per_epoch}, {total_steps}"
    )
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"optim schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
  if cfg.decay_every < 1 or cfg.warmup_update_every < 1:
    raise ValueError(
      "optim decay_every and warmup_update_every must be >= 1, got "
      f"{cfg.decay_every}, {cfg.warmup_update_every}"
    )
  base, every, warmup = float(cfg.lr), int(cfg.warmup_update_every), int(cfg.warmup_steps)

  def schedule(step):
    step = jnp.asarray(step, jnp.int32)
    if warmup > 0:
      factor = jnp.minimum(1.0, (step // every * every).astype(jnp.float32) / warmup)
    else:
      factor = jnp.float32(1.0)
    if cfg.schedule == "cosine":
      span = max(total_steps - warmup, 1)
      progress = jnp.clip((step - warmup).astype(jnp.float32) / span, 0.0, 1.0)
      ratio = float(cfg.final_lr_ratio)
      return base * factor * (ratio + (1.0 - ratio) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
    epoch = step // steps_per_epoch
    n = jnp.where(epoch < cfg.decay_start, 0, (epoch - cfg.decay_start) // cfg.decay_every + 1)
    return base * factor * jnp.float32(cfg.decay_rate) ** n.astype(jnp.float32)

  return schedule


def make_optimizer(
  cfg: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) for the student's params."""
  schedule = make_schedule(cfg, steps_per_epoch, total_steps)
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
  if cfg.weight_decay > 0:
    parts.append(optax.add_decayed_weights(float(cfg.weight_decay)))
  parts += [
    optax.scale_by_adam(b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)),
    optax.scale_by_learning_rate(schedule),
  ]
  return optax.chain(*parts), schedule
