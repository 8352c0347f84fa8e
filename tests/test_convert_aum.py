"""AuM conversion: the released key set converts to the published sizes, the CLI round trip matches
the PyTorch twin, and a checkpoint that does not fit is refused with every offending key."""

import math

import jax
import numpy as np
import pytest
from numerics import assert_close

torch = pytest.importorskip("torch")

from convert_torch.aum import main, torch_to_flax
from convert_torch.io import ConversionError
from convert_torch.params import count_params
from dass_jax import load_model
from dass_jax.models import AumConfig
from torch_reference.aum_torch import AudioMambaTwin


def released_shapes(dim, depth, bimamba_type, classes=527, patches=512, patch=16):
  """Key -> shape of a released AuM state dict, written out from the AuM sources (not from the
  converter): `torch.save(AudioMamba.state_dict())` with d_state 16, d_conv 4, expand 2."""
  e, rank, s = 2 * dim, math.ceil(dim / 16), 16
  shapes = {
    "cls_token": (1, 1, dim),
    "head.weight": (classes, dim),
    "head.bias": (classes,),
    "norm_f.weight": (dim,),
    "patch_embed.proj.weight": (dim, 1, patch, patch),
    "patch_embed.proj.bias": (dim,),
    "pos_embed.pos_embed": (1, 1 + patches, dim),
  }
  branch = {
    "conv1d.weight": (e, 1, 4),
    "conv1d.bias": (e,),
    "x_proj.weight": (rank + 2 * s, e),
    "dt_proj.weight": (e, rank),
    "dt_proj.bias": (e,),
    "D": (e,),
  }
  for i in range(depth):
    layer = f"layers.{i}."
    shapes[layer + "norm.weight"] = (dim,)
    mixer = layer + "mixer."
    shapes[mixer + "in_proj.weight"] = (2 * e, dim)
    shapes[mixer + "out_proj.weight"] = (dim, e)
    shapes[mixer + "A_log"] = (e, s)
    shapes[mixer + "A_b_log"] = (e, s)
    for name, shape in branch.items():
      shapes[mixer + name] = shape
      if bimamba_type == "v2":
        stem, _, leaf = name.partition(".")
        shapes[mixer + stem + "_b" + ("." + leaf if leaf else "")] = shape
  return shapes


def _zeros(shapes, prefix=""):
  """A state dict of read-only zero views (nothing of the full-size models is allocated)."""
  return {prefix + k: np.broadcast_to(np.float32(0), v) for k, v in shapes.items()}


@pytest.mark.parametrize("bimamba_type", ["v1", "v2"])
def test_released_key_set_is_the_twins(bimamba_type):
  twin = AudioMambaTwin(
    num_classes=7, embed_dim=48, depth=2, bimamba_type=bimamba_type, spectrogram_size=(32, 48)
  )
  got = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
  assert got == released_shapes(48, 2, bimamba_type, classes=7, patches=6)


@pytest.mark.parametrize(
  ("preset", "bimamba_type", "dim", "count", "millions"),
  [("small", "v2", 384, 25_539_215, 25.54), ("base", "v1", 768, 92_107_535, 92.11)],
)
def test_released_sizes_convert_to_published_param_counts(
  preset, bimamba_type, dim, count, millions
):
  sd = _zeros(released_shapes(dim, 24, bimamba_type), prefix="module.")
  config, params = torch_to_flax(sd)
  assert config == getattr(AumConfig, preset)()  # 128 x 1024 input, 8 x 64 patches, 527 classes
  assert count_params(params) == count
  assert round(count / 1e6, 2) == millions


def test_mismatching_checkpoint_is_refused_with_every_key():
  shapes = released_shapes(32, 2, "v2", classes=3, patches=16)
  sd = _zeros(shapes)
  del sd["layers.1.mixer.D_b"]
  sd["layers.1.mixer.gamma"] = np.zeros(32, np.float32)
  sd["layers.0.mixer.x_proj_b.weight"] = np.zeros((10, 64), np.float32)
  with pytest.raises(ConversionError) as err:
    torch_to_flax(sd)
  message = str(err.value)
  for expected in (
    "1 missing",
    "layers.1.mixer.D_b",
    "1 unexpected",
    "layers.1.mixer.gamma",
    "1 mis-shaped",
    "layers.0.mixer.x_proj_b.weight: file (10, 64) vs model (34, 64)",
  ):
    assert expected in message


def test_unsupported_or_foreign_checkpoints_are_refused():
  shapes = released_shapes(32, 1, "v1", classes=3, patches=16)
  unidirectional = _zeros({k: v for k, v in shapes.items() if not k.endswith("A_b_log")})
  with pytest.raises(ConversionError, match="Fo-Fo"):
    torch_to_flax(unidirectional)
  with pytest.raises(ConversionError, match="not an AuM checkpoint"):
    torch_to_flax({"v.patch_embed.proj.weight": np.zeros((8, 1, 16, 16), np.float32)})
  with pytest.raises(ConversionError, match="--num-mel-bins"):
    torch_to_flax(_zeros(shapes), num_mel_bins=48)  # 3 frequency patches do not divide 16 rows
  with pytest.raises(ConversionError, match="--max-length 100"):
    torch_to_flax(_zeros(shapes), max_length=100)  # 6 time patches, the file has 8


def test_cli_round_trip_matches_the_twin(tmp_path, capsys):
  torch.manual_seed(0)
  twin = AudioMambaTwin(
    num_classes=4, embed_dim=32, depth=2, bimamba_type="v1", spectrogram_size=(32, 80)
  ).eval()
  src = tmp_path / "aum.pth"
  torch.save({"module." + k: v for k, v in twin.state_dict().items()}, src)
  out = tmp_path / "converted"
  assert main([str(src), str(out), "--num-mel-bins", "32"]) == 0
  assert "AuM v1 D=32 depth=2 classes=4, 2 x 5 patches" in capsys.readouterr().out
  model, params, config = load_model(out)
  assert (config.max_length, config.num_mel_bins, config.bimamba_type) == (80, 32, "v1")
  x = np.random.default_rng(0).standard_normal((2, 80, 32), dtype=np.float32)
  logits = jax.jit(model.apply)({"params": params}, x)
  assert_close(logits, twin(torch.from_numpy(x)).detach().numpy(), name="converted logits")
  assert main([str(src), str(out), "--num-mel-bins", "32"]) == 1  # never overwrites
  assert "already holds a converted checkpoint" in capsys.readouterr().err
