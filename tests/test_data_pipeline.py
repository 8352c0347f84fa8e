"""The grain pipeline: batches, order, sharding, resume, bad audio, workers (dass_jax.data)."""

import dataclasses
import os

import chex
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dass_jax import constants, data
from dass_jax import labels as labels_lib
from dass_jax.data import augment, balanced, pipeline, synthetic
from dass_jax.data import datafile as datafile_lib

FRAMES = 100  # 1 s clips.
BATCH = 4
BAD = ("empty.wav", "corrupt.wav", "missing.wav")
MASK_VALUE = (0.0 - constants.AUDIOSET_FBANK_MEAN) / (2 * constants.AUDIOSET_FBANK_STD)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return synthetic.ensure_dataset(
    tmp_path_factory.mktemp("syn"), seed=0, num_train=48, num_eval=10, clip_seconds=1.0
  )


@pytest.fixture(scope="module")
def with_bad_files(dataset, tmp_path_factory):
  """The training datafile plus an empty, a corrupt and a missing wav (rows 48, 49, 50)."""
  root = tmp_path_factory.mktemp("bad")
  (root / "empty.wav").write_bytes(b"")
  (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk" + bytes(range(200)))
  entries = datafile_lib.read_datafile(dataset.train_datafile)
  entries += [datafile_lib.Entry(wav=str(root / name), labels=("/m/syn_tone",)) for name in BAD]
  datafile_lib.write_datafile(root / "train.json", entries)
  return dataclasses.replace(dataset, train_datafile=str(root / "train.json"))


def _cfg(ds, datafile=None, **overrides):
  fields = {
    "datafile": datafile or ds.train_datafile,
    "label_csv": ds.label_csv,
    "target_frames": FRAMES,
    "batch_size": BATCH,
    "read_threads": 2,
    **overrides,
  }
  return data.default_config(**fields)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batch_layout_and_labels(dataset):
  it = data.make_train_iterator(_cfg(dataset, mixup=0.0), seed=0, shard_index=0, shard_count=1)
  batch = next(it)
  assert set(batch) == {"fbank", "labels", "index"}
  assert batch["fbank"].shape == (BATCH, FRAMES, 128) and batch["fbank"].dtype == np.float32
  assert batch["labels"].shape == (BATCH, 13) and batch["labels"].dtype == np.float32
  assert batch["index"].shape == (BATCH,)
  entries = datafile_lib.read_datafile(dataset.train_datafile)
  labels = labels_lib.read_label_csv(dataset.label_csv)
  for row, label in zip(batch["index"], batch["labels"]):
    assert set(np.flatnonzero(label)) == set(datafile_lib.label_indices([entries[row]], labels)[0])
  assert it.steps_per_epoch == 12 and it.num_classes == 13 == data.num_classes_from_csv(
    dataset.label_csv
  )


def test_masks_are_applied_before_normalisation(dataset):
  # A masked cell is 0 before normalisation, so it reads (0 - mean) / (2 std) afterwards.
  # timem is given at 1024 frames and capped at half of it (half of these 1 s clips).
  cfg = _cfg(dataset, mixup=0.0, freqm=48, timem=augment.MAX_TIMEM)
  batch = next(data.make_train_iterator(cfg, seed=1, shard_index=0, shard_count=1))
  masked = np.isclose(batch["fbank"], MASK_VALUE, atol=1e-6)
  assert np.any(masked.all(axis=1))  # Some mel bin masked over all frames.
  assert np.any(masked.all(axis=2))  # Some frame masked over all bins.
  plain = next(
    data.make_train_iterator(
      _cfg(dataset, mixup=0.0, freqm=0, timem=0), seed=1, shard_index=0, shard_count=1
    )
  )
  assert not np.any(np.isclose(plain["fbank"], MASK_VALUE, atol=1e-6).all(axis=1))


def test_order_is_seeded_and_epochs_are_permutations(dataset):
  def indices(seed, batches=None):
    it = data.make_train_iterator(
      _cfg(dataset, num_epochs=2, mixup=0.0, freqm=0, timem=0),
      seed=seed,
      shard_index=0,
      shard_count=1,
    )
    return np.concatenate([b["index"] for b in (_take(it, batches) if batches else it)])

  a = indices(0)
  assert a.size == 2 * 48  # num_epochs=2 ends after two epochs of 12 batches.
  np.testing.assert_array_equal(np.sort(a[:48]), np.arange(48))
  np.testing.assert_array_equal(np.sort(a[48:]), np.arange(48))
  assert not np.array_equal(a[:48], a[48:])
  np.testing.assert_array_equal(a[:12], indices(0, 3))
  assert not np.array_equal(a[:12], indices(1, 3))


def test_same_seed_same_augmented_batches(dataset):
  cfg = _cfg(dataset, noise=True)
  a = _take(data.make_train_iterator(cfg, seed=3, shard_index=0, shard_count=1), 3)
  b = _take(data.make_train_iterator(cfg, seed=3, shard_index=0, shard_count=1), 3)
  chex.assert_trees_all_equal(a, b)
  assert any(np.any((x["labels"] > 0) & (x["labels"] < 1)) for x in a)  # Mixup happened.


def test_fbank_cache_gives_the_same_batches(dataset, monkeypatch):
  # Two epochs with mixup, masks and noise: cached clips and mixed ones (never cached) give the
  # batches of the uncached pipeline, with fewer feature computations.
  # Only calls of this test's pipelines count (a length no other test uses): iterators of earlier
  # tests may still be prefetching in background threads.
  frames = FRAMES + 3
  calls = {"n": 0}
  compute = pipeline._Features.__call__

  def counting(self, waveform):
    calls["n"] += self.target_frames == frames
    return compute(self, waveform)

  monkeypatch.setattr(pipeline._Features, "__call__", counting)
  cfg = _cfg(dataset, num_epochs=2, mixup=0.5, noise=True, read_threads=1, target_frames=frames)
  plain = list(data.make_train_iterator(cfg, seed=5, shard_index=0, shard_count=1))
  uncached_calls, calls["n"] = calls["n"], 0
  cfg.cache_fbank = True
  cached = list(data.make_train_iterator(cfg, seed=5, shard_index=0, shard_count=1))
  chex.assert_trees_all_equal(plain, cached)
  assert uncached_calls == 2 * 48 and calls["n"] < uncached_calls
  assert any(np.any((b["labels"] > 0) & (b["labels"] < 1)) for b in cached)  # Mixup happened.


def test_label_prior_counts_rows_and_weights(dataset, tmp_path):
  entries = datafile_lib.read_datafile(dataset.train_datafile)
  labels = labels_lib.read_label_csv(dataset.label_csv)
  rows = datafile_lib.label_indices(entries, labels)
  expected = np.zeros(len(labels))
  for r in rows:
    expected[list(r)] += 1
  np.testing.assert_allclose(data.label_prior(_cfg(dataset)), expected / len(rows))
  weights = np.zeros(len(rows))
  weights[:2] = [1.0, 3.0]
  path = tmp_path / "weights.csv"
  balanced.write_weights(path, weights)
  weighted = np.zeros(len(labels))
  for w, r in zip(weights[:2], rows[:2]):
    weighted[list(r)] += w / 4.0
  np.testing.assert_allclose(data.label_prior(_cfg(dataset, weights_file=str(path))), weighted)


def test_two_shards_partition_each_epoch(dataset):
  cfg = _cfg(dataset, num_epochs=1, mixup=0.0)
  rows = [
    np.concatenate(
      [b["index"] for b in data.make_train_iterator(cfg, seed=0, shard_index=i, shard_count=2)]
    )
    for i in range(2)
  ]
  assert rows[0].size == rows[1].size == 24
  assert not set(rows[0]) & set(rows[1])
  assert set(rows[0]) | set(rows[1]) == set(range(48))


def test_eval_pads_and_shards(dataset):
  cfg = _cfg(dataset, datafile=dataset.eval_datafile)
  seen = []
  for shard in range(2):
    batches = list(data.make_eval_iterator(cfg, shard_index=shard, shard_count=2))
    assert len(batches) == 2  # 5 rows per host in batches of 4.
    index = np.concatenate([b["index"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, [1] * 5 + [0] * 3)
    np.testing.assert_array_equal(index[5:], [-1] * 3)
    assert np.all(batches[-1]["fbank"][1:] == 0) and np.all(batches[-1]["labels"][1:] == 0)
    seen += index[:5].tolist()
  assert sorted(seen) == list(range(10))


def test_eval_is_unaugmented(dataset):
  cfg = _cfg(dataset, datafile=dataset.eval_datafile, noise=True, mixup=1.0)
  a = next(data.make_eval_iterator(cfg, shard_index=0, shard_count=1))
  assert set(a) == {"fbank", "labels", "index", "mask"}
  assert set(np.unique(a["labels"])) <= {0.0, 1.0}
  b = next(
    data.make_eval_iterator(
      _cfg(dataset, datafile=dataset.eval_datafile), shard_index=0, shard_count=1
    )
  )
  chex.assert_trees_all_equal([a], [b])


def test_resume_from_state_gives_identical_batches(dataset):
  cfg = _cfg(dataset, noise=True)
  it = data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)
  _take(it, 11)
  state = it.get_state()
  expected = _take(it, 3)  # Crosses into epoch 2.
  fresh = data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)
  fresh.set_state(state)
  chex.assert_trees_all_equal(_take(fresh, 3), expected)


def test_resume_through_orbax_checkpoint(with_bad_files, tmp_path):
  cfg = _cfg(with_bad_files, mixup=0.0)
  it = data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)
  _take(it, 13)  # A full epoch: every bad row has been met.
  assert it.num_skipped >= 3
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(13, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    skipped_at_save = it.num_skipped
    expected = _take(it, 2)
    fresh = data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)
    manager.restore(13, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert fresh.num_skipped == skipped_at_save
  chex.assert_trees_all_equal(_take(fresh, 2), expected)


def test_bad_audio_is_skipped_and_counted(with_bad_files, caplog):
  cfg = _cfg(with_bad_files, num_epochs=1, mixup=0.0)
  it = data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1)
  index = np.concatenate([b["index"] for b in it])
  assert index.size == 48  # 51 rows -> 12 full batches; every batch stays full.
  assert not set(index) & {48, 49, 50}
  # Epoch 0 visits the first 48 rows of the permutation seeded by (seed, epoch).
  order = np.random.default_rng([0, 0, 0]).permutation(51)[:48]
  assert it.num_skipped >= len({48, 49, 50} & set(order)) > 0
  assert it.num_skipped == sum("skipped unreadable audio" in r.message for r in caplog.records)

  caplog.clear()
  evaluation = data.make_eval_iterator(_cfg(with_bad_files), shard_index=0, shard_count=1)
  batches = list(evaluation)
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert evaluation.num_skipped == 3
  np.testing.assert_array_equal(mask[index >= 48], 0)
  np.testing.assert_array_equal(mask[(index >= 0) & (index < 48)], 1)
  messages = " ".join(r.getMessage() for r in caplog.records)
  folder = os.path.dirname(with_bad_files.train_datafile)
  for name, problem in zip(BAD, ("empty file", "cannot decode", "no such file")):
    assert f"{os.path.join(folder, name)}: {problem}" in messages


def test_worker_processes_match_in_process(with_bad_files):
  cfg = _cfg(with_bad_files, noise=True)
  local = data.make_train_iterator(cfg, seed=7, shard_index=1, shard_count=2)
  expected = _take(local, 6)
  skipped = local.num_skipped
  expected += _take(local, 2)
  cfg.num_workers = 2
  workers = data.make_train_iterator(cfg, seed=7, shard_index=1, shard_count=2)
  try:
    chex.assert_trees_all_equal(_take(workers, 6), expected[:6])
    assert workers.num_skipped == skipped > 0  # Counts from the workers reach the main process.
    state = workers.get_state()
  finally:
    workers.close()
  cfg.num_workers = 0  # A state saved with workers restores without them.
  resumed = data.make_train_iterator(cfg, seed=7, shard_index=1, shard_count=2)
  resumed.set_state(state)
  chex.assert_trees_all_equal(_take(resumed, 2), expected[6:])


def test_weights_file_restricts_sampling(dataset, tmp_path):
  weights = np.zeros(48)
  weights[[1, 3]] = [1.0, 3.0]
  balanced.write_weights(tmp_path / "w.csv", weights)
  cfg = _cfg(dataset, weights_file=str(tmp_path / "w.csv"), mixup=0.0)
  index = np.concatenate(
    [
      b["index"]
      for b in _take(data.make_train_iterator(cfg, seed=0, shard_index=0, shard_count=1), 12)
    ]
  )
  assert set(index) == {1, 3}
  assert np.count_nonzero(index == 3) > np.count_nonzero(index == 1)


def test_config_errors(dataset):
  with pytest.raises(ValueError, match=r"unknown data config fields \['batchsize'\]"):
    data.make_train_iterator(
      {"datafile": dataset.train_datafile, "batchsize": 4}, seed=0, shard_index=0, shard_count=1
    )
  with pytest.raises(ValueError, match="do not fill one batch of 64"):
    data.make_train_iterator(_cfg(dataset, batch_size=64), seed=0, shard_index=0, shard_count=1)
  with pytest.raises(ValueError, match="shard_index 2 not in"):
    data.make_eval_iterator(_cfg(dataset), shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="needs datafile and label_csv"):
    data.make_eval_iterator(data.default_config(), shard_index=0, shard_count=1)
