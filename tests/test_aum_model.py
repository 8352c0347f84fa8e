"""AuM in Flax against its PyTorch twin (fp32 values and gradients, both bidirectional variants),
the Pallas kernel inside the model (interpret mode), position-embedding resampling, input checks."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_close, max_rel_err, record, rel_err

torch = pytest.importorskip("torch")

from convert_torch.aum import torch_to_flax
from dass_jax import models
from dass_jax.models import AumConfig, build_model
from dass_jax.models.aum import resample_pos_embed, with_max_length
from torch_reference.aum_torch import AudioMambaTwin

# (bimamba_type, mel bins, frames, classes, depth): grids 2x4, 3x6 (4 frames past the last patch),
# 3x3 (odd token count, so the class token sits at N // 2 = 4) and 2x8.
CASES = [
  ("v1", 32, 64, 5, 2),
  ("v1", 48, 100, 3, 3),
  ("v2", 48, 48, 7, 2),
  ("v2", 32, 128, 2, 3),
]
# Gradients: fp32 ports of the same math land near 1e-6; 1e-4 is the acceptance bound (issue 13)
# and still far below what a wrong layout, sign or constant gives (>= 1e-2).
GRAD_TOL = 1e-4


def _twin(bimamba_type, mel, frames, classes, depth, seed=0):
  """A small twin with every parameter moved off its default, reproducibly."""
  torch.manual_seed(seed)
  model = AudioMambaTwin(
    num_classes=classes,
    embed_dim=32,
    depth=depth,
    bimamba_type=bimamba_type,
    spectrogram_size=(mel, frames),
  )
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for _, p in sorted(model.named_parameters()):
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return model.eval()


def _numpy(named) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in named}


def _fbank(frames, mel, batch=2, seed=3):
  return np.random.default_rng(seed).standard_normal((batch, frames, mel), dtype=np.float32)


@functools.cache
def _value_and_grads(config):
  def loss(params, x, cot):
    logits = build_model(config).apply({"params": params}, x)
    return jnp.sum(logits * cot), logits

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-c{c[3]}")
def test_twin_parity_values_and_grads(case):
  bimamba_type, mel, frames, classes, depth = case
  twin = _twin(*case)
  config, params = torch_to_flax(_numpy(twin.state_dict().items()), num_mel_bins=mel)
  assert (config.bimamba_type, config.depth, config.num_classes) == (bimamba_type, depth, classes)
  x = _fbank(frames, mel)
  cot = np.random.default_rng(4).standard_normal((2, classes), dtype=np.float32)

  x_t = torch.from_numpy(x).requires_grad_(True)
  ref = twin(x_t)
  (ref * torch.from_numpy(cot)).sum().backward()
  _, ref_grads = torch_to_flax(
    _numpy((k, p.grad) for k, p in twin.named_parameters()), num_mel_bins=mel
  )

  (_, logits), (grads, grad_x) = _value_and_grads(config)(params, x, cot)
  err = assert_close(logits, ref.detach().numpy(), name=f"{bimamba_type} logits")
  record("AuM v1 / v2 logits vs the PyTorch twin (4 configs; worst)", err, 1e-5)
  errors = [assert_close(grad_x, x_t.grad.numpy(), tol=GRAD_TOL, name="d input")]
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  ref_flat = dict(jax.tree_util.tree_flatten_with_path(ref_grads)[0])
  assert len(flat) == len(ref_flat)
  for path, grad in flat:
    errors.append(assert_close(grad, ref_flat[path], tol=GRAD_TOL, name=jax.tree_util.keystr(path)))
  record(
    "AuM gradients of every param and the input vs the PyTorch twin (4 configs; worst)",
    max(errors),
    GRAD_TOL,
  )


def test_pallas_kernel_inside_model_interpret_mode():
  """The kernel's general path (d_state 16, K = 2 directions) runs in the model on CPU."""
  twin = _twin("v2", 32, 48, 3, 1)
  config, params = torch_to_flax(_numpy(twin.state_dict().items()), num_mel_bins=32)
  x = _fbank(48, 32, batch=1)
  cot = np.ones((1, 3), np.float32)
  kernel = dataclasses.replace(config, scan_impl="pallas", scan_interpret=True)
  reference = dataclasses.replace(config, scan_impl="sequential")
  (_, out), (grads, _) = _value_and_grads(kernel)(params, x, cot)
  (_, ref), (ref_grads, _) = _value_and_grads(reference)(params, x, cot)
  assert_close(out, ref, name="logits, pallas interpret vs sequential")
  assert_close(out, twin(torch.from_numpy(x)).detach().numpy(), name="logits vs twin")
  ref_leaves = jax.tree.leaves(ref_grads)
  for (path, grad), ref_grad in zip(jax.tree_util.tree_flatten_with_path(grads)[0], ref_leaves):
    assert_close(grad, ref_grad, tol=GRAD_TOL, name=jax.tree_util.keystr(path))


@pytest.mark.parametrize("new_grid", [(8, 100), (8, 20), (4, 64), (8, 64)])
def test_resample_pos_embed_matches_torch_antialiased_bilinear(new_grid):
  """AuM's loader: F.interpolate(bilinear, antialias=True) on the patch grid, class row kept."""
  rng = np.random.default_rng(0)
  grid, dim = (8, 64), 6
  pos = rng.standard_normal((1, 1 + grid[0] * grid[1], dim), dtype=np.float32)
  out = np.asarray(resample_pos_embed(pos, grid, new_grid))
  patches = torch.from_numpy(pos[:, 1:]).reshape(1, *grid, dim).permute(0, 3, 1, 2)
  ref = torch.nn.functional.interpolate(patches, size=new_grid, mode="bilinear", antialias=True)
  ref = ref.permute(0, 2, 3, 1).reshape(1, -1, dim).numpy()
  assert out.shape == (1, 1 + new_grid[0] * new_grid[1], dim)
  np.testing.assert_array_equal(out[:, :1], pos[:, :1])
  assert max_rel_err(out[:, 1:], ref) < 1e-6
  if new_grid == grid:
    np.testing.assert_array_equal(out, pos)


def test_with_max_length_adapts_params_and_config():
  twin = _twin("v1", 32, 64, 4, 1)
  config, params = torch_to_flax(_numpy(twin.state_dict().items()), num_mel_bins=32)
  longer, long_config = with_max_length(params, config, 160)
  assert long_config.max_length == 160 and long_config.grid == (2, 10)
  assert longer["pos_embed"].shape == (1, 21, 32)
  assert longer["layers_0"] is params["layers_0"]  # everything else is shared
  logits = jax.jit(build_model(long_config).apply)({"params": longer}, _fbank(160, 32))
  assert logits.shape == (2, 4) and np.all(np.isfinite(logits))
  same, same_config = with_max_length(params, config, 64)
  np.testing.assert_array_equal(same["pos_embed"], params["pos_embed"])
  assert same_config == config
  spec = models.spec_of(config)
  assert spec.input_kind == "fbank" and spec.with_max_length is with_max_length
  assert models.fixed_length(config) == 64


def test_input_shape_errors_name_the_fix():
  config = AumConfig(embed_dim=16, depth=1, num_classes=2, num_mel_bins=32, max_length=64)
  model = build_model(config)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 32)))
  shape = lambda frames, mel: jax.eval_shape(model.apply, variables, jnp.zeros((1, frames, mel)))
  assert shape(79, 32).shape == (1, 2)  # 15 frames past the last patch: ignored by the conv
  with pytest.raises(ValueError, match="with_max_length"):
    shape(80, 32)
  with pytest.raises(ValueError, match=r"\(batch, frames, 32\)"):
    shape(64, 40)


def test_config_validation_presets_and_json_round_trip():
  small, base = AumConfig.small(), AumConfig.base()
  assert (small.embed_dim, small.bimamba_type, small.depth) == (384, "v2", 24)
  assert (base.embed_dim, base.bimamba_type, base.depth) == (768, "v1", 24)
  assert (base.grid, base.num_patches, base.d_inner, base.ssm_rank) == ((8, 64), 512, 1536, 48)
  assert base.example_input_shape() == (1, 1024, 128)
  custom = AumConfig.small(embed_dim=192, num_classes=35, max_length=128, scan_impl="sequential")
  assert models.config_from_dict(custom.to_dict()) == custom
  for bad, match in (
    ({"bimamba_type": "none"}, "bimamba_type"),
    ({"scan_impl": "cuda"}, "scan_impl"),
    ({"dtype": "float16"}, "dtype"),
    ({"max_length": 8}, "max_length"),
    ({"depth": 0}, "depth"),
  ):
    with pytest.raises(ValueError, match=match):
      AumConfig(**bad)


def test_bfloat16_and_stochastic_depth():
  twin = _twin("v2", 32, 64, 3, 2)
  config, params = torch_to_flax(_numpy(twin.state_dict().items()), num_mel_bins=32)
  x = _fbank(64, 32)
  ref = twin(torch.from_numpy(x)).detach().numpy()
  bf16 = build_model(dataclasses.replace(config, dtype="bfloat16"))
  out = jax.jit(bf16.apply)({"params": params}, x)
  assert out.dtype == jnp.float32
  assert rel_err(out, ref) < 3e-2  # bf16 compute, fp32 residual stream and scan state
  dropping = build_model(dataclasses.replace(config, drop_path_rate=0.5))
  run = jax.jit(dropping.apply, static_argnames="train")
  assert_close(run({"params": params}, x), ref, name="eval mode ignores drop_path_rate")
  train_out = run({"params": params}, x, train=True, rngs={"dropout": jax.random.key(0)})
  assert rel_err(train_out, ref) > 1e-3
