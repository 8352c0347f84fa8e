"""ImageNet VMamba (VSSM) checkpoint -> DASS initialisation, as the original DASS.__init__ does.

    python -m convert_torch vmamba vssm1_tiny_0230s_ckpt_epoch_264.pth converted/dass_init \\
        --num-classes 527
    python -m convert_torch vmamba vmamba-tiny-s1l8 converted/dass_init --num-classes 527

The input may be a local file, an https:// URL, `hf://OWNER/NAME[@REVISION]/FILE` or a published
name (`convert_torch.sources`); remote ones are fetched into the user's cache and verified first.

The DASS recipe (`imagenet_pretrain=True` in Saurabhbhati/DASS `src/models/ast_models.py`): load
the VSSM weights (`{"model": state_dict}`, bare VSSM keys) strictly, then
  * replace `patch_embed.0` (Conv2d(3, 48, 3, s2, p1)) by a 1-channel conv whose weight is the
    ImageNet weight summed over the RGB input channels, (48, 3, 3, 3) -> (48, 1, 3, 3), keeping
    the bias;
  * replace `classifier.head` by a freshly initialised Linear(768, num_classes), PyTorch's default
    init: weight and bias U(-1/sqrt(768), 1/sqrt(768)) (drawn here with numpy, `--seed`).
VMamba-tiny (depths 2,2,8,2) gives a DASS-small init and VMamba-small (2,2,20,2) a DASS-medium one.
A 1-channel DASS checkpoint is accepted too (the sum is then the identity): that re-heads a
trained DASS for a new label set, like the original's `audioset_pretrain=True` branch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert_torch import dass
from convert_torch.converter import Conversion, Converter, Option
from convert_torch.io import ConversionError, load_state_dict

FIRST_CONV = "patch_embed.0.weight"
HEAD = "classifier.head"


def vmamba_to_dass_state_dict(
  state_dict: dict[str, np.ndarray], num_classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """Applies the DASS init recipe to a VSSM state dict (any accepted key prefix)."""
  if num_classes < 1:
    raise ConversionError(f"--num-classes must be positive, got {num_classes}")
  prefix = dass.split_prefix(state_dict)
  head_w, head_b = f"{prefix}{HEAD}.weight", f"{prefix}{HEAD}.bias"
  for key in (head_w, head_b):
    if key not in state_dict:
      raise ConversionError(f"VMamba checkpoint: key '{key}' is missing")
  first = np.asarray(state_dict[prefix + FIRST_CONV])
  if first.ndim != 4 or np.ndim(state_dict[head_w]) != 2:
    raise ConversionError(
      f"VMamba checkpoint: '{prefix}{FIRST_CONV}' {first.shape} should be (out, in, 3, 3) and "
      f"'{head_w}' {np.shape(state_dict[head_w])} should be (classes, features)"
    )
  in_features = state_dict[head_w].shape[1]
  bound = 1.0 / np.sqrt(in_features)
  rng = np.random.default_rng(seed)
  out = dict(state_dict)
  out[prefix + FIRST_CONV] = first.sum(axis=1, keepdims=True, dtype=np.float32)
  out[head_w] = rng.uniform(-bound, bound, (num_classes, in_features)).astype(np.float32)
  out[head_b] = rng.uniform(-bound, bound, (num_classes,)).astype(np.float32)
  return out


def convert_file(path: str | Path, num_classes: int, seed: int = 0):
  """Reads an ImageNet VMamba checkpoint and returns the DASS init as (DassConfig, params)."""
  state_dict = vmamba_to_dass_state_dict(load_state_dict(path), num_classes, seed)
  return dass.torch_to_flax(state_dict, num_classes)


def read(path: str | Path, num_classes: int, seed: int | None = None) -> Conversion:
  """The DASS initialisation of a local ImageNet VMamba checkpoint (head drawn with `seed`)."""
  seed = seed or 0
  config, params = convert_file(path, num_classes, seed)
  return Conversion(
    config,
    params,
    source_format=f"vmamba-imagenet (head seed {seed})",
    layout="VMamba -> DASS init",
    details=dass.describe(config),
  )


CONVERTER = Converter(
  name="vmamba",
  version=1,
  read=read,
  description="Turn an ImageNet VMamba checkpoint into a DASS initialisation (first conv "
  "summed over RGB, new classifier head) saved as a dass_jax checkpoint folder.",
  input_help="VMamba checkpoint ({'model': state_dict} or a state dict): a file, an https:// URL, "
  "hf://OWNER/NAME[@REVISION]/FILE or a published name",
  options=(
    Option("num_classes", "classes of the new head (527 for AudioSet)", required=True),
    Option("seed", "seed of the new head's init", default=0),
  ),
  hub_files=(),
)
convert_to = CONVERTER.convert_to
main = CONVERTER.main
