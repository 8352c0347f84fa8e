"""Frozen-embedding evaluation (`experiments.probe`): k-NN, the linear probe chosen on valid, the
fold rounds, and the command on a prepared folder."""

import csv
import json

import jax
import numpy as np
import pytest

from dass_jax import models, prepare
from dass_jax.checkpoint import save_converted
from dass_jax.embed import Embedder
from experiments import probe
from tests import audio_folders


def _clips(centres, per_class, seed, spread=0.3, folds=None):
  rng = np.random.default_rng(seed)
  x, y = [], []
  for c, centre in enumerate(centres):
    x.append(centre + spread * rng.standard_normal((per_class, len(centre))))
    y.append(np.repeat(np.eye(len(centres))[c : c + 1], per_class, axis=0))
  x, y = np.concatenate(x).astype(np.float32), np.concatenate(y).astype(np.float32)
  return probe.Clips(x, y, folds or [None] * len(x))


CENTRES = np.eye(3, 8) * 3.0


def test_knn_votes_by_cosine_similarity():
  train = probe.Clips(
    np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 5.0]], np.float32),
    np.eye(2, dtype=np.float32)[[0, 0, 1, 1]],
    [None] * 4,
  )
  query = np.array([[10.0, 0.5], [0.2, 1.0]], np.float32)  # cosine ignores the length
  scores = probe.knn_scores(train, query, k=1, single_label=True)
  assert scores.argmax(axis=1).tolist() == [0, 1]
  scores3 = probe.knn_scores(train, query, k=3, single_label=False)
  np.testing.assert_allclose(scores3.sum(axis=1), 1.0)  # vote shares
  assert scores3[0, 0] == pytest.approx(2 / 3)


def test_linear_probe_separates_clusters_and_its_weight_decay_is_chosen_on_valid():
  train, valid, test = (_clips(CENTRES, 20, seed) for seed in (0, 1, 2))
  result = probe.evaluate_split(train, valid, test, k=5, single_label=True)
  assert result["knn"]["test"]["accuracy"] == 1.0 and result["knn"]["k"] == 5
  linear = result["linear"]
  assert linear["test"]["accuracy"] == 1.0
  assert set(linear["candidates"]) == {str(wd) for wd in probe.WEIGHT_DECAYS}
  assert linear["valid"]["accuracy"] == max(linear["candidates"].values())


def test_the_valid_split_decides_not_the_test_split():
  # Train and valid agree, test is relabelled: the choice (made on valid) cannot see it.
  train, valid = _clips(CENTRES, 20, 0), _clips(CENTRES, 20, 1)
  flipped = _clips(CENTRES, 20, 2)
  flipped.targets = flipped.targets[:, [1, 2, 0]]
  a = probe.evaluate_split(train, valid, _clips(CENTRES, 20, 2), k=5, single_label=True)
  b = probe.evaluate_split(train, valid, flipped, k=5, single_label=True)
  assert a["linear"]["weight_decay"] == b["linear"]["weight_decay"]
  assert a["linear"]["valid"] == b["linear"]["valid"]
  assert b["linear"]["test"]["accuracy"] == 0.0


def _tiny_dass(folder, classes=3):
  config = models.DassConfig(num_classes=classes, depths=(1, 1), dims=(8, 16))
  model = models.build_model(config)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 128), np.float32))["params"]
  return save_converted(folder, config, params)


def test_the_command_on_a_prepared_folder(tmp_path, capsys):
  audio_folders.class_folder(tmp_path / "sounds", per_class=8)
  prepare.prepare(
    tmp_path / "data", folder=str(tmp_path / "sounds"), valid_fraction=0.25, test_fraction=0.25
  )
  ckpt = _tiny_dass(tmp_path / "ckpt")
  out = tmp_path / "probe.json"
  argv = ["--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--k", "3", "--out"]
  assert probe.main([*argv, str(out)]) == 0
  printed = capsys.readouterr().out
  assert "knn" in printed and "linear" in printed
  results = json.loads(out.read_text())
  assert results["metric"] == "accuracy" and results["embedding_dim"] == 16
  assert results["num_clips"] == {"train": 12, "valid": 6, "test": 6}
  assert results["knn"]["k"] == 3 and results["bucket_seconds"] == pytest.approx(0.32)
  for name in ("knn", "linear"):
    assert results[name]["test"]["num_examples"] == 6
  # The command's figures are those of the scene embeddings of every split's clips, k-NN voting
  # among the train clips and the linear probe's weight chosen on valid.
  clips, _ = probe.embed_datafiles(
    Embedder.from_checkpoint(ckpt, bucket_seconds=0.32), str(tmp_path / "data")
  )
  assert [len(clips[s].folds) for s in ("train", "valid", "test")] == [12, 6, 6]
  expected = probe.evaluate_split(clips["train"], clips["valid"], clips["test"], 3, True)
  for name in ("knn", "linear"):
    for split in ("valid", "test"):
      assert results[name][split] == pytest.approx(expected[name][split])
  assert results["linear"]["weight_decay"] == expected["linear"]["weight_decay"]
  assert probe.main([*argv, str(tmp_path / "r.json"), "--random-init"]) == 0
  assert json.loads((tmp_path / "r.json").read_text())["random_init"] is True


def test_folds_give_one_round_per_test_fold(tmp_path):
  audio_folders.class_folder(tmp_path / "rec", per_class=8)
  with open(tmp_path / "list.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["path", "label", "fold"])
    for name in audio_folders.CLASSES:
      for i in range(8):
        writer.writerow([f"rec/{name}/{name}_{i}.wav", name, 1 + i % 4])
  prepare.prepare(tmp_path / "data", csv_file=str(tmp_path / "list.csv"))
  embedder = Embedder.from_checkpoint(_tiny_dass(tmp_path / "ckpt"), bucket_seconds=0.32)
  results = probe.probe(embedder, str(tmp_path / "data"), k=3)
  rounds = results["folds"]
  assert [(r["test_fold"], r["valid_fold"]) for r in rounds] == [
    ("1", "4"),
    ("2", "1"),
    ("3", "2"),
    ("4", "3"),
  ]
  assert all(r["knn"]["test"]["num_examples"] == 6 for r in rounds)
  mean = np.mean([r["linear"]["test"]["accuracy"] for r in rounds])
  assert results["linear"]["test"]["accuracy"]["mean"] == pytest.approx(mean)
