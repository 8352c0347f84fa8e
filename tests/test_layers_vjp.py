"""The shared layers' own VJPs (`dass_jax.layers.gelu`, `layer_norm_affine`) against autodiff.

Both keep the forward of the op they replace bit for bit and write the backward out for
XLA:CPU's sake; these tests hold the value to equality and the gradients to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numerics import TOLERANCES, max_rel_err, value_and_grads

from dass_jax.layers import gelu, layer_norm_affine

TOL = TOLERANCES["float32"]


def test_gelu_forward_is_jax_exact_gelu_and_its_gradient_is_autodiffs():
  """1e-5 on the gradient: the slope's Phi comes from erf where autodiff differentiates erfc
  (both within 2e-7 of the float64 slope over every float32 x)."""
  x = jnp.concatenate(
    [jnp.linspace(-12.0, 12.0, 4801), 3.0 * jax.random.normal(jax.random.PRNGKey(0), (4096,))]
  )
  cotangent = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  got = value_and_grads(gelu, (x,), cotangent)
  ref = value_and_grads(lambda t: jax.nn.gelu(t, approximate=False), (x,), cotangent)
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(ref[0]))
  assert max_rel_err(got[1][0], ref[1][0]) <= TOL


def test_layer_norm_affine_matches_autodiff_of_the_plain_formula():
  """1e-5: float32, the written-out backward sums in another order than autodiff's."""
  ks = jax.random.split(jax.random.PRNGKey(2), 4)
  x = 3.0 + 2.0 * jax.random.normal(ks[0], (2, 7, 5, 24))  # a mean far from 0
  scale = 1.0 + 0.1 * jax.random.normal(ks[1], (24,))
  bias = 0.1 * jax.random.normal(ks[2], (24,))
  cotangent = jax.random.normal(ks[3], x.shape)

  def plain(x, scale, bias):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias

  def ours(x, scale, bias):
    return layer_norm_affine(x, scale, bias, 1e-5)

  got = value_and_grads(ours, (x, scale, bias), cotangent)
  ref = value_and_grads(plain, (x, scale, bias), cotangent)
  assert max_rel_err(got[0], ref[0]) <= TOL
  for name, g, r in zip(("x", "scale", "bias"), got[1], ref[1]):
    assert g.shape == r.shape, name
    assert max_rel_err(g, r) <= TOL, name
