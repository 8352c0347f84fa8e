"""Device mesh and parameter sharding rules, all in one place.

The mesh is described in the config as `[(axis_name, size), ...]` with one size allowed to be -1
(all remaining devices), e.g. `[("data", -1), ("fsdp", 1)]` (pure data parallelism) or
`[("data", 1), ("fsdp", -1)]` (fully sharded parameters). Batches are split over every mesh axis
(`batch_sharding`); parameters and optimizer state follow `sharding_rules`, a list of
`(regex, rule)` pairs matched with `re.search` against the '/'-joined path of each leaf (optimizer
state paths end in the parameter path, so one rule list covers both). The first match wins:

  "replicate"   a full copy on every device.
  "fsdp"        split the largest dimension that the `fsdp` axis size divides (ties: the last
                such dimension) over `fsdp`; replicated when no dimension divides or the leaf has
                fewer than `min_fsdp_size` elements (config.fsdp_min_size).

Leaves matching no rule are replicated; scalars are always replicated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

FSDP_AXIS = "fsdp"
# Leaves smaller than this stay replicated under "fsdp": splitting them saves no memory worth
# the extra collectives.
MIN_FSDP_SIZE = 2**12


def make_mesh(axes: Sequence[tuple[str, int]], devices: Sequence[Any] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with the named axes; one size may be -1."""
  devices = list(jax.devices() if devices is None else devices)
  names = [str(name) for name, _ in axes]
  sizes = [int(size) for _, size in axes]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {list(axes)}: at most one axis may have size -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh {list(axes)} does not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {list(axes)} has {math.prod(sizes)} slots for {len(devices)} devices")
  # jax.make_mesh orders devices for the physical topology (ICI rings on TPU, hosts on GPU).
  # Auto axes: jax >= 0.9 makes jax.make_mesh axes Explicit by default, which would turn every
  # sharding mismatch inside the models into a type error.
  auto = (jax.sharding.AxisType.Auto,) * len(names)
  return jax.make_mesh(tuple(sizes), tuple(names), axis_types=auto, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every mesh axis."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _path_name(path) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _fsdp_spec(shape: tuple[int, ...], axis_size: int, min_size: int) -> P:
  if axis_size == 1 or math.prod(shape) < min_size:
    return P()
  best = None
  for dim, size in enumerate(shape):
    if size % axis_size == 0 and (best is None or size >= shape[best]):
      best = dim
  if best is None:
    return P()
  spec = [None] * len(shape)
  spec[best] = FSDP_AXIS
  return P(*spec)


def leaf_spec(
  name: str,
  shape: tuple[int, ...],
  mesh: Mesh,
  rules: Sequence[tuple[str, str]],
  min_fsdp_size: int = MIN_FSDP_SIZE,
) -> P:
  """The PartitionSpec of one leaf called `name` (see the module docstring)."""
  if not shape:
    return P()
  for pattern, rule in rules:
    if re.search(pattern, name):
      if rule == "replicate":
        return P()
      if rule == "fsdp":
        if FSDP_AXIS not in mesh.shape:
          raise ValueError(
            f"sharding rule 'fsdp' for {name!r} needs a mesh axis named "
            f"{FSDP_AXIS!r}; mesh axes are {tuple(mesh.axis_names)}"
          )
        return _fsdp_spec(tuple(shape), mesh.shape[FSDP_AXIS], min_fsdp_size)
      raise ValueError(
        f"unknown sharding rule {rule!r} for pattern {pattern!r}; use 'replicate' or 'fsdp'"
      )
  return P()


def tree_shardings(
  tree: Any, mesh: Mesh, rules: Sequence[tuple[str, str]], min_fsdp_size: int = MIN_FSDP_SIZE
) -> Any:
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs), same structure."""

  def one(path, leaf):
    spec = leaf_spec(_path_name(path), tuple(leaf.shape), mesh, rules, min_fsdp_size)
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(one, tree)
