"""DASS checkpoint conversion: PyTorch state dicts (every accepted layout) -> config + params.

Checked here:
  * the PyTorch twin (torch_reference/dass_torch.py) loads the golden state dict strictly,
    with the original key order, and reproduces the golden logits to <= 1e-6 abs;
  * the golden state dict converts to the inferred config and, run through the Flax DASS, gives
    the golden logits to <= 1e-5 relative; transforms (conv OIHW->HWIO, linear .T) spot-checked;
  * the real DASS-small / -medium key manifests convert (random values) with the manifests'
    parameter counts and the model runs on them (jax.eval_shape);
  * missing / unexpected / mis-shaped keys, pickled objects and non-tensor entries are
    ConversionErrors naming the key (or file);
  * `.pth` with `module.v.`, `.safetensors` with `v.`, bare VSSM keys in {"state_dict": …},
    `module.` VSSM keys in {"model": …} and the Hugging Face hub layout (folder or file) all give
    identical params;
  * the CLI refuses an existing output folder without touching it, and reports errors with exit 1;
  * VMamba ImageNet -> DASS init: first conv summed over RGB, new head of the requested size.
"""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dass_checkpoints import SMALL, hf_state_dict, small_state_dict

from convert_torch.__main__ import main as cli_main
from convert_torch.dass import convert_file, torch_to_flax
from convert_torch.io import ConversionError
from dass_jax.checkpoint import load_model
from dass_jax.models import DASS, DassConfig
from torch_reference.dass_torch import (
  DassTorch,
  dataparallel_state_dict,
  load_dataparallel_state_dict,
  perturb_,
)


@pytest.fixture(scope="module")
def golden(shared_fixtures):
  data = np.load(shared_fixtures / "dass_tiny_golden.npz")
  config = json.loads((shared_fixtures / "dass_tiny_config.json").read_text())
  state_dict = {k: data[k] for k in data.files if k.startswith("module.")}
  return state_dict, data["x"], data["logits"], [e["key"] for e in config["state_dict"]]


@pytest.fixture(scope="module")
def small_sd() -> dict[str, np.ndarray]:
  """A perturbed 4-stage twin (dims 16..128, 7 classes) as a 'module.v.' numpy state dict."""
  return small_state_dict()


def test_torch_twin_reproduces_golden_logits(golden):
  state_dict, x, logits, key_order = golden
  model = DassTorch(num_classes=10, depths=(1, 1, 2, 1)).eval()
  assert list(dataparallel_state_dict(model)) == key_order
  load_dataparallel_state_dict(model, state_dict)
  with torch.no_grad():
    out = model(torch.from_numpy(x)).numpy()
  assert np.abs(out - logits).max() <= 1e-6


def test_golden_converts_to_matching_flax_logits(golden):
  state_dict, x, logits, _ = golden
  config, params = torch_to_flax(state_dict)
  assert config == DassConfig(
    num_classes=10,
    depths=(1, 1, 2, 1),
    dims=(96, 192, 384, 768),
    d_state=1,
    ssm_ratio=1.0,
    dt_rank=0,
    mlp_ratio=4.0,
  )
  conv = state_dict["module.v.layers.2.downsample.1.weight"]
  np.testing.assert_array_equal(
    params["layers_2"]["downsample"]["conv"]["kernel"], conv.transpose(2, 3, 1, 0)
  )
  in_proj = state_dict["module.v.layers.1.blocks.0.op.in_proj.weight"]
  np.testing.assert_array_equal(
    params["layers_1"]["blocks_0"]["op"]["in_proj"]["kernel"], in_proj.T
  )
  out = jax.jit(lambda p, v: DASS(config).apply({"params": p}, v))(params, x)
  rel = np.abs(np.asarray(out) - logits).max() / np.abs(logits).max()
  assert rel <= 1e-5


@pytest.mark.parametrize("manifest", ["dass_small_keys.json", "dass_medium_keys.json"])
def test_real_manifests_convert_with_exact_param_count(shared_fixtures, manifest):
  info = json.loads((shared_fixtures / manifest).read_text())
  rng = np.random.default_rng(0)
  state_dict = {e["key"]: rng.standard_normal(e["shape"], np.float32) * 0.02 for e in info["keys"]}
  config, params = torch_to_flax(state_dict)
  assert config.depths == tuple(info["vssm_kwargs"]["depths"])
  assert config.dims == tuple(info["dims"])
  assert config.num_classes == 527
  assert sum(np.size(v) for v in jax.tree_util.tree_leaves(params)) == info["total_params"]
  out = jax.eval_shape(lambda p: DASS(config).apply({"params": p}, jnp.zeros((1, 64, 128))), params)
  assert out.shape == (1, 527)


def _conversion_error(state_dict) -> str:
  with pytest.raises(ConversionError) as info:
    torch_to_flax(state_dict)
  return str(info.value)


def test_missing_key_is_named(small_sd):
  key = "module.v.layers.2.blocks.0.op.Ds"
  message = _conversion_error({k: v for k, v in small_sd.items() if k != key})
  assert "1 missing" in message and key in message


def test_unexpected_key_is_named(small_sd):
  key = "module.v.layers.0.blocks.0.op.z_proj.weight"
  message = _conversion_error({**small_sd, key: np.zeros((4, 4), np.float32)})
  assert "1 unexpected" in message and key in message


def test_misshaped_key_is_named(small_sd):
  key = "module.v.layers.1.blocks.0.op.x_proj_weight"
  message = _conversion_error({**small_sd, key: small_sd[key][:, :-1]})
  assert "mis-shaped" in message and key in message


def test_three_channel_first_conv_points_to_vmamba(small_sd):
  key = "module.v.patch_embed.0.weight"
  message = _conversion_error({**small_sd, key: np.repeat(small_sd[key], 3, axis=1)})
  assert key in message and "vmamba" in message


class NotATensor:
  """A class torch.load(weights_only=True) must refuse to unpickle."""


def test_pickled_object_is_refused(tmp_path):
  path = tmp_path / "evil.pth"
  torch.save({"module.v.patch_embed.0.weight": NotATensor()}, path)
  with pytest.raises(ConversionError) as info:
    convert_file(path)
  assert "weights_only" in str(info.value) and str(path) in str(info.value)


def test_non_tensor_entry_is_named(tmp_path, small_sd):
  path = tmp_path / "mixed.pth"
  torch.save({**{k: torch.from_numpy(v) for k, v in small_sd.items()}, "module.v.epoch": 3}, path)
  with pytest.raises(ConversionError, match=r"module\.v\.epoch"):
    convert_file(path)


def test_all_file_layouts_give_identical_params(tmp_path, small_sd):
  from safetensors.numpy import save_file

  _, reference = torch_to_flax(small_sd)
  dp = tmp_path / "dataparallel.pth"
  torch.save({k: torch.from_numpy(v) for k, v in small_sd.items()}, dp)
  st = tmp_path / "dass.safetensors"
  save_file({k[len("module.") :]: v for k, v in small_sd.items()}, str(st))
  bare = tmp_path / "vssm.pth"
  torch.save(
    {"state_dict": {k[len("module.v.") :]: torch.from_numpy(v) for k, v in small_sd.items()}}, bare
  )
  dp_vssm = tmp_path / "vssm_dataparallel.pt"
  torch.save(
    {
      "model": {k.replace("module.v.", "module."): torch.from_numpy(v) for k, v in small_sd.items()}
    },
    dp_vssm,
  )
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  save_file(hf_state_dict(small_sd), str(hf_dir / "model.safetensors"))
  (hf_dir / "config.json").write_text(
    json.dumps(
      {
        "model_type": "dass",
        "depths": list(SMALL["depths"]),
        "dims": list(SMALL["dims"]),
        "num_classes": SMALL["num_classes"],
      }
    )
  )
  for path in (dp, st, bare, dp_vssm, hf_dir, hf_dir / "model.safetensors"):
    config, params = convert_file(path)
    assert config.depths == SMALL["depths"] and config.num_classes == SMALL["num_classes"]
    chex.assert_trees_all_equal(params, reference)


def test_hf_folder_config_must_agree_with_weights(tmp_path, small_sd):
  from safetensors.numpy import save_file

  save_file(hf_state_dict(small_sd), str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps({"depths": [2, 2, 8, 2], "num_classes": 7}))
  with pytest.raises(ConversionError, match="depths"):
    convert_file(tmp_path)


def test_hf_unexpected_key_keeps_its_hub_name(tmp_path, small_sd):
  from safetensors.numpy import save_file

  hf = {**hf_state_dict(small_sd), "dass.pooler.weight": np.zeros(3, np.float32)}
  save_file(hf, str(tmp_path / "model.safetensors"))
  with pytest.raises(ConversionError, match=r"dass\.pooler\.weight"):
    convert_file(tmp_path / "model.safetensors")


def test_cli_refuses_existing_output_untouched(tmp_path, small_sd, capsys):
  path = tmp_path / "dass.pth"
  torch.save({k: torch.from_numpy(v) for k, v in small_sd.items()}, path)
  out = tmp_path / "out"
  out.mkdir()
  (out / "config.json").write_text("keep me")
  assert cli_main(["dass", str(path), str(out)]) == 1
  assert "already holds a converted checkpoint" in capsys.readouterr().err
  assert sorted(p.name for p in out.iterdir()) == ["config.json"]
  assert (out / "config.json").read_text() == "keep me"


def test_cli_reports_bad_checkpoint_without_traceback(tmp_path, small_sd, capsys):
  key = "module.v.classifier.norm.bias"
  path = tmp_path / "broken.pth"
  torch.save({k: torch.from_numpy(v) for k, v in small_sd.items() if k != key}, path)
  assert cli_main(["dass", str(path), str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error:") and key in err and "Traceback" not in err
  assert not (tmp_path / "out").exists()
  assert cli_main(["dass", str(tmp_path / "nope.pth"), str(tmp_path / "out")]) == 1
  assert "not found" in capsys.readouterr().err


def test_vmamba_imagenet_becomes_dass_init(tmp_path, capsys):
  torch.manual_seed(3)
  vssm = (
    DassTorch(num_classes=1000, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), in_chans=3).eval().v
  )
  perturb_(vssm, seed=4)
  sd = {k: v.detach().clone() for k, v in vssm.state_dict().items()}
  assert sd["patch_embed.0.weight"].shape == (8, 3, 3, 3)
  path = tmp_path / "vssm_imagenet.pth"
  torch.save({"model": sd}, path)

  with pytest.raises(ConversionError, match="vmamba"):
    convert_file(path)
  out = tmp_path / "init"
  assert cli_main(["vmamba", str(path), str(out), "--num-classes", "5"]) == 0
  _, params, config = load_model(out)
  assert config.num_classes == 5 and config.depths == (1, 1, 1, 1)
  summed = sd["patch_embed.0.weight"].numpy().sum(axis=1, keepdims=True)
  np.testing.assert_allclose(
    params["patch_embed"]["conv0"]["kernel"], summed.transpose(2, 3, 1, 0), rtol=1e-6, atol=1e-7
  )
  np.testing.assert_array_equal(
    params["patch_embed"]["conv0"]["bias"], sd["patch_embed.0.bias"].numpy()
  )
  np.testing.assert_array_equal(
    params["layers_3"]["blocks_0"]["op"]["A_logs"], sd["layers.3.blocks.0.op.A_logs"].numpy()
  )
  head = np.asarray(params["classifier"]["head"]["kernel"])
  assert head.shape == (128, 5)
  assert 0 < np.abs(head).max() <= 128**-0.5 and np.std(head) > 0.01
  meta = json.loads((out / "config.json").read_text())
  assert meta["source_format"].startswith("vmamba-imagenet")
