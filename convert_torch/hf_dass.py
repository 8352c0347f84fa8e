"""The Hugging Face hub DASS format -> the original DASS key layout.

The hub models (`saurabhati/DASS_small_AudioSet_48.9`, `saurabhati/DASS_medium_AudioSet_50.2`,
…) hold `model.safetensors` and `config.json` written by `save_pretrained` of the remote-code
`DASSForAudioClassification` (`modeling_dass.py`, same module tree as Saurabhbhati/transformers-DASS
`src/transformers/models/dass/`). Its keys relate to the original `module.v.` layout as follows
(K = 4 scan directions, R = dt rank, N = d_state, d = channels of the stage):

| Hugging Face key                                | original DASS key (after `module.v.`)    |
|-------------------------------------------------|------------------------------------------|
| dass.patch_embeddings.projection.{0,1,3,4}.*    | patch_embed.{0,2,5,7}.*                  |
| dass.layers.i.blocks.j.op.x_proj.weight         | layers.i.blocks.j.op.x_proj_weight       |
|   (K*(R+2N), d)                                 |   (K, R+2N, d)                           |
| dass.layers.i.blocks.j.op.dt_projs.weight       | layers.i.blocks.j.op.dt_projs_weight     |
|   (K*d, R)                                      |   (K, d, R)                              |
| dass.layers.i.blocks.j.<everything else>        | layers.i.blocks.j.<same name>            |
| dass.layers.i.downsample.down.*                 | layers.i.downsample.1.*                  |
| dass.layers.i.downsample.norm.*                 | layers.i.downsample.3.*                  |
| dass.norm.*                                     | classifier.norm.*                        |
| head.*                                          | classifier.head.*                        |

The two 2-D weights are row-major views of the original 3-D tensors (the hub model's grouped 1x1
convs load them with `view_as`), so a reshape restores them exactly. The architecture is still
inferred from shapes; the folder's `config.json`, when present, must agree with it (checked by
`convert_torch.dass.read_checkpoint`, which reads the folder with `convert_torch.io.read_weights`).
"""

from __future__ import annotations

import re

import numpy as np

from convert_torch.io import ConversionError
from pallas_kernels.cross_scan import K_DIRECTIONS

HF_ANCHOR = "dass.patch_embeddings.projection.0.weight"
_RENAMES = (
  (re.compile(r"^dass\.patch_embeddings\.projection\.([0134])\.(weight|bias)$"), None),
  (
    re.compile(r"^dass\.layers\.(\d+)\.blocks\.(\d+)\.op\.x_proj\.weight$"),
    r"layers.\1.blocks.\2.op.x_proj_weight",
  ),
  (
    re.compile(r"^dass\.layers\.(\d+)\.blocks\.(\d+)\.op\.dt_projs\.weight$"),
    r"layers.\1.blocks.\2.op.dt_projs_weight",
  ),
  (re.compile(r"^dass\.layers\.(\d+)\.blocks\.(.+)$"), r"layers.\1.blocks.\2"),
  (
    re.compile(r"^dass\.layers\.(\d+)\.downsample\.down\.(weight|bias)$"),
    r"layers.\1.downsample.1.\2",
  ),
  (
    re.compile(r"^dass\.layers\.(\d+)\.downsample\.norm\.(weight|bias)$"),
    r"layers.\1.downsample.3.\2",
  ),
  (re.compile(r"^dass\.norm\.(weight|bias)$"), r"classifier.norm.\1"),
  (re.compile(r"^head\.(weight|bias)$"), r"classifier.head.\1"),
)
_PATCH_EMBED_INDEX = {"0": "0", "1": "2", "3": "5", "4": "7"}


def is_hf_layout(state_dict: dict[str, np.ndarray]) -> bool:
  return HF_ANCHOR in state_dict


def _rename(key: str) -> str:
  """The original DASS name of a hub key; unknown keys come back unchanged (reported later)."""
  for pattern, template in _RENAMES:
    match = pattern.match(key)
    if match and template is None:
      return f"patch_embed.{_PATCH_EMBED_INDEX[match.group(1)]}.{match.group(2)}"
    if match:
      return match.expand(template)
  return key


def _unflatten(key: str, value: np.ndarray) -> np.ndarray:
  """(K*a, b) -> (K, a, b) for the grouped x_proj / dt_projs weights; other arrays unchanged."""
  if (
    key.endswith(("op.x_proj_weight", "op.dt_projs_weight"))
    and value.ndim == 2
    and value.shape[0] % K_DIRECTIONS == 0
  ):
    return value.reshape(K_DIRECTIONS, value.shape[0] // K_DIRECTIONS, value.shape[1])
  return value


def hf_to_dass(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Hub DASS state dict -> bare original DASS keys (VSSM names), ready for `torch_to_flax`."""
  out: dict[str, np.ndarray] = {}
  for key, value in state_dict.items():
    name = _rename(key)
    if name in out:
      raise ConversionError(
        f"Hugging Face DASS checkpoint: '{key}' and another key both map to '{name}'"
      )
    out[name] = _unflatten(name, value)
  return out
