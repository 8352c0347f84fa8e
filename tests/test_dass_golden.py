"""Parity of the Flax DASS with the original PyTorch DASS on the tiny golden fixtures.

The fixture (see ../shared/fixtures/dass_torch/README.md) is a reduced DASS (depths 1,1,2,1, real
dims, 10 classes) with perturbed parameters, run in float32. Checked here, with relative error
‖out − ref‖ / ‖ref‖:
  * logits ≤ 1e-5 plus a max-abs bound;
  * every stored activation `act.*` ≤ 1e-5 (NCHW fixture -> NHWC model);
  * d sum(logits * W) / d parameter for all 114 tensors and d/dx ≤ 1e-4 (train mode, drop path 0);
each with the portable scan implementations: the chunked scan (`auto` on CPU) and the two
references for the forward values, the chunked scan and the associative reference for the
gradients (the sequential one would only add compile time: its gradients agree with the
associative one's to 1e-5 in test_scan_reference.py).

Parameters go through `convert_torch.dass.torch_to_flax`, so that the model and the converter
cannot drift apart.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import record, rel_err

from convert_torch.dass import torch_to_flax
from dass_jax.models import DASS, DassConfig
from dass_jax.models.dass import torch_activations

PREFIX = "module.v."
SCAN_IMPLS = ["chunked", "associative", "sequential"]
GRAD_SCAN_IMPLS = ["chunked", "associative"]
LOGITS_REL_TOL = 1e-5
LOGITS_ABS_TOL = 5e-6
ACT_REL_TOL = 1e-5
GRAD_REL_TOL = 1e-4


def _torch_to_flax(state_dict):
  config, params = torch_to_flax(state_dict)
  return config, jax.tree.map(jnp.asarray, params)


def _state_dict(arrays):
  return {k: v for k, v in arrays.items() if k.startswith(PREFIX)}


@pytest.fixture(scope="module")
def golden(shared_fixtures):
  with np.load(shared_fixtures / "dass_tiny_golden.npz") as npz:
    data = {k: npz[k] for k in npz.files}
  config, params = _torch_to_flax(_state_dict(data))
  config = dataclasses.replace(config, scan_impl="associative", drop_path_rate=0.0)
  return data, config, params


def test_converted_config(golden):
  _, config, params = golden
  assert config.depths == (1, 1, 2, 1)
  assert config.dims == (96, 192, 384, 768)
  assert config.num_classes == 10 and config.d_state == 1
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert n == 13_385_770


@pytest.mark.parametrize("size", ["small", "medium"])
def test_published_key_manifest_maps_onto_model(shared_fixtures, size):
  """Every key of the published DASS-small/medium checkpoints lands on a same-shaped param."""
  manifest = json.loads((shared_fixtures / f"dass_{size}_keys.json").read_text())
  state_dict = {k["key"]: np.zeros(k["shape"], np.float32) for k in manifest["keys"]}
  config, params = _torch_to_flax(state_dict)
  want = getattr(DassConfig, size)()
  for field in ("num_classes", "depths", "dims", "d_state", "ssm_ratio", "mlp_ratio"):
    assert getattr(config, field) == getattr(want, field), field
  assert [config.stage_dt_rank(i) for i in range(4)] == [6, 12, 24, 48]
  expected = jax.eval_shape(lambda: DASS(config).init(jax.random.key(0), jnp.zeros((1, 16, 128))))[
    "params"
  ]
  got = jax.tree.map(lambda a: a.shape, params)
  assert got == jax.tree.map(lambda a: a.shape, expected)


@pytest.mark.parametrize("scan_impl", SCAN_IMPLS)
def test_logits_and_activations(golden, scan_impl):
  data, config, params = golden
  config = dataclasses.replace(config, scan_impl=scan_impl)
  apply = jax.jit(lambda p, x: DASS(config).apply({"params": p}, x, mutable=["intermediates"]))
  logits, state = apply(params, jnp.asarray(data["x"]))
  ref = data["logits"]
  rel, max_abs = rel_err(logits, ref), float(np.max(np.abs(np.asarray(logits) - ref)))
  record(
    f"DASS tiny logits vs the original code ({scan_impl} scan)",
    rel,
    LOGITS_REL_TOL,
    max_abs=max_abs,
  )
  assert rel <= LOGITS_REL_TOL and max_abs <= LOGITS_ABS_TOL

  acts = torch_activations(state["intermediates"])
  fixture_acts = sorted(k for k in data if k.startswith("act."))
  assert len(fixture_acts) == 21
  errors = {}
  for key in fixture_acts:
    name, ref = key[len("act.") :], data[key]
    assert name in acts, f"model sows no activation named {name}"
    out = np.asarray(acts[name])
    if ref.ndim == 4 and name.split(".")[-1] not in ("dts", "Bs", "Cs", "ys"):
      ref = ref.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    assert out.shape == ref.shape, f"{name}: shape {out.shape} != {ref.shape}"
    errors[name] = rel_err(out, ref)
  worst = max(errors, key=errors.get)
  record(
    f"DASS tiny, all 21 saved activations vs the original code ({scan_impl} scan; worst)",
    errors[worst],
    ACT_REL_TOL,
    best=min(errors.values()),
    worst_name=worst,
  )
  bad = {k: v for k, v in errors.items() if not v <= ACT_REL_TOL}
  assert not bad, f"activations over {ACT_REL_TOL}: {bad}"


@pytest.mark.parametrize("scan_impl", GRAD_SCAN_IMPLS)
def test_gradients(golden, shared_fixtures, scan_impl):
  _, config, params = golden
  config = dataclasses.replace(config, scan_impl=scan_impl)
  with np.load(shared_fixtures / "dass_tiny_grads.npz") as npz:
    grads_npz = {k: npz[k] for k in npz.files}
  model = DASS(config)

  def loss_fn(p, x):
    logits = model.apply({"params": p}, x, train=True)
    return jnp.sum(logits * grads_npz["W"])

  loss, (grad_p, grad_x) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(
    params, jnp.asarray(grads_npz["x"])
  )
  ref_loss = float(grads_npz["loss"])
  assert abs(float(loss) - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))
  # The parameter gradients have the parameters' keys and layouts, so the converter maps them too.
  _, ref_grads = _torch_to_flax(_state_dict(grads_npz))
  errors = {}
  for (path, ref), (path2, out) in zip(
    jax.tree_util.tree_flatten_with_path(ref_grads)[0],
    jax.tree_util.tree_flatten_with_path(grad_p)[0],
  ):
    assert path == path2
    errors[jax.tree_util.keystr(path)] = rel_err(out, ref)
  assert len(errors) == 114
  errors["grad_x"] = rel_err(grad_x, grads_npz["grad_x"])
  grad_x = errors.pop("grad_x")
  worst = max(errors, key=errors.get)
  record(
    f"DASS tiny gradients of all 114 params vs the original code ({scan_impl} scan; worst)",
    errors[worst],
    GRAD_REL_TOL,
    worst_name=worst,
  )
  record(
    f"DASS tiny gradient w.r.t. the input vs the original code ({scan_impl} scan)",
    grad_x,
    GRAD_REL_TOL,
  )
  errors["grad_x"] = grad_x
  bad = {k: v for k, v in errors.items() if not v <= GRAD_REL_TOL}
  assert not bad, f"gradients over {GRAD_REL_TOL}: {bad}"
