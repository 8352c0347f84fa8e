"""Atomic writes (`dass_jax.files`): a target is complete or untouched, whatever fails."""

import json
import os
import time

import numpy as np
import pytest

from dass_jax import files


def test_atomic_file_replaces_on_success_and_keeps_the_old_content_on_error(tmp_path):
  path = tmp_path / "a.json"
  files.write_json(path, {"v": 1})
  assert json.loads(path.read_text()) == {"v": 1}
  with pytest.raises(RuntimeError, match="half-way"), files.atomic_file(path) as tmp:
    tmp.write_text('{"v": 2, "trunc')
    raise RuntimeError("killed half-way")
  assert json.loads(path.read_text()) == {"v": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary left


def test_save_npy_keeps_the_suffix_numpy_needs(tmp_path):
  path = tmp_path / "sub" / "x.npy"
  files.save_npy(path, np.arange(3))
  np.testing.assert_array_equal(np.load(path), np.arange(3))
  assert sorted(p.name for p in path.parent.iterdir()) == ["x.npy"]


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
  target = tmp_path / "out"
  with pytest.raises(ValueError), files.atomic_folder(target) as tmp:
    (tmp / "part.txt").write_text("half")
    assert not target.exists()
    raise ValueError("interrupted")
  assert not target.exists() and list(tmp_path.iterdir()) == []
  with files.atomic_folder(target) as tmp:
    (tmp / "done.txt").write_text("whole")
  assert (target / "done.txt").read_text() == "whole"
  with pytest.raises(FileExistsError), files.atomic_folder(target):
    pass


def test_atomic_folder_replace_and_keep(tmp_path):
  target = tmp_path / "out"
  target.mkdir()
  (target / "old.txt").write_text("old")
  with files.atomic_folder(target, if_exists="keep") as tmp:
    (tmp / "new.txt").write_text("new")
  assert sorted(os.listdir(target)) == ["old.txt"]  # another writer's complete folder wins
  with files.atomic_folder(target, if_exists="replace") as tmp:
    (tmp / "new.txt").write_text("new")
  assert sorted(os.listdir(target)) == ["new.txt"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
  stale = tmp_path / ".tmp-out-abc"
  fresh = tmp_path / ".tmp-out-def"
  for folder in (stale, fresh):
    folder.mkdir()
  old = time.time() - 2 * files.STALE_AFTER_S
  os.utime(stale, (old, old))
  with files.atomic_folder(tmp_path / "out") as tmp:
    (tmp / "x").write_text("x")
  assert not stale.exists() and fresh.exists()  # a fresh one may belong to a running process
