"""Pure-JAX references for the selective scan (no Pallas).

Layouts (the same for every implementation behind `pallas_kernels.selective_scan`):

  u, delta    (batch, K*D, L)   channel c = k*D + e, k-major (k = direction/group)
  A           (K*D, N)          already negative (A = -exp(A_log))
  B, C        (batch, K, N, L)  grouped: channel c reads group g = c // D
  D           (K*D,)            skip weight, optional
  delta_bias  (K*D,)            optional

  dt[b,c,l] = softplus(delta[b,c,l] + delta_bias[c])            (PyTorch threshold 20)
  h_l[n]    = exp(dt*A[c,n]) * h_{l-1}[n] + dt * B[b,g,n,l] * u[b,c,l],   h_{-1} = 0
  y[b,c,l]  = sum_n C[b,g,n,l] * h_l[n] + D[c] * u[b,c,l]

The state and every accumulation are float32 whatever the input dtype; the output has
`out_dtype` (default: the dtype of `u`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SOFTPLUS_THRESHOLD = 20.0


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
  """`torch.nn.functional.softplus` (beta 1, threshold 20): x where x > 20, else log1p(exp(x)).

  The exp argument is clipped so that the unselected branch never overflows. The derivative
  is torch's too (`softplus_slope`), given directly rather than differentiated through the
  two branches: one elementwise pass in the backward instead of several.
  """
  above = x > SOFTPLUS_THRESHOLD
  # Not jnp.minimum: at exactly x == 20 it would split the gradient between its two inputs.
  return jnp.where(above, x, jnp.log1p(jnp.exp(jnp.where(above, SOFTPLUS_THRESHOLD, x))))


def softplus_slope(x: jax.Array) -> jax.Array:
  """d softplus / dx as torch computes it: 1 above the threshold, sigmoid(x) at or below."""
  return jnp.where(x > SOFTPLUS_THRESHOLD, 1.0, jax.nn.sigmoid(x)).astype(x.dtype)


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  return softplus(x), softplus_slope(x) * dx


def prepare_inputs(u, delta, A, B, C, D, delta_bias, delta_softplus):
  """fp32 inputs with dt = softplus(delta + bias), channels split as (batch, K, D, L).

  Returns (u, dt, A, B, C, (batch, K, D, N, L)) with u, dt (batch, K, D, L), A (K, D, N) and
  B, C (batch, K, N, L), so that groups broadcast instead of repeating.
  """
  batch, channels, length = u.shape
  groups = B.shape[1]
  if channels % groups:
    raise ValueError(f"K*D={channels} channels do not split into K={groups} groups")
  d = channels // groups
  n = A.shape[1]
  f32 = jnp.float32
  u4 = u.astype(f32).reshape(batch, groups, d, length)
  dt = delta.astype(f32)
  if delta_bias is not None:
    dt = dt + delta_bias.astype(f32)[None, :, None]
  if delta_softplus:
    dt = softplus(dt)
  dt4 = dt.reshape(batch, groups, d, length)
  a4 = A.astype(f32).reshape(groups, d, n)
  b4 = B.astype(f32)  # (batch, K, N, L)
  c4 = C.astype(f32)
  return u4, dt4, a4, b4, c4, (batch, groups, d, n, length)


def finish_output(y4, u, D, out_dtype):
  """(batch, K, D, L) scan output -> (batch, K*D, L) with the D * u term, in out_dtype."""
  batch, groups, d, length = y4.shape
  y = y4.reshape(batch, groups * d, length)
  if D is not None:
    y = y + D.astype(jnp.float32)[None, :, None] * u.astype(jnp.float32)
  return y.astype(out_dtype or u.dtype)


def selective_scan_sequential(
  u, delta, A, B, C, D=None, delta_bias=None, *, delta_softplus=True, out_dtype=None
):
  """Selective scan as a `lax.scan` over time: O(L) steps, O(batch*K*D*N) state."""
  u4, dt4, a4, b4, c4, (batch, groups, d, n, _) = prepare_inputs(
    u, delta, A, B, C, D, delta_bias, delta_softplus
  )

  def step(h, inputs):
    u_t, dt_t, b_t, c_t = inputs  # (b,K,D), (b,K,D), (b,K,N), (b,K,N)
    decay = jnp.exp(dt_t[..., None] * a4[None])  # (b,K,D,N)
    h = decay * h + (dt_t * u_t)[..., None] * b_t[:, :, None, :]
    y_t = jnp.sum(h * c_t[:, :, None, :], axis=-1)  # (b,K,D)
    return h, y_t

  time_major = (
    jnp.moveaxis(u4, -1, 0),
    jnp.moveaxis(dt4, -1, 0),
    jnp.moveaxis(b4, -1, 0),
    jnp.moveaxis(c4, -1, 0),
  )
  h0 = jnp.zeros((batch, groups, d, n), jnp.float32)
  _, ys = jax.lax.scan(step, h0, time_major)
  return finish_output(jnp.moveaxis(ys, 0, -1), u, D, out_dtype)


def compose_affine(left, right):
  """The map h -> a h + b of `left` followed by that of `right`, as an (a, b) pair."""
  a_l, b_l = left
  a_r, b_r = right
  return a_l * a_r, a_r * b_l + b_r


def selective_scan_associative(
  u, delta, A, B, C, D=None, delta_bias=None, *, delta_softplus=True, out_dtype=None
):
  """Selective scan as a `lax.associative_scan` over (decay, input) pairs: O(log L) depth.

  Holds (batch, K*D, L, N) fp32 intermediates, so it is the fast reference for moderate L.
  """
  u4, dt4, a4, b4, c4, _ = prepare_inputs(u, delta, A, B, C, D, delta_bias, delta_softplus)
  b_t = jnp.swapaxes(b4, -1, -2)[:, :, None]  # (b,K,1,L,N)
  c_t = jnp.swapaxes(c4, -1, -2)[:, :, None]
  decay = jnp.exp(dt4[..., None] * a4[None, :, :, None, :])  # (b,K,D,L,N)
  drive = (dt4 * u4)[..., None] * b_t
  _, h = jax.lax.associative_scan(compose_affine, (decay, drive), axis=3)
  y4 = jnp.sum(h * c_t, axis=-1)
  return finish_output(y4, u, D, out_dtype)
