"""Converted checkpoints (`dass_jax.checkpoint`): atomic saves, overwrite, params digests, and
`load_model`'s config overrides (only fields that leave the params' function unchanged)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dass_jax import checkpoint, models
from dass_jax.models import AST, AstConfig, AumConfig, DashengConfig, DassConfig, SslamConfig

CONFIG = AstConfig(hidden_size=8, num_layers=1, num_heads=2, mlp_dim=16, max_length=16)


def _params(value: float):
  return {"head": {"kernel": np.full((8, 3), value, np.float32), "bias": np.zeros(3, np.float32)}}


def test_params_digest_sees_values_names_and_dtypes_not_containers():
  a = checkpoint.params_digest(_params(1.0))
  assert a == checkpoint.params_digest(jax.tree.map(jax.numpy.asarray, _params(1.0)))
  assert a != checkpoint.params_digest(_params(1.0 + 1e-7))
  renamed = {"head2": _params(1.0)["head"]}
  assert a != checkpoint.params_digest(renamed)
  as_f64 = jax.tree.map(lambda x: x.astype(np.float64), _params(1.0))
  assert a != checkpoint.params_digest(as_f64)


def test_save_records_the_digest_and_refuses_to_overwrite_unless_asked(tmp_path):
  out = tmp_path / "ckpt"
  checkpoint.save_converted(out, CONFIG, _params(1.0), extra={"source": "test"})
  meta = checkpoint.read_metadata(out)
  assert meta["params_sha256"] == checkpoint.params_digest(_params(1.0))
  assert checkpoint.load_config(out) == CONFIG  # metadata keys stay out of the config
  with pytest.raises(FileExistsError, match="already holds"):
    checkpoint.save_converted(out, CONFIG, _params(2.0))
  checkpoint.save_converted(out, CONFIG, _params(2.0), overwrite=True)
  _, params, _ = checkpoint.load_model(out)
  np.testing.assert_array_equal(params["head"]["kernel"], _params(2.0)["head"]["kernel"])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
  out = tmp_path / "ckpt"
  checkpoint.save_converted(out, CONFIG, _params(1.0))

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(checkpoint.files, "write_json", fail)
  with pytest.raises(OSError, match="disk full"):
    checkpoint.save_converted(out, CONFIG, _params(2.0), overwrite=True)
  monkeypatch.undo()
  _, params, _ = checkpoint.load_model(out)
  np.testing.assert_array_equal(params["head"]["kernel"], _params(1.0)["head"]["kernel"])


def test_a_folder_with_other_files_is_never_replaced(tmp_path):
  out = tmp_path / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="not a converted checkpoint"):
    checkpoint.save_converted(out, CONFIG, _params(1.0), overwrite=True)
  assert (out / "notes.txt").read_text() == "keep me"
  # An empty folder, or what an interrupted save of the old layout left, is fine.
  empty = tmp_path / "empty"
  empty.mkdir()
  checkpoint.save_converted(empty, CONFIG, _params(1.0))
  partial = tmp_path / "partial"
  (partial / checkpoint.PARAMS_DIR).mkdir(parents=True)
  checkpoint.save_converted(partial, CONFIG, _params(1.0))
  assert json.loads((partial / checkpoint.CONFIG_FILE).read_text())["model_type"] == "ast"


# A value other than the default for every RUNTIME_FIELDS entry of every registered config.
RUNTIME_VALUES = {
  "scan_impl": "sequential",
  "scan_interpret": True,
  "dtype": "bfloat16",
  "mlp_token_chunk": 7,
  "drop_path_rate": 0.1,
  "dropout_rate": 0.1,
  "db_floor": "batch",
}
SMALL_CONFIGS = {
  "dass": DassConfig(num_classes=3, depths=(1, 1), dims=(8, 16)),
  "ast": CONFIG,
  "aum": AumConfig(num_classes=3, embed_dim=16, depth=1, max_length=32),
  "dasheng": DashengConfig(num_classes=3, embed_dim=16, depth=1, num_heads=2, mlp_dim=32),
  "sslam": SslamConfig(
    num_classes=3, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=32
  ),
}


def _abstract_params(config):
  module = models.build_model(config)
  dummy = jnp.zeros(config.example_input_shape(), jnp.float32)
  tree = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), dummy))["params"]
  return jax.tree_util.tree_flatten_with_path(jax.tree.map(lambda x: (x.shape, x.dtype), tree))


@pytest.mark.parametrize("model_type", sorted(models.MODELS))
def test_runtime_fields_leave_the_params_tree_unchanged(model_type):
  """Every field load_model lets a caller override keeps every param's path, shape and dtype."""
  config = SMALL_CONFIGS[model_type]
  assert set(models.MODELS) == set(SMALL_CONFIGS)
  reference = _abstract_params(config)
  for name in sorted(type(config).RUNTIME_FIELDS):
    changed = dataclasses.replace(config, **{name: RUNTIME_VALUES[name]})
    assert getattr(changed, name) != getattr(config, name), name
    assert _abstract_params(changed) == reference, name


def test_load_model_refuses_overrides_that_change_what_the_params_compute(tmp_path):
  config = dataclasses.replace(CONFIG, num_classes=3)
  params = AST(config).init(jax.random.PRNGKey(0), jnp.zeros(config.example_input_shape()))
  checkpoint.save_converted(tmp_path / "ast", config, params["params"])
  # num_heads 2 -> 4 keeps every param shape (hidden 8) but computes another function.
  with pytest.raises(ValueError, match=r"AstConfig.num_heads=4 .*only \['dropout_rate', 'dtype'\]"):
    checkpoint.load_model(tmp_path / "ast", num_heads=4)
  with pytest.raises(ValueError, match=r"AstConfig\.max_length=32 .*with_max_length"):
    checkpoint.load_model(tmp_path / "ast", max_length=32)
  with pytest.raises(ValueError, match="has no field 'scan_impl'"):
    checkpoint.load_model(tmp_path / "ast", scan_impl="sequential")
  # Runtime fields change; any field may be given the value it has.
  _, _, loaded = checkpoint.load_model(tmp_path / "ast", dtype="bfloat16", num_heads=2)
  assert loaded == dataclasses.replace(config, dtype="bfloat16")


def test_load_model_dass_overrides(tmp_path):
  config = SMALL_CONFIGS["dass"]
  x = jnp.zeros((1, 32, 128))
  params = models.build_model(config).init(jax.random.PRNGKey(0), x)["params"]
  checkpoint.save_converted(tmp_path / "dass", config, params)
  with pytest.raises(ValueError, match=r"DassConfig\.dims"):
    checkpoint.load_model(tmp_path / "dass", dims=(8, 32))
  with pytest.raises(ValueError, match=r"DassConfig\.d_state"):
    checkpoint.load_model(tmp_path / "dass", d_state=2)
  model, loaded, cfg = checkpoint.load_model(
    tmp_path / "dass", scan_impl="sequential", mlp_token_chunk=5, depths=[1, 1]
  )
  assert (cfg.scan_impl, cfg.mlp_token_chunk, cfg.depths) == ("sequential", 5, (1, 1))
  np.testing.assert_allclose(  # the sequential scan against the chunked one: fp32 rounding
    model.apply({"params": loaded}, x),
    models.build_model(config).apply({"params": params}, x),
    rtol=1e-5,
    atol=1e-7,
  )
