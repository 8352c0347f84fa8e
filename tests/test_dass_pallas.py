"""The whole DASS model with the Pallas kernel (interpret mode) and under a device mesh, on CPU.

A tiny DASS (two stages, dims 8 and 16, 5 classes, drop path 0) in train mode: the loss
sum(logits * W) and its gradients in every parameter and in the input, compared with the model
on the sequential reference scan on one device. Tolerance: numerics' float32 1e-5 (relative
L2), the same math in another summation order.

  * one device, scan_impl="pallas" with `scan_interpret=True` (the fused SS2D kernel);
  * four simulated devices (tests/multidevice.py), batch split over "data" and the step run
    under `jax.set_mesh` as experiments/train.py runs it: the model's SS2D core then goes
    through `pallas_kernels.sharding` (shard_map per batch slice), with the Pallas kernel on a
    mesh of Auto axes (train.py's) and with the chunked scan on one of Explicit axes.
"""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from multidevice import cases, run_as_script, run_case
from numerics import assert_close

from dass_jax.models import DASS, DassConfig

TINY = DassConfig(num_classes=5, depths=(1, 1), dims=(8, 16), drop_path_rate=0.0)
BATCH, FRAMES = 4, 32  # stage-1 map 32 x 8 tokens
N_DEVICES = 4


def _inputs():
  x = jax.random.normal(jax.random.key(1), (BATCH, FRAMES, TINY.num_mel_bins))
  weight = jax.random.normal(jax.random.key(2), (BATCH, TINY.num_classes))
  params = jax.jit(DASS(TINY).init)(jax.random.key(0), x[:1])["params"]
  return params, x, weight


def _loss_and_grads(config: DassConfig):
  """jit(value_and_grad) of sum(logits * W) in (params, x), train mode."""
  model = DASS(config)

  def loss(params, x, weight):
    return jnp.sum(model.apply({"params": params}, x, train=True) * weight)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _assert_matches_reference(got, params, x, weight):
  loss, (grad_params, grad_x) = got
  ref_loss, (ref_params, ref_x) = _loss_and_grads(
    dataclasses.replace(TINY, scan_impl="sequential")
  )(params, x, weight)
  assert_close(loss, ref_loss, name="loss")
  assert_close(grad_x, ref_x, name="grad x")
  leaves = jax.tree_util.tree_leaves_with_path(grad_params)
  for (path, g), ref in zip(leaves, jax.tree.leaves(ref_params)):
    assert_close(g, ref, name=jax.tree_util.keystr(path))
  assert len(leaves) == len(jax.tree.leaves(ref_params)) > 30


def test_pallas_interpret_on_one_device():
  params, x, weight = _inputs()
  config = dataclasses.replace(TINY, scan_impl="pallas", scan_interpret=True)
  _assert_matches_reference(_loss_and_grads(config)(params, x, weight), params, x, weight)


def _on_mesh(scan_options: dict, axis_type) -> None:
  mesh = jax.make_mesh((N_DEVICES,), ("data",), axis_types=(axis_type,))
  params, x, weight = _inputs()
  step = _loss_and_grads(dataclasses.replace(TINY, **scan_options))
  placed = [
    jax.device_put(a, NamedSharding(mesh, spec))
    for a, spec in ((params, P()), (x, P("data")), (weight, P("data")))
  ]
  with jax.set_mesh(mesh):
    assert "shard_map" in str(jax.make_jaxpr(step)(*placed))  # the sharded wrapper was taken
    got = step(*placed)
  _assert_matches_reference(got, params, x, weight)


def case_pallas_auto_mesh():
  _on_mesh(dict(scan_impl="pallas", scan_interpret=True), AxisType.Auto)


def case_chunked_explicit_mesh():
  _on_mesh(dict(scan_impl="chunked"), AxisType.Explicit)


CASES = cases(globals())


@pytest.mark.parametrize("case", sorted(CASES))
def test_on_4_cpu_devices(case):
  run_case(__file__, case, N_DEVICES)


if __name__ == "__main__":
  run_as_script(CASES)
