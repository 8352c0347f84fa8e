"""Training checkpoints: orbax `CheckpointManager` over the train state and the data iterator.

Layout: `workdir/checkpoints/<step>/{state, data}`; `state` is the train-state pytree (params,
optimizer state, step, RNG key, weight-average state) saved with `StandardSave`, `data` the
grain iterator state of every process (`process_<i>-of-<n>.json`). Saves are synchronous, so a
checkpoint on disk always pairs the state with the iterator position it was saved at, and orbax
finalises a step folder atomically: a run killed mid-save leaves the previous checkpoints intact
and the partial one is ignored. The newest `keep` checkpoints are kept.

A finished run also exports the model it chose on its validation split as a converted checkpoint
(`dass_jax.save_converted`) in `workdir/export/`.

Restoring needs an abstract state whose leaves carry their target shardings
(`abstract_with_shardings`), so a checkpoint restores onto any mesh.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `abstract` with the matching leaves of `shardings` attached."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


class Checkpointer:
  """Saves and restores (train state, data iterator) pairs under `workdir/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3):
    if keep < 1:
      raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=False
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=("state", "data")
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator) -> None:
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
      ),
      force=True,
    )
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator) -> Any:
    """Restores `data_iterator` in place and returns the state, sharded as `abstract_state`."""
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
      ),
    )
    return restored["state"]

  def close(self) -> None:
    self._manager.close()
