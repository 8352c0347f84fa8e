"""Small DASS checkpoints for the converter tests, in the layouts the converters read.

sd = small_state_dict()          # 'module.v.…' numpy arrays of a perturbed 4-stage twin
hub = hf_state_dict(sd)          # the same tensors under the Hugging Face hub DASS names
"""

import numpy as np
import torch

from torch_reference.dass_torch import DassTorch, dataparallel_state_dict, perturb_

SMALL = dict(num_classes=7, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))


def small_state_dict() -> dict[str, np.ndarray]:
  """A perturbed DassTorch(**SMALL) (dims 16..128, 7 classes) as a 'module.v.' numpy dict."""
  torch.manual_seed(0)
  model = DassTorch(**SMALL).eval()
  perturb_(model, seed=1)
  return {k: v.detach().numpy().copy() for k, v in dataparallel_state_dict(model).items()}


def hf_state_dict(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The hub layout, written out key by key from the upstream conversion's renames."""
  patch = {"0": "0", "2": "1", "5": "3", "7": "4"}
  downsample = {"1": "down", "3": "norm"}
  out = {}
  for key, value in sd.items():
    name = key[len("module.v.") :]
    parts = name.split(".")
    if parts[0] == "patch_embed":
      name = f"dass.patch_embeddings.projection.{patch[parts[1]]}.{parts[2]}"
    elif parts[0] == "classifier" and parts[1] == "head":
      name = f"head.{parts[2]}"
    elif parts[0] == "classifier":
      name = f"dass.norm.{parts[2]}"
    elif parts[2] == "downsample":
      name = f"dass.layers.{parts[1]}.downsample.{downsample[parts[3]]}.{parts[4]}"
    elif parts[-1] in ("x_proj_weight", "dt_projs_weight"):
      name = "dass." + ".".join(parts[:-1]) + "." + parts[-1].replace("_weight", ".weight")
      value = value.reshape(-1, value.shape[-1])
    else:
      name = "dass." + name
    out[name] = np.ascontiguousarray(value)
  return out
