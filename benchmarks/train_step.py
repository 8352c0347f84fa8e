"""The training step the benchmarks time: forward + backward + Adam update of every parameter.

BCE-with-logits against multi-hot targets (AudioSet's loss), train mode (stochastic depth drawn
from a per-step key), `optax.adam`. A stand-in for `experiments.train`'s step with the same work
per example (no KD teacher, no weight averaging), importable with jax, flax and optax alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

ADAM_LR = 1e-4


def train_step(model, tx: optax.GradientTransformation):
  """The step as a pure function (params, opt_state, x, y, key) -> (params, opt_state, loss).

  Not jitted: `TrainStep` jits it; tests lower it for other platforms
  (tests/test_cuda_lowering.py).
  """

  def step(params, opt_state, x, y, key):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
      return optax.sigmoid_binary_cross_entropy(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


class TrainStep:
  """Jitted update of (params, optimizer state); `__call__(x, y)` runs one step and blocks.

  x: (batch, frames, mel) float32 fbank; y: (batch, classes) float32 targets.
  """

  def __init__(self, model, params, lr: float = ADAM_LR):
    tx = optax.adam(lr)
    self._step = jax.jit(train_step(model, tx), donate_argnums=(0, 1))
    self.params = jax.tree.map(jnp.array, params)  # a copy: the step donates its buffers
    self.opt_state = tx.init(self.params)
    self.count = 0

  def __call__(self, x, y) -> float:
    key = jax.random.fold_in(jax.random.key(0), self.count)
    self.params, self.opt_state, loss = self._step(self.params, self.opt_state, x, y, key)
    self.count += 1
    return float(loss)
