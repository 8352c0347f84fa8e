"""What every converter does with a converted params tree: count it and check it against the model.

The array transforms from PyTorch layouts to Flax layouts live here too, so that every converter
maps weights the same way:
  conv    (O, I, H, W) -> (H, W, I, O)      `np.transpose(w, (2, 3, 1, 0))`; conv1d
          (O, I, K) -> (K, I, O) the same way
  linear  (out, in) -> (in, out)            `w.T`
  copy    unchanged (biases, LayerNorm weight -> scale, SSM parameters)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convert_torch.io import ConversionError
from dass_jax import models


def conv(w: np.ndarray) -> np.ndarray:
  """torch Conv weight (O, I, *spatial) -> Flax kernel (*spatial, I, O), e.g. OIHW -> HWIO."""
  return np.transpose(w, (*range(2, np.ndim(w)), 1, 0))


def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
  return np.transpose(w)


def copy(w: np.ndarray) -> np.ndarray:
  return w


def count_params(params: Any) -> int:
  """Number of scalars in a params tree (numpy, jax or ShapeDtypeStruct leaves)."""
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))


def flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'a/b/c': shape} of every leaf of a nested dict."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(p.key for p in path): tuple(np.shape(v)) for path, v in leaves}


def check_against_model(config: models.ModelConfig, params: Any) -> None:
  """Raises ConversionError if `params` differs in paths or shapes from the model's own init.

  The model is `dass_jax.models.build_model(config)`, initialised abstractly (`jax.eval_shape`) on
  `config.example_input_shape()`; a difference is a converter/model mismatch.
  """
  module = models.build_model(config)
  dummy = jnp.zeros(config.example_input_shape(), jnp.float32)
  abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), dummy))["params"]
  want, got = flat_shapes(abstract), flat_shapes(params)
  name = type(module).__name__
  problems = sorted(f"{k}: missing from the converted params" for k in set(want) - set(got))
  problems += sorted(f"{k}: not a parameter of dass_jax {name}" for k in set(got) - set(want))
  problems += sorted(
    f"{k}: converted {got[k]} vs model {want[k]}" for k in set(want) & set(got) if want[k] != got[k]
  )
  if problems:
    raise ConversionError(
      f"the converted tree does not match dass_jax {name}(config) (a converter/model mismatch, "
      "please report it):\n  " + "\n  ".join(problems)
    )
