"""The scan inside sharded computations on a 4-device CPU mesh.

Each case runs this file as a script in a fresh process with 4 simulated CPU devices
(tests/multidevice.py).

Every case compares a batch-sharded run (inputs placed with NamedSharding over "data") with
the unsharded run on the same inputs: the output, the gradients of sum(y * W) in all seven
scan inputs, and the output's sharding.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from multidevice import cases, run_as_script, run_case

import pallas_kernels
from pallas_kernels import sharding
from pallas_kernels.random_inputs import scan_inputs, ss2d_inputs

N_DEVICES = 4
DT_RANGE = (0.05, 1.0)
# Gradient sums over the batch run in a different order when sharded: fp32 rounding only.
RTOL = 1e-5


def _scan_inputs(batch=8, groups=2, d=4, n=2, length=24):
  """The shared scan inputs and a weight W for sum(y * W)."""
  args = scan_inputs(jax.random.PRNGKey(0), batch, groups, d, n, length, dt_range=DT_RANGE)
  return args, jax.random.normal(jax.random.PRNGKey(7), args[0].shape)


def _ss2d_inputs(batch=4, height=3, width=5, d=8, n=1, rank=2):
  """The shared SS2D inputs and a weight W for sum(y * W)."""
  args = ss2d_inputs(jax.random.PRNGKey(1), batch, height, width, d, n, rank, dt_range=DT_RANGE)
  return args, jax.random.normal(jax.random.PRNGKey(6), args[0].shape)


def _place(mesh, args, batched, batch_axes="data"):
  """device_put: batched args split on axis 0 over batch_axes, the rest replicated."""
  return [
    jax.device_put(a, NamedSharding(mesh, P(batch_axes) if b else P()))
    for a, b in zip(args, batched)
  ]


def _value_and_grads(fn, weight, args):
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * weight)
  return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args)))))(*args)


def _assert_trees_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a), np.asarray(e)
    assert a.shape == e.shape
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=RTOL * np.max(np.abs(e)))


def _check_scan(fn, sharded_fn, mesh, batch_axes="data", context=contextlib.nullcontext):
  """sharded_fn on placed inputs == fn on plain inputs: y, its sharding, all seven grads.

  Only the sharded run happens inside `context()`.
  """
  args, weight = _scan_inputs()
  batched = (True, True, False, True, True, False, False)
  placed = _place(mesh, args, batched, batch_axes)
  with context():
    y = jax.jit(sharded_fn)(*placed)
    sharded_grads = _value_and_grads(sharded_fn, weight, placed)
  assert y.sharding.is_equivalent_to(NamedSharding(mesh, P(batch_axes)), y.ndim)
  _assert_trees_close(y, jax.jit(fn)(*args))
  _assert_trees_close(sharded_grads, _value_and_grads(fn, weight, args))


def _mesh(shape=(N_DEVICES,), names=("data",), axis_type=None):
  """jax.make_mesh; axis_type None keeps its default (Explicit on JAX 0.10)."""
  assert jax.device_count() == N_DEVICES, jax.devices()
  if axis_type is None:
    return jax.make_mesh(shape, names)
  return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))


def case_references_auto_partitioned():
  """Plain jit on batch-sharded inputs: XLA partitions the portable scans by itself."""
  mesh = _mesh()
  for impl in ("associative", "sequential", "chunked"):
    fn = functools.partial(pallas_kernels.selective_scan, impl=impl)
    _check_scan(fn, fn, mesh)


def case_references_shard_map():
  """The helper on a mesh with Auto axes (shard_map reshards its inputs by itself there)."""
  mesh = _mesh(axis_type=AxisType.Auto)
  fn = functools.partial(pallas_kernels.selective_scan, impl="associative")
  _check_scan(
    fn, functools.partial(sharding.sharded_selective_scan, mesh=mesh, impl="associative"), mesh
  )


def case_pallas_shard_map():
  """The kernel (interpret mode) under the helper; the forward needs no collective at all."""
  mesh = _mesh()
  kwargs = dict(impl="pallas", interpret=True)
  fn = functools.partial(pallas_kernels.selective_scan, **kwargs)
  sharded = functools.partial(sharding.sharded_selective_scan, mesh=mesh, **kwargs)
  _check_scan(fn, sharded, mesh)
  args, _ = _scan_inputs()
  placed = _place(mesh, args, (True, True, False, True, True, False, False))
  hlo = jax.jit(sharded).lower(*placed).compile().as_text()
  for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
    assert collective not in hlo, collective


def case_pallas_context_mesh_and_batch_axes():
  """mesh=None takes the `jax.set_mesh` mesh; a 2x2 mesh splits the batch over "data" only.

  `jax.make_mesh` gives Explicit axes here (JAX 0.10), so this also covers resharding.
  """
  mesh = _mesh((2, 2), ("data", "model"))
  kwargs = dict(impl="pallas", interpret=True)
  fn = functools.partial(pallas_kernels.selective_scan, **kwargs)
  sharded = functools.partial(sharding.sharded_selective_scan, batch_axes="data", **kwargs)
  _check_scan(fn, sharded, mesh, context=functools.partial(jax.set_mesh, mesh))
  # Inputs sharded unlike the in_specs (u over channels, A over "model") are resharded.
  args, _ = _scan_inputs()
  odd = [
    jax.device_put(a, NamedSharding(mesh, P(None, "model") if a.ndim == 3 else P())) for a in args
  ]
  odd[2] = jax.device_put(args[2], NamedSharding(mesh, P("model")))
  with jax.set_mesh(mesh):
    assert "shard_map" in str(jax.make_jaxpr(sharded)(*odd))
    y = jax.jit(sharded)(*odd)
  _assert_trees_close(y, jax.jit(fn)(*args))
  assert "shard_map" not in str(jax.make_jaxpr(sharded)(*args))


def case_ss2d_shard_map():
  """The whole SS2D core split over the batch: unfused references and the fused kernel."""
  mesh = _mesh()
  impls = [
    dict(impl="associative"),
    dict(impl="chunked"),
    dict(impl="pallas", interpret=True, fused=True),
  ]
  args, weight = _ss2d_inputs()
  placed = _place(mesh, args, (True, False, False, False, False, False))
  for kwargs in impls:
    fn = functools.partial(pallas_kernels.ss2d_scan, **kwargs)
    sharded = functools.partial(sharding.sharded_ss2d_scan, mesh=mesh, **kwargs)
    y = jax.jit(sharded)(*placed)
    assert y.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), y.ndim)
    _assert_trees_close(y, jax.jit(fn)(*args))
    _assert_trees_close(
      _value_and_grads(sharded, weight, placed), _value_and_grads(fn, weight, args)
    )


CASES = cases(globals())


@pytest.mark.parametrize("case", sorted(CASES))
def test_on_4_cpu_devices(case):
  run_case(__file__, case, N_DEVICES)


def test_without_a_mesh_the_helper_is_the_plain_call():
  args, _ = _scan_inputs(batch=3)
  kwargs = dict(impl="associative")
  np.testing.assert_array_equal(
    sharding.sharded_selective_scan(*args, **kwargs), pallas_kernels.selective_scan(*args, **kwargs)
  )


if __name__ == "__main__":
  run_as_script(CASES)
