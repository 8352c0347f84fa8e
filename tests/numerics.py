"""Numerical comparison helpers shared by the tests: error measures, a tolerance table, gradients.

Error measures (all computed in float64):
  rel_err(out, ref)      ‖out − ref‖₂ / ‖ref‖₂ over all elements: the headline parity number.
  max_abs_err(out, ref)  max |out − ref|.
  max_rel_err(out, ref)  max |out − ref| / max |ref|: a per-element bound at the scale of ref, for
                         outputs whose small entries must also be right (kernel gradients).

Default tolerances by the dtype the computation ran in (`TOLERANCES`): float32 1e-5 — fp32 ports of
the same math land at 1e-7…5e-6 (accumulation order, XLA vs ATen reductions), so 1e-5 catches any
real error (a wrong sign, layout or constant gives ≥ 1e-3) without flaking; bfloat16 3e-2 — 8
mantissa bits give ~4e-3 per rounding, and a few chained roundings reach 1e-2; float16 5e-3 (11
bits). Tests that need another bound pass `tol=` and say why beside it.

Measured values: `record(check, err, bound, ...)` prints one line (seen with `pytest -s`) and, when
the environment variable DASS_JAX_PARITY_JSON names a file, appends it there as a JSON line;
`scripts/parity_table.py` runs the parity tests that way and writes docs/parity.md's table of
measured values from those lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TOLERANCES = {"float32": 1e-5, "bfloat16": 3e-2, "float16": 5e-3}
PARITY_ENV = "DASS_JAX_PARITY_JSON"


def record(check: str, err: float, bound: float, measure: str = "rel_err", **extra: Any) -> None:
  """Reports one measured comparison: printed, and appended to $DASS_JAX_PARITY_JSON when set.

  Args:
    check: what was compared with what (one table row; repeated checks are aggregated by their
      worst value), e.g. "DASS tiny logits vs original (chunked scan)".
    err: the measured error.
    bound: the bound the test asserts.
    measure: the error's name: rel_err, max_rel_err or max_abs_err (see the module docstring).
    **extra: further measured values (e.g. max_abs=...), JSON-serialisable.
  """
  row = {"check": check, "measure": measure, "err": float(err), "bound": float(bound), **extra}
  row["test"] = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
  print(f"measured: {check}: {measure} {err:.3g} (bound {bound:g})")
  path = os.environ.get(PARITY_ENV)
  if path:
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")


def _f64(x: Any) -> np.ndarray:
  return np.asarray(jnp.asarray(x, jnp.float32) if hasattr(x, "dtype") else x, np.float64)


def rel_err(out: Any, ref: Any) -> float:
  """‖out − ref‖ / ‖ref‖ (Frobenius over all elements), float64."""
  out, ref = _f64(out), _f64(ref)
  return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def max_abs_err(out: Any, ref: Any) -> float:
  """max |out − ref|, float64."""
  return float(np.max(np.abs(_f64(out) - _f64(ref))))


def max_rel_err(out: Any, ref: Any) -> float:
  """max |out − ref| / max |ref|, float64."""
  ref64 = _f64(ref)
  return float(np.max(np.abs(_f64(out) - ref64)) / max(np.max(np.abs(ref64)), 1e-30))


def tolerance(dtype: Any) -> float:
  """The default relative tolerance for a computation in `dtype`."""
  return TOLERANCES[jnp.dtype(dtype).name]


def assert_close(
  out: Any,
  ref: Any,
  *,
  dtype: Any = jnp.float32,
  tol: float | None = None,
  measure: Callable[[Any, Any], float] = rel_err,
  name: str = "",
) -> float:
  """Asserts equal shapes, finite values and `measure(out, ref) <= tol`; returns the error.

  Args:
    out, ref: arrays (numpy or jax, any float dtype).
    dtype: the dtype the computation ran in; picks the default `tol` from TOLERANCES.
    tol: bound overriding the table.
    measure: rel_err (default), max_rel_err or max_abs_err.
    name: what is compared, for the failure message.
  """
  out64, ref64 = _f64(out), _f64(ref)
  assert out64.shape == ref64.shape, f"{name}: shape {out64.shape} vs {ref64.shape}"
  assert np.all(np.isfinite(out64)), f"{name}: non-finite values"
  bound = tolerance(dtype) if tol is None else tol
  err = measure(out64, ref64)
  assert err <= bound, (
    f"{name}: {measure.__name__} {err:.3g} > {bound:g} (max abs {max_abs_err(out64, ref64):.3g})"
  )
  return err


def value_and_grads(fn: Callable, args: Sequence[Any], cotangent: Any):
  """fn(*args) and the gradients of sum(fn(*args) * cotangent) w.r.t. every arg, under jax.jit."""

  @jax.jit
  def run(*a):
    y, vjp = jax.vjp(fn, *a)
    return y, vjp(jnp.asarray(cotangent).astype(y.dtype))

  return run(*args)
