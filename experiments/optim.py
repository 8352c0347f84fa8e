"""Optimizer and learning-rate schedule of the AST/DASS recipes.

The recipes use `torch.optim.Adam(lr, betas=(0.95, 0.999), weight_decay=5e-7)`: torch's Adam
adds `weight_decay * param` to the gradient before the moment estimates (L2 regularisation, not
AdamW's decoupled decay). Here: optional global-norm clipping -> `add_decayed_weights` -> Adam
moments -> learning rate, which is that update exactly.

Learning rate at (0-based) step s in (0-based) epoch k = s // steps_per_epoch:

  lr(s) = base_lr * warmup(s) * decay_rate ** n(k)
  warmup(s) = min(1, floor(s / w) * w / warmup_steps)       w = warmup_update_every
  n(k) = 0 if k < decay_start else floor((k - decay_start) / decay_every) + 1

which is the recipes' manual warm-up (lr set to s / 1000 * base_lr every 50 steps) followed by
`MultiStepLR(milestones=range(decay_start, 1000, decay_every), gamma=decay_rate)` stepped at each
epoch end (so epoch k, counted from 1 in the recipes as k + 1, runs at the decayed rate once the
epochs completed, k, reach a milestone).
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
      "decay_start": 10,
      "decay_every": 5,
      "decay_rate": 0.5,
      "grad_clip_norm": 0.0,
    }
  )


def make_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Step -> learning rate (see the module docstring)."""
  if steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
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
    epoch = step // steps_per_epoch
    n = jnp.where(epoch < cfg.decay_start, 0, (epoch - cfg.decay_start) // cfg.decay_every + 1)
    return base * factor * jnp.float32(cfg.decay_rate) ** n.astype(jnp.float32)

  return schedule


def make_optimizer(
  cfg: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) for the student's params."""
  schedule = make_schedule(cfg, steps_per_epoch)
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
