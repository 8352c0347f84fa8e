"""Train / valid / test assignment (`dass_jax.data.splits`): stratification, whole groups,
determinism under the seed."""

from collections import Counter

import numpy as np
import pytest

from dass_jax.data import splits

FRACTIONS = {"valid": 0.1, "test": 0.2}


def _dataset(seed=0, classes=5, per_class=(40, 23, 61, 10, 30), groups=None):
  rng = np.random.default_rng(seed)
  labels, group_of, keys = [], [], []
  for c in range(classes):
    for i in range(per_class[c]):
      labels.append((f"class{c}",))
      group_of.append(None if groups is None else f"g{rng.integers(groups)}")
      keys.append(f"c{c}/{i}.wav")
  return labels, group_of, keys


def _per_class(labels, split):
  counts = Counter()
  for row, s in zip(labels, split):
    counts[(row[0], s)] += 1
  return counts


def test_every_class_gets_its_fraction_within_one_clip():
  labels, groups, keys = _dataset()
  split = splits.assign_splits(labels, groups, FRACTIONS, seed=0, keys=keys)
  counts = _per_class(labels, split)
  for name, n in Counter(r[0] for r in labels).items():
    for s, fraction in FRACTIONS.items():
      assert abs(counts[(name, s)] - fraction * n) <= 1, (name, s, counts[(name, s)], n)
    assert counts[(name, "train")] + counts[(name, "valid")] + counts[(name, "test")] == n


def test_valid_and_test_are_disjoint_and_cover_everything():
  labels, groups, keys = _dataset()
  split = splits.assign_splits(labels, groups, FRACTIONS, seed=3, keys=keys)
  assert set(split) == {"train", "valid", "test"}
  assert len(split) == len(labels)  # each clip in exactly one split


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_group_never_crosses_splits(seed):
  labels, groups, keys = _dataset(seed=seed, groups=37)
  split = splits.assign_splits(labels, groups, FRACTIONS, seed=seed, keys=keys)
  where = {}
  for g, s in zip(groups, split):
    assert where.setdefault(g, s) == s, f"group {g} in {where[g]} and {s}"
  splits.check_groups(split, groups, "test")  # agrees
  sizes = Counter(split)
  assert sizes["valid"] > 0 and sizes["test"] > 0


def test_same_seed_same_split_other_seed_other_split():
  labels, groups, keys = _dataset()
  a = splits.assign_splits(labels, groups, FRACTIONS, seed=7, keys=keys)
  b = splits.assign_splits(labels, groups, FRACTIONS, seed=7, keys=keys)
  c = splits.assign_splits(labels, groups, FRACTIONS, seed=8, keys=keys)
  assert a == b
  assert a != c
  # Still stratified under the other seed.
  assert _per_class(labels, a)[("class0", "test")] == _per_class(labels, c)[("class0", "test")]


def test_the_row_order_does_not_change_the_assignment():
  labels, groups, keys = _dataset(groups=20)
  split = splits.assign_splits(labels, groups, FRACTIONS, seed=1, keys=keys)
  order = np.random.default_rng(0).permutation(len(labels))
  shuffled = splits.assign_splits(
    [labels[i] for i in order],
    [groups[i] for i in order],
    FRACTIONS,
    seed=1,
    keys=[keys[i] for i in order],
  )
  assert [shuffled[j] for j in np.argsort(order)] == split


def test_multi_label_clips_are_stratified_by_their_rare_classes():
  rng = np.random.default_rng(0)
  labels = [("common",) + (("rare",) if rng.random() < 0.15 else ()) for _ in range(200)]
  split = splits.assign_splits(labels, [None] * 200, {"valid": 0.2, "test": 0.2}, seed=0)
  rare = sum("rare" in r for r in labels)
  for s in ("valid", "test"):
    got = sum("rare" in r for r, t in zip(labels, split) if t == s)
    assert abs(got - 0.2 * rare) <= 1


def test_carve_moves_only_train_clips_and_keeps_groups_whole():
  labels, groups, keys = _dataset(groups=30)
  given = ["test" if k.endswith(("0.wav", "5.wav")) else "train" for k in keys]
  groups = [g if s == "train" else None for g, s in zip(groups, given)]
  out = splits.carve(given, labels, groups, "train", "valid", 0.25, seed=0, keys=keys)
  assert all(o == "test" for o, g in zip(out, given) if g == "test")
  assert {o for o, g in zip(out, given) if g == "train"} == {"train", "valid"}
  splits.check_groups(out, groups, "carved")
  moved = sum(o == "valid" for o in out)
  assert 0.15 * given.count("train") < moved < 0.35 * given.count("train")


def test_check_groups_names_the_group_in_two_splits():
  with pytest.raises(ValueError, match="group 'spk1' has clips in both 'train' and 'test'"):
    splits.check_groups(["train", "test", "train"], ["spk1", "spk1", None], "the split column")


@pytest.mark.parametrize(
  "fractions, message",
  [({"valid": 1.0}, r"in \[0, 1\)"), ({"valid": 0.6, "test": 0.5}, "leave nothing")],
)
def test_bad_fractions_are_refused(fractions, message):
  with pytest.raises(ValueError, match=message):
    splits.assign_splits([("a",)], [None], fractions, seed=0)


def test_a_zero_fraction_gets_no_clips():
  labels, groups, keys = _dataset()
  split = splits.assign_splits(labels, groups, {"valid": 0.1, "test": 0.0}, seed=0, keys=keys)
  assert "test" not in split and "valid" in split
