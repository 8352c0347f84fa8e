"""The embedded synthetic dataset: deterministic, well-formed, cached, class-discriminable."""

import hashlib
import os

import numpy as np
import pytest

from dass_jax import audio
from dass_jax import labels as labels_lib
from dass_jax.data import datafile as datafile_lib
from dass_jax.data import synthetic
from dass_jax.frontends import kaldi_fbank

SMALL = {"num_train": 40, "num_eval": 8, "clip_seconds": 1.5}


def _hashes(root):
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  return synthetic.ensure_dataset(tmp_path_factory.mktemp("a"), seed=1, **SMALL)


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
  again = synthetic.ensure_dataset(tmp_path / "b", seed=1, **SMALL)
  other = synthetic.ensure_dataset(tmp_path / "c", seed=2, **SMALL)
  reference = _hashes(small.root)
  assert len(reference) == 40 + 8 + 4  # wavs, 2 datafiles, label CSV, COMPLETE.
  assert _hashes(again.root) == reference
  other_hashes = _hashes(other.root)
  assert other_hashes.keys() == reference.keys()
  assert other_hashes["train/train_00000.wav"] != reference["train/train_00000.wav"]


def test_well_formed(small):
  labels = labels_lib.read_label_csv(small.label_csv)
  assert len(labels) == small.num_classes >= 10
  assert all(mid.startswith("/m/syn_") for mid in labels.mids)
  present = set()
  for datafile, count in ((small.train_datafile, 40), (small.eval_datafile, 8)):
    entries = datafile_lib.read_datafile(datafile)
    assert len(entries) == count
    for indices, entry in zip(datafile_lib.label_indices(entries, labels), entries):
      assert 1 <= len(indices) <= 3 and len(set(indices)) == len(indices)
      present.update(indices)
      waveform = audio.load_audio(entry.wav)
      assert waveform.shape == (24000,) and waveform.dtype == np.float32
      assert 0.0 < np.max(np.abs(waveform)) <= 0.99
  assert len(present) >= 10


def test_valid_split_adds_clips_without_changing_the_others(small, tmp_path):
  with_valid = synthetic.ensure_dataset(tmp_path, seed=1, num_valid=6, **SMALL)
  assert os.path.basename(with_valid.root) == "v1-seed1-train40-valid6-eval8-1.5s"
  assert small.valid_datafile == ""
  hashes, reference = _hashes(with_valid.root), _hashes(small.root)
  for name in reference:  # train and eval clips and datafiles: the same bytes
    if name != "COMPLETE":
      assert hashes[name] == reference[name], name
  valid = datafile_lib.read_datafile(with_valid.valid_datafile)
  assert len(valid) == 6 and all("/valid/valid_" in e.wav for e in valid)
  assert hashes["valid/valid_00000.wav"] not in set(reference.values())  # new clips
  weak = synthetic.ensure_dataset(tmp_path, seed=1, num_valid=6, missing_label_rate=0.3, **SMALL)
  assert weak.valid_datafile == with_valid.valid_datafile  # valid labels stay complete


def test_cached_and_atomic(small):
  before = os.path.getmtime(small.train_datafile)
  assert synthetic.ensure_dataset(os.path.dirname(small.root), seed=1, **SMALL) == small
  assert os.path.getmtime(small.train_datafile) == before
  leftovers = [n for n in os.listdir(os.path.dirname(small.root)) if n.startswith(".tmp")]
  assert not leftovers


def test_stale_temporary_folders_are_removed(tmp_path):
  stale = tmp_path / ".tmp-v1-seed0-train2-eval1-1s-abc"
  fresh = tmp_path / ".tmp-v1-seed0-train2-eval1-1s-def"
  stale.mkdir()
  fresh.mkdir()
  os.utime(stale, (0, 0))
  synthetic.ensure_dataset(tmp_path, seed=0, num_train=2, num_eval=1, clip_seconds=1.0)
  assert not stale.exists() and fresh.exists()


def test_incomplete_folder_is_reported(tmp_path):
  root = tmp_path / "v1-seed0-train1-eval1-1s"
  root.mkdir()
  with pytest.raises(RuntimeError, match="not a complete synthetic dataset"):
    synthetic.ensure_dataset(tmp_path, seed=0, num_train=1, num_eval=1, clip_seconds=1.0)


def test_classes_are_discriminable_in_log_mel():
  # Per isolated event (over a faint noise floor): mean and std of each mel bin over time and the
  # first-half minus second-half mean (the direction of chirps). Nearest-centroid classification
  # of held-out events must be right at least 90% of the time.
  rng = np.random.default_rng(0)
  profiles = []
  for _, _, make in synthetic.CLASSES:
    rows = []
    for _ in range(6):
      event = make(rng)
      event = event / np.max(np.abs(event)) * 0.5 + rng.standard_normal(event.size) * 1e-3
      fbank = kaldi_fbank.fbank(event)
      half = fbank.shape[0] // 2
      rows.append(
        np.concatenate(
          [
            fbank.mean(axis=0),
            fbank.std(axis=0),
            fbank[:half].mean(axis=0) - fbank[half:].mean(axis=0),
          ]
        )
      )
    profiles.append(np.stack(rows))
  centroids = np.stack([p[:3].mean(axis=0) for p in profiles])
  correct = 0
  for c, p in enumerate(profiles):
    for row in p[3:]:
      correct += int(np.argmin(np.linalg.norm(centroids - row, axis=1)) == c)
  assert correct >= 0.9 * 3 * len(profiles)


def test_weak_training_labels_drop_labels_only(tmp_path):
  """missing_label_rate: same clips and eval labels, each training label kept w.p. 1 - r,
  deterministically, without touching the complete datafiles."""
  complete = synthetic.ensure_dataset(tmp_path, seed=1, **SMALL)
  before = _hashes(complete.root)
  weak = synthetic.ensure_dataset(tmp_path, seed=1, missing_label_rate=0.5, **SMALL)
  assert weak.root == complete.root and weak.eval_datafile == complete.eval_datafile
  assert os.path.basename(weak.train_datafile) == "train-missing0.5.json"
  after = _hashes(complete.root)
  assert {k: after[k] for k in before} == before  # audio and complete labels untouched
  full = datafile_lib.read_datafile(complete.train_datafile)
  dropped = datafile_lib.read_datafile(weak.train_datafile)
  assert [e.wav for e in dropped] == [e.wav for e in full]
  assert all(set(d.labels) <= set(f.labels) for d, f in zip(dropped, full))
  kept = sum(len(d.labels) for d in dropped) / sum(len(f.labels) for f in full)
  assert 0.3 < kept < 0.7  # ~75 labels, each kept with probability 0.5
  assert any(not d.labels for d in dropped)  # clips may lose every label
  again = synthetic.ensure_dataset(tmp_path, seed=1, missing_label_rate=0.5, **SMALL)
  assert datafile_lib.read_datafile(again.train_datafile) == dropped
  with pytest.raises(ValueError, match="missing_label_rate"):
    synthetic.ensure_dataset(tmp_path, seed=1, missing_label_rate=1.0, **SMALL)
