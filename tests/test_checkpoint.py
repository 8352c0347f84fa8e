"""Converted checkpoints (`dass_jax.checkpoint`): atomic saves, overwrite, params digests."""

import json

import jax
import numpy as np
import pytest

from dass_jax import checkpoint
from dass_jax.models import AstConfig

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
