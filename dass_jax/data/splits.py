"""Train / valid / test assignment of labelled clips: stratified, group-aware, deterministic.

    split = assign_splits(labels, groups, {"valid": 0.1, "test": 0.1}, seed=0)
    # split[i] in ("train", "valid", "test")

Rules:
  * a group (speaker, session, source recording) is assigned whole: its clips never end up in two
    splits; a clip without a group is a group of its own;
  * stratified: each split gets about `fraction x clips` of every class. Groups are placed one at a
    time, rarest classes first, larger groups first, ties in a random order drawn from `seed`; a
    group goes to the split that most lacks the group's classes relative to its target (then the
    split that most lacks clips overall). Without groups every class lands within one clip of its
    target in every split; with groups, within the size of a group;
  * deterministic: the same clips, fractions and seed give the same assignment; the seed's
    tie-breaking is keyed by the group's name (a clip without a group: its key, e.g. its path), so
    the order of the input rows does not matter.

`carve(...)` takes a fixed split apart (a valid split carved from a given train split) by the same
rules; `check_groups(...)` verifies that given splits keep every group whole.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)


def _tie_breaker(name: str, seed: int) -> int:
  """A stable pseudo-random key of a group name under `seed` (independent of the row order)."""
  return int.from_bytes(hashlib.sha256(f"{seed}\x00{name}".encode()).digest()[:8], "big")


def assign_splits(
  labels: Sequence[Sequence[str]],
  groups: Sequence[str | None],
  fractions: Mapping[str, float],
  seed: int,
  rest: str = TRAIN,
  keys: Sequence[str] | None = None,
) -> list[str]:
  """Assigns every clip to `rest` or one of the splits of `fractions`.

  Args:
    labels: the label names of each clip (one for single-label data, several for multi-label).
    groups: each clip's group name, or None for a clip in a group of its own.
    fractions: {split name: fraction of the clips} for the carved-out splits (e.g. valid, test);
      each in [0, 1), summing to less than 1.
    seed: seed of the tie-breaking order.
    rest: the name of the split that takes what the fractions leave.
    keys: a name for each clip (its path), keying the tie-breaking of clips without a group;
      None: the row index.

  Returns:
    The split name of each clip, in input order.
  """
  if len(labels) != len(groups):
    raise ValueError(f"{len(labels)} label rows but {len(groups)} group entries")
  for name, fraction in fractions.items():
    if not 0.0 <= fraction < 1.0:
      raise ValueError(f"the {name} fraction must be in [0, 1), got {fraction}")
  if sum(fractions.values()) >= 1.0:
    raise ValueError(f"fractions {dict(fractions)} leave nothing for {rest}")
  names = [rest, *fractions]
  share = np.array([1.0 - sum(fractions.values()), *fractions.values()])

  # A group's members; a clip without a group is the group ("clip", row).
  members: dict[tuple[str, str | int], list[int]] = defaultdict(list)
  tie_name: dict[tuple[str, str | int], str] = {}
  for i, group in enumerate(groups):
    g = ("clip", i) if group is None else ("group", group)
    members[g].append(i)
    tie_name[g] = (
      f"group\x00{group}" if group is not None else (f"clip\x00{i if keys is None else keys[i]}")
    )
  class_count = Counter(c for row in labels for c in set(row))
  classes = sorted(class_count)
  column = {c: k for k, c in enumerate(classes)}
  group_classes = {
    g: sorted({c for i in rows for c in labels[i]}, key=lambda c: (class_count[c], c))
    for g, rows in members.items()
  }
  # Rarest class first, then larger groups first, then a seeded order.
  order = sorted(
    members,
    key=lambda g: (
      class_count[group_classes[g][0]] if group_classes[g] else len(labels) + 1,
      -len(members[g]),
      _tie_breaker(tie_name[g], seed),
    ),
  )
  target = share[:, None] * np.array([class_count[c] for c in classes], float)[None, :]
  have = np.zeros_like(target)
  total_target = share * len(labels)
  total_have = np.zeros(len(names))
  out = [rest] * len(labels)
  for g in order:
    rows = members[g]
    cols = [column[c] for c in group_classes[g]]
    counts = np.zeros(len(classes))
    for i in rows:
      for c in set(labels[i]):
        counts[column[c]] += 1
    # What each split lacks of this group's classes (relative to their targets), then overall.
    if cols:
      lack = ((target[:, cols] - have[:, cols]) / np.maximum(target[:, cols], 1e-9)).sum(axis=1)
    else:
      lack = np.zeros(len(names))
    overall = (total_target - total_have) / np.maximum(total_target, 1e-9)
    # A split with a zero share never receives anything.
    lack = np.where(share > 0, lack, -np.inf)
    best = max(range(len(names)), key=lambda s: (lack[s], overall[s], -s))
    have[best] += counts
    total_have[best] += len(rows)
    for i in rows:
      out[i] = names[best]
  return out


def carve(
  split: Sequence[str],
  labels: Sequence[Sequence[str]],
  groups: Sequence[str | None],
  source: str,
  target: str,
  fraction: float,
  seed: int,
  keys: Sequence[str] | None = None,
) -> list[str]:
  """Moves about `fraction` of the clips of split `source` to split `target` (stratified, whole
  groups, as `assign_splits`); other clips keep their split."""
  rows = [i for i, s in enumerate(split) if s == source]
  sub = assign_splits(
    [labels[i] for i in rows],
    [groups[i] for i in rows],
    {target: fraction},
    seed,
    rest=source,
    keys=None if keys is None else [keys[i] for i in rows],
  )
  out = list(split)
  for i, s in zip(rows, sub):
    out[i] = s
  return out


def check_groups(split: Sequence[str], groups: Sequence[str | None], what: str) -> None:
  """Raises ValueError naming a group whose clips lie in more than one split."""
  seen: dict[str, str] = {}
  for s, g in zip(split, groups):
    if g is None:
      continue
    if seen.setdefault(g, s) != s:
      raise ValueError(
        f"group {g!r} has clips in both {seen[g]!r} and {s!r} ({what}); a group must stay in "
        "one split"
      )
