"""The own-data recipe (`experiments/configs/own_data.py`): its config read from a prepared folder,
a run that chooses on valid and evaluates test once, the two-stage KD run, fine-tuning from a
converted folder or a published name (head replaced)."""

import csv
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from dass_jax import load_model, models, prepare
from dass_jax.checkpoint import save_converted
from experiments import logging_utils, train, two_stage
from experiments.configs import own_data
from tests import audio_folders


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("own")
  audio_folders.class_folder(root / "sounds", per_class=8)
  prepare.prepare(
    root / "data", folder=str(root / "sounds"), valid_fraction=0.25, test_fraction=0.25, seed=0
  )
  return root / "data"


def _rows(workdir):
  return logging_utils.read_metrics(str(workdir))


def test_single_label_config_from_the_summary(prepared):
  c = own_data.get_config(str(prepared))
  summary = json.loads((prepared / "summary.json").read_text())
  assert c.loss.label_kind == "ce" and c.loss.kd_kind == "kldiv"
  assert c.input.target_frames == own_data.clip_frames(summary["durations"]["p95"])
  assert c.input.target_frames == c.evals.input.target_frames == c.test.input.target_frames
  assert c.evals.input.datafile.endswith("valid.json") and c.test.input.datafile.endswith(
    "test.json"
  )
  assert c.model_type == "dass" and not c.model and c.scratch_model.dims == (16, 32, 64, 128)
  assert c.init_from == "" and c.reinit_head and c.head_bias_init == "prior"
  assert c.select.model == "best" and c.select.patience == 10
  assert own_data.get_config(f"{prepared},seconds=2.0").input.target_frames == 198
  ast = own_data.get_config(f"{prepared},model=ast")
  assert ast.model_type == "ast" and ast.scratch_model.max_length == c.input.target_frames
  kd = own_data.get_config(f"{prepared},kd")
  assert kd.two_stage.teacher.model_type == "ast" and kd.model_type == "dass"


def test_multi_label_data_trains_with_bce_and_chooses_by_map(tmp_path):
  audio_folders.class_folder(tmp_path / "rec", per_class=6)
  with open(tmp_path / "list.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["path", "label"])
    for name in audio_folders.CLASSES:
      for i in range(6):
        writer.writerow([f"rec/{name}/{name}_{i}.wav", f"{name};loud" if i % 2 else name])
  prepare.prepare(tmp_path / "data", csv_file=str(tmp_path / "list.csv"), valid_fraction=0.2)
  c = own_data.get_config(str(tmp_path / "data"))
  assert c.loss.label_kind == "bce" and c.loss.kd_kind == "bce"
  assert train._select_metric(c) == "mAP"


def test_bad_arguments_are_explained(prepared, tmp_path):
  with pytest.raises(ValueError, match=r"needs the folder of `python -m dass_jax\.prepare`"):
    own_data.get_config(None)
  with pytest.raises(FileNotFoundError, match=r"summary\.json not found"):
    own_data.get_config(str(tmp_path))
  with pytest.raises(ValueError, match="must be one of"):
    own_data.get_config(f"{prepared},model=cnn")


def test_the_recipe_chooses_on_valid_and_evaluates_test_once(prepared, tmp_path):
  workdir = tmp_path / "run"
  c = own_data.get_config(f"{prepared},runlocal")
  results = train.train_and_evaluate(c, str(workdir))

  saved = json.loads((workdir / "results.json").read_text())
  assert set(saved["valid"]) >= {"accuracy", "mAP"} and set(saved["test"]) >= {"accuracy", "mAP"}
  assert saved["test"]["num_examples"] == 6 and saved["valid"]["num_examples"] == 6
  assert saved["selected"]["metric"] == "accuracy"
  assert saved["valid"] == saved["candidates"][saved["selected"]["model"]]
  rows = _rows(workdir)
  valid_steps = [r["step"] for r in rows if "valid/accuracy" in r]
  assert {2, 4} <= set(valid_steps) and max(valid_steps) == 4  # every 2 steps, epoch ends, last
  assert len([r for r in rows if "test/accuracy" in r]) == 1  # once, at the end
  assert not any(k.startswith("test/") for r in rows if "valid/accuracy" in r for k in r)
  assert sorted(p.name for p in (workdir / "eval").glob("test*.json")) == ["test.json"]
  meta = json.loads((workdir / "export" / "config.json").read_text())
  assert meta["training"]["model"] == saved["selected"]["model"]
  assert results["test"] == saved["test"]


def test_two_stage_kd_trains_a_teacher_then_distils_the_student(prepared, tmp_path):
  workdir = tmp_path / "kd"
  c = own_data.get_config(f"{prepared},kd,runlocal")
  results = two_stage.run(c, str(workdir), train.train_and_evaluate)
  teacher_config = json.loads((workdir / "teacher" / "export" / "config.json").read_text())
  assert teacher_config["model_type"] == "ast"
  student_config = json.loads((workdir / "export" / "config.json").read_text())
  assert student_config["model_type"] == "dass"
  saved = json.loads((workdir / "results.json").read_text())
  assert saved["teacher"]["test"] == results["teacher"]["test"] and "test" in saved
  assert any("train/loss_kd" in r for r in _rows(workdir))
  assert not any("train/loss_kd" in r for r in _rows(workdir / "teacher"))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A converted DASS of another shape and label set (7 classes) to fine-tune from."""
  config = models.DassConfig(num_classes=7, depths=(1, 1, 1), dims=(8, 16, 16))
  model = models.build_model(config)
  params = model.init(jax.random.PRNGKey(3), np.zeros((1, 32, 128), np.float32))["params"]
  return save_converted(tmp_path_factory.mktemp("pre") / "dass_pre", config, params)


def test_init_from_a_folder_keeps_its_architecture_and_replaces_the_head(
  prepared, pretrained, tmp_path
):
  c = own_data.get_config(f"{prepared},runlocal")
  c.init_from = str(pretrained)
  c.total_steps = 2
  model_config = train._model_config(c, 3)
  assert (model_config.depths, model_config.dims, model_config.num_classes) == (
    (1, 1, 1),
    (8, 16, 16),
    3,
  )
  train.train_and_evaluate(c, str(tmp_path / "ft"))
  _, params, config = load_model(tmp_path / "ft" / "export")
  _, before, _ = load_model(pretrained)
  assert config.dims == (8, 16, 16) and params["classifier"]["head"]["kernel"].shape == (16, 3)
  assert before["classifier"]["head"]["kernel"].shape == (16, 7)


def test_init_from_a_published_name_is_resolved_through_the_converted_cache(
  prepared, pretrained, monkeypatch
):
  from convert_torch import converted

  asked = []

  def fake_converted_folder(source, converter=None):
    asked.append(source)
    return Path(pretrained)

  monkeypatch.setattr(converted, "converted_folder", fake_converted_folder)
  c = own_data.get_config(f"{prepared},runlocal")
  c.init_from = "dass-small-47.2"
  assert train._student_input(c) == "fbank"
  assert train._model_config(c, 3).dims == (8, 16, 16)
  assert asked == ["dass-small-47.2", "dass-small-47.2"]


def test_init_from_a_fixed_length_checkpoint_is_sized_for_the_clips(prepared, tmp_path):
  config = models.AstConfig(
    num_classes=4, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=128
  )
  model = models.build_model(config)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 128, 128), np.float32))["params"]
  folder = save_converted(tmp_path / "ast", config, params)
  c = own_data.get_config(f"{prepared},runlocal")
  c.init_from = str(folder)
  model_config = train._model_config(c, 3)
  assert model_config.max_length == c.input.target_frames != 128
  train._check_length(model_config, c)  # no error: sized for the clips


def test_a_csv_with_folds_gives_a_recipe_with_valid_and_test_folds(tmp_path):
  audio_folders.class_folder(tmp_path / "rec", per_class=6)
  with open(tmp_path / "list.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["path", "label", "fold"])
    for name in audio_folders.CLASSES:
      for i in range(6):
        writer.writerow([f"rec/{name}/{name}_{i}.wav", name, 1 + i % 3])
  prepare.prepare(tmp_path / "data", csv_file=str(tmp_path / "list.csv"))
  c = own_data.get_config(str(tmp_path / "data"))
  valid = json.loads(Path(c.evals.input.datafile).read_text())["data"]
  test = json.loads(Path(c.test.input.datafile).read_text())["data"]
  assert {row["fold"] for row in valid} == {"2"} and {row["fold"] for row in test} == {"3"}
