"""`python -m convert_torch dasheng`: the three checkpoint layouts, refusals, parameter counts.

Synthetic files with the exact key names and shapes of Dasheng-base (random values; the front-end
buffers are torchaudio's, written by the dasheng package's own module under the torchaudio
double) are converted through the CLI: the encoder `.pt` ({"model": ..., "config": ...}), the
Hugging Face folder (`model.safetensors` + `config.json`, keys under `encoder.`, no front-end
buffers) and the AudioSet classifier state dict (flat, plus `outputlayer.*`). Their params must
be the same tree with the same values, 85,447,936 parameters for the encoders (85.45 M, counting
BatchNorm's 128 running statistics) and 85,854,735 with the classifier head (85.85 M). The numbers
a converted model computes are checked in test_dasheng_model.py and test_dasheng_predict.py.
"""

import contextlib
import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from torch_reference import dasheng_reference

try:
  dasheng_reference.import_dasheng()
except ImportError as e:
  pytest.skip(f"PyTorch reference unavailable: {e}", allow_module_level=True)

import jax

from convert_torch.__main__ import main as convert_main
from convert_torch.dasheng import LAYOUTS, convert
from convert_torch.params import count_params
from dass_jax import load_model
from dass_jax.models import DashengConfig

BASE_ENCODER_PARAMS = 85_447_936
BASE_CLASSIFIER_PARAMS = 85_854_735


@pytest.fixture(scope="module")
def base_files(tmp_path_factory):
  """The three layouts of one random Dasheng-base classifier, written as the releases are."""
  root = tmp_path_factory.mktemp("dasheng_base")
  torch.manual_seed(0)
  model = dasheng_reference.DashengClassifier(768, 12, 12, 527).eval()  # random (xavier) init
  torch.save(dasheng_reference.encoder_checkpoint(model), root / "dasheng_base.pt")
  hf = root / "dasheng-base"
  hf.mkdir()
  safetensors_torch.save_file(dasheng_reference.hf_state_dict(model), hf / "model.safetensors")
  (hf / "config.json").write_text(json.dumps({"model_type": "dasheng", "name": "dasheng-base"}))
  torch.save(dasheng_reference.classifier_state_dict(model), root / "dasheng_audioset.pt")
  return {"encoder": root / "dasheng_base.pt", "hf": hf, "classifier": root / "dasheng_audioset.pt"}


@pytest.fixture(scope="module")
def converted(base_files, tmp_path_factory):
  out = tmp_path_factory.mktemp("converted")
  results, printed = {}, io.StringIO()
  for layout in LAYOUTS:
    with contextlib.redirect_stdout(printed):
      assert convert_main(["dasheng", str(base_files[layout]), str(out / layout)]) == 0
    results[layout] = load_model(out / layout)
  results["printed"] = printed.getvalue()
  return results


def _flat(params):
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return {jax.tree_util.keystr(path): np.asarray(value) for path, value in leaves}


def test_three_layouts_convert_to_the_same_base(converted):
  encoder = _flat(converted["encoder"][1])
  for layout in LAYOUTS:
    _, params, config = converted[layout]
    heads = 527 if layout == "classifier" else 0
    assert config == DashengConfig.base(num_classes=heads)
    count = BASE_CLASSIFIER_PARAMS if heads else BASE_ENCODER_PARAMS
    assert count_params(params) == count
    flat = _flat(params)
    assert {k for k in flat if "head" not in k} == set(encoder)
    for key, value in encoder.items():
      np.testing.assert_array_equal(flat[key], value, err_msg=f"{layout} {key}")
  out = converted["printed"]
  assert "(classifier layout)" in out and "85,854,735 params" in out and "527 classes" in out
  assert "(hf layout)" in out and "encoder only" in out


def test_layout_mapping_of_base_keys(base_files, converted):
  sd = torch.load(base_files["classifier"], weights_only=True)
  params = converted["classifier"][1]
  np.testing.assert_array_equal(params["time_pos_embed"], sd["time_pos_embed"][0, :, 0, :].T)
  np.testing.assert_array_equal(params["freq_pos_embed"], sd["freq_pos_embed"][0, :, 0, 0])
  np.testing.assert_array_equal(
    params["patch_embed"]["kernel"], sd["patch_embed.proj.weight"].permute(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
    params["blocks_11"]["attn"]["qkv"]["kernel"], sd["blocks.11.attn.qkv.weight"].T
  )
  np.testing.assert_array_equal(params["init_bn"]["var"], sd["init_bn.1.running_var"])
  np.testing.assert_array_equal(params["head"]["kernel"], sd["outputlayer.1.weight"].T)
  np.testing.assert_array_equal(params["head_norm"]["scale"], sd["outputlayer.0.weight"])


def _small_classifier(tmp_path, name, edit=None):
  torch.manual_seed(2)
  model = dasheng_reference.randomize_(dasheng_reference.DashengClassifier(32, 2, 2, 4), 3)
  sd = dasheng_reference.classifier_state_dict(model)
  if edit:
    edit(sd)
  torch.save(sd, tmp_path / name)
  return tmp_path / name


def test_mismatching_checkpoint_is_refused_with_the_list(tmp_path, capsys):
  def edit(sd):
    del sd["blocks.1.mlp.fc2.bias"]
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(32)
    sd["norm.weight"] = torch.ones(33)

  path = _small_classifier(tmp_path, "bad.pt", edit)
  assert convert_main(["dasheng", str(path), str(tmp_path / "out"), "--num-heads", "2"]) == 1
  err = capsys.readouterr().err
  assert "does not fit the architecture" in err
  assert "1 missing:\n    blocks.1.mlp.fc2.bias" in err
  assert "1 unexpected:\n    blocks.0.attn.q_norm.weight" in err
  assert "norm.weight: file (33,) vs model (32,)" in err
  assert not (tmp_path / "out").exists()


def test_foreign_front_end_is_refused(tmp_path, capsys):
  def edit(sd):
    sd["front_end.0.spectrogram.window"] = torch.hann_window(512, periodic=False)

  path = _small_classifier(tmp_path, "symmetric_window.pt", edit)
  assert convert_main(["dasheng", str(path), str(tmp_path / "out"), "--num-heads", "2"]) == 1
  assert "front_end.0.spectrogram.window: differs" in capsys.readouterr().err


def test_heads_must_be_given_for_unpublished_sizes(tmp_path, capsys):
  path = _small_classifier(tmp_path, "small.pt")
  assert convert_main(["dasheng", str(path), str(tmp_path / "a")]) == 1
  assert "give the number of attention heads with --num-heads" in capsys.readouterr().err
  config, params, layout = convert(path, num_heads=2)
  assert layout == "classifier" and config.num_heads == 2 and config.embed_dim == 32
  assert count_params(params) > 0
  with pytest.raises(Exception, match="not divisible"):
    convert(path, num_heads=3)


def test_not_a_dasheng_checkpoint_and_existing_output(tmp_path, capsys):
  torch.save({"model": {"v.cls_token": torch.zeros(1, 1, 8)}}, tmp_path / "ast.pt")
  assert convert_main(["dasheng", str(tmp_path / "ast.pt"), str(tmp_path / "a")]) == 1
  assert "not a Dasheng checkpoint" in capsys.readouterr().err
  path = _small_classifier(tmp_path, "small.pt")
  args = ["dasheng", str(path), str(tmp_path / "b"), "--num-heads", "2"]
  assert convert_main(args) == 0
  assert convert_main(args) == 1
  assert "already holds a converted checkpoint" in capsys.readouterr().err
