"""Param-mapping tables: each converter states its checkpoint as rows `Flax path <- torch keys`.

    table = [
      rule("cls_token", "cls_token", (1, 1, D)),
      *conv_rules("patch_embed", "patch_embed.proj", (D, 1, P, P)),
      *dense_rules("head", "head", C, D),
    ]
    params = params_from_table(table, state_dict, config, "AuM checkpoint", prefix="module.")

A row (`Rule`) names the Flax param ('/'-joined path), the torch keys it is made from with their
torch shapes, and the transform from those arrays (float32, in the order of the keys) to the Flax
array: `params.conv`, `params.linear`, `params.copy`, or a converter's own (AST stacks q, k, v
into one kernel; Dasheng reshapes its position embeddings). A row with target None reads keys
that hold no param (buffers a converter checks itself, counters).

`params_from_table` is the one path every converter's tensors take:
  1. the keys: every key of the table (under `prefix`) must be in the state dict with its shape,
     and every key of the state dict must be in the table or under one of `dropped` (keys a
     checkpoint may carry that the model does not use, named by the converter); otherwise a
     ConversionError lists every missing, unexpected and mis-shaped key (`io.check_keys`);
  2. the transforms, into a nested params tree of float32 arrays;
  3. the tree against the model's own abstract init (`params.check_against_model`): a
     converter/model mismatch is reported, not saved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from convert_torch.io import ConversionError, check_keys
from convert_torch.params import check_against_model, conv, copy, linear
from dass_jax.models import ModelConfig

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
  """One row of a mapping table.

  Attributes:
    target: '/'-joined Flax param path, or None for keys that are read but give no param.
    sources: the torch keys (without the checkpoint's prefix) the param is made from.
    shapes: their torch shapes, in the same order.
    transform: f(*arrays) -> the Flax array; the arrays are float32, in the order of `sources`.
  """

  target: str | None
  sources: tuple[str, ...]
  shapes: tuple[Shape, ...]
  transform: Callable[..., np.ndarray] = copy


def rule(target: str | None, source: str, shape: Shape, transform=copy) -> Rule:
  """A row made from one torch key."""
  return Rule(target, (source,), (tuple(shape),), transform)


def dense_rules(target: str, source: str, out_dim: int, in_dim: int, bias: bool = True):
  """torch Linear `source.{weight (out, in), bias}` -> `target/{kernel (in, out), bias}`."""
  rows = [rule(f"{target}/kernel", f"{source}.weight", (out_dim, in_dim), linear)]
  return rows + ([rule(f"{target}/bias", f"{source}.bias", (out_dim,))] if bias else [])


def norm_rules(target: str, source: str, dim: int) -> list[Rule]:
  """torch LayerNorm (or affine BatchNorm) `source.{weight, bias}` -> `target/{scale, bias}`."""
  return [
    rule(f"{target}/scale", f"{source}.weight", (dim,)),
    rule(f"{target}/bias", f"{source}.bias", (dim,)),
  ]


def conv_rules(target: str, source: str, shape: Shape, bias: bool = True) -> list[Rule]:
  """torch Conv `source.{weight (O, I, *k), bias}` -> `target/{kernel (*k, I, O), bias}`."""
  rows = [rule(f"{target}/kernel", f"{source}.weight", shape, conv)]
  return rows + ([rule(f"{target}/bias", f"{source}.bias", (shape[0],))] if bias else [])


def expected_shapes(table: Iterable[Rule], prefix: str = "") -> dict[str, Shape]:
  """{prefix + torch key: torch shape} of every key a table reads."""
  return {
    prefix + key: shape for row in table for key, shape in zip(row.sources, row.shapes, strict=True)
  }


def apply_table(
  table: Iterable[Rule],
  state_dict: Mapping[str, Any],
  what: str,
  prefix: str = "",
  dropped: tuple[str, ...] = (),
) -> dict[str, Any]:
  """The nested Flax params a table makes from `state_dict` (steps 1 and 2 of the module doc).

  Args:
    table: the rows.
    state_dict: torch key -> array (numpy or anything np.asarray takes), keys with `prefix`.
    what: names the checkpoint in error messages (e.g. "AuM checkpoint (keys 'module.…')").
    prefix: where the table's keys sit in `state_dict` ('module.', 'v.', ...).
    dropped: key prefixes (with `prefix`) of tensors the checkpoint may carry and the model does
      not use; they are ignored.

  Raises:
    ConversionError: missing, unexpected or mis-shaped keys, all listed.
  """
  table = list(table)
  kept = {k: v for k, v in state_dict.items() if not (dropped and k.startswith(dropped))}
  check_keys(expected_shapes(table, prefix), kept, what)
  params: dict[str, Any] = {}
  for row in table:
    if row.target is None:
      continue
    arrays = [np.asarray(kept[prefix + key], dtype=np.float32) for key in row.sources]
    *parents, leaf = row.target.split("/")
    node = params
    for part in parents:
      node = node.setdefault(part, {})
    if leaf in node:
      raise ValueError(f"mapping table writes {row.target} twice")
    node[leaf] = np.ascontiguousarray(row.transform(*arrays), dtype=np.float32)
  return params


def params_from_table(
  table: Iterable[Rule],
  state_dict: Mapping[str, Any],
  config: ModelConfig,
  what: str,
  prefix: str = "",
  dropped: tuple[str, ...] = (),
) -> dict[str, Any]:
  """`apply_table`, then the tree checked against `config`'s model (the module doc's 3 steps)."""
  params = apply_table(table, state_dict, what, prefix, dropped)
  check_against_model(config, params)
  return params


def shape_of(state_dict: Mapping[str, Any], key: str, ndim: int | None, what: str) -> Shape:
  """The shape of a key an architecture is read from; it must exist (and have rank `ndim`).

  `what` names the architecture in the message ("cannot infer the {what} architecture: ...").
  """
  if key not in state_dict:
    sample = ", ".join(sorted(state_dict)[:5]) or "(no tensors)"
    raise ConversionError(
      f"cannot infer the {what} architecture: key {key!r} is missing (first keys: {sample})"
    )
  shape = tuple(np.shape(state_dict[key]))
  if ndim is not None and len(shape) != ndim:
    raise ConversionError(
      f"cannot infer the {what} architecture: {key!r} has shape {shape}, expected rank {ndim}"
    )
  return shape


def count_indexed(state_dict: Mapping[str, Any], template: str) -> int:
  """How many consecutive i = 0, 1, ... have `template.format(i=i)` as a key (blocks, layers)."""
  count = 0
  while template.format(i=count) in state_dict:
    count += 1
  return count
