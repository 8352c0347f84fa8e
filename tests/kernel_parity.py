"""Kernel-vs-reference comparisons shared by the GPU tests and their CPU interpret-mode twins.

`assert_matches` runs a kernel route and a reference route on identical inputs under one
explicit matmul precision and compares the output and every input gradient (of sum(y * W)),
as max |kernel - reference| / max |reference| (numerics.max_rel_err), against `TOL`.

Rows are named by what the hardware computes:
  fp32(highest)  float32 inputs, matmuls at "highest" (true fp32) precision;
  TF32           float32 inputs, matmuls at "tensorfloat32" (what JAX's default precision runs
                 on Ampere and newer GPUs: 10-bit mantissa operands, fp32 accumulation);
  bf16           bfloat16 inputs (their matmuls are bf16 whatever the precision setting).
The selective scan itself has no matmul; the SS2D core's projections (x_proj, the rank-R dt
projection) do, and the fused kernel forms the dt projection in-kernel in fp32 whatever the
setting, where the unfused reference runs it as a matmul.

Tolerances, by row:
* fp32(highest): both sides run the same fp32 math in another order. Measured in interpret
  mode on CPU (batch 1, DASS stages 1, 3, 4): <= 1.3e-6 everywhere; 1e-5 (values), 5e-5
  (gradients, summed over more terms).
* bf16, scan: inputs identical on both sides; fp32 state and math; the output and the
  gradients are rounded to bf16 (2^-8 = 3.9e-3 relative each). Measured: <= 1.9e-3 (values),
  5.4e-3 (gradients): 1e-2, 2e-2.
* bf16, SS2D: the unfused reference also rounds delta to bf16 before the scan (the fused
  kernel keeps it fp32), which moves the decay and the drive by up to 2^-8 each. Measured:
  <= 7.1e-3 (values), 9.0e-3 (gradients): 3e-2.
* TF32, SS2D fused vs unfused: the only difference is the dt projection, rounded by TF32 in
  the reference (operands to 11 significant bits: 2^-11 = 4.9e-4 relative each) and exact in
  the kernel; dt enters the decay exp(dt A) and the drive dt u B linearly, and the scan sums
  a few decay lengths of such terms: ~1e-3 to 5e-3 expected; 2e-2 (values and gradients), the
  bf16 bound, until a GPU run measures it. (Reasoned, not measured: no GPU was lent.)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from numerics import max_rel_err, value_and_grads

from pallas_kernels.random_inputs import scan_inputs, ss2d_inputs


@dataclasses.dataclass(frozen=True)
class Row:
  """A precision row: its name, the input dtype and the matmul precision both sides run at."""

  name: str
  dtype: object
  precision: str


FP32 = Row("fp32(highest)", jnp.float32, "highest")
TF32 = Row("TF32", jnp.float32, "tensorfloat32")
BF16 = Row("bf16", jnp.bfloat16, "highest")

TOL = {
  ("scan", FP32.name, "value"): 1e-5,
  ("scan", FP32.name, "grad"): 5e-5,
  ("scan", BF16.name, "value"): 1e-2,
  ("scan", BF16.name, "grad"): 2e-2,
  ("ss2d", FP32.name, "value"): 1e-5,
  ("ss2d", FP32.name, "grad"): 5e-5,
  ("ss2d", TF32.name, "value"): 2e-2,
  ("ss2d", TF32.name, "grad"): 2e-2,
  ("ss2d", BF16.name, "value"): 3e-2,
  ("ss2d", BF16.name, "grad"): 3e-2,
}


def scan_case(batch, groups, length, d, dtype, n=1, seed=None):
  """Scan inputs (u, delta, A, B, C, D, delta_bias) and a cotangent of y's shape."""
  key = jax.random.PRNGKey(length + d + batch if seed is None else seed)
  args = scan_inputs(key, batch, groups, d, n, length, dtype)
  return args, jax.random.normal(jax.random.PRNGKey(7), args[0].shape)


def ss2d_case(batch, height, width, d, dtype, n=1):
  """SS2D inputs (x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds), cotangent."""
  args = ss2d_inputs(
    jax.random.PRNGKey(height * width + d), batch, height, width, d, n, dtype=dtype
  )
  return args, jax.random.normal(jax.random.PRNGKey(6), args[0].shape)


def assert_matches(kernel_fn, ref_fn, args, weight, names, row: Row, path="scan"):
  """Output and gradients of kernel_fn vs ref_fn within TOL[path, row, ...]; returns errors."""
  with jax.default_matmul_precision(row.precision):
    y, grads = value_and_grads(kernel_fn, args, weight)
    y_ref, grads_ref = value_and_grads(ref_fn, args, weight)
  assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
  assert bool(jnp.all(jnp.isfinite(y)))
  errors = {"y": max_rel_err(y, y_ref)}
  assert errors["y"] < TOL[path, row.name, "value"], errors
  for name, g, g_ref in zip(names, grads, grads_ref):
    assert g.dtype == g_ref.dtype and g.shape == g_ref.shape, name
    assert bool(jnp.all(jnp.isfinite(g))), name
    errors[name] = max_rel_err(g, g_ref)
    assert errors[name] < TOL[path, row.name, "grad"], (name, errors[name])
  return errors
