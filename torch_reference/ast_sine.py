"""Torch twin of the DASS authors' sinusoidal AST position embedding (`get_sin_pos` in their
`src/models/ast_models.py`), written from reading it: float32 throughout, as torch runs it."""

from __future__ import annotations

import math

import torch


def get_sin_pos(n_position: int, d_hid: int, position_rate: float = 1e4) -> torch.Tensor:
  """(n_position, d_hid) float32: column 2k = sin(n w_k), column 2k + 1 = cos(n w_k),
  w_k = exp(2k * -(ln(position_rate) / d_hid)), with torch's int64 * float -> float32 product."""
  pos = torch.arange(0, n_position).unsqueeze(1).float()
  div_term = torch.exp(torch.arange(0, d_hid, 2) * -(math.log(position_rate) / d_hid)).float()
  pos_emb = torch.zeros(n_position, d_hid)
  pos_emb[:, 0::2] = torch.sin(pos * div_term)
  pos_emb[:, 1::2] = torch.cos(pos * div_term)
  return pos_emb
