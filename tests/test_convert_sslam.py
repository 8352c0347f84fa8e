"""SSLAM conversion: the fairseq checkpoint (fp16, fairseq objects pickled beside the weights) and
the Hugging Face layout (folder, bare safetensors) convert to the twin's params; what does not fit
is refused with every key named; a pickle that would run code is refused without running it.

Checkpoints are written here from a small perturbed `torch_reference.sslam_torch.SslamTwin`
(D 64, 2 blocks, 4 heads, 5 classes, positions for 70 time patches): the fairseq one as fairseq
saves it, the weights halved under "model" beside `cfg`, `optimizer_history`, `extra_state` and
`last_optimizer_state` holding objects of a stand-in `fairseq` package that exists only while the
file is written (so loading must not need it). Logits are compared with the twin (fp32 weights, or
the same weights rounded to fp16 for the fp16 file) on 1000 frames: `rel_err` <= 1e-5 (float32).
"""

import dataclasses
import enum
import json
import os
import pickle
import sys
import types

import numpy as np
import pytest
from numerics import assert_close

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import jax
from safetensors.torch import save_file

from convert_torch import published
from convert_torch.__main__ import main as convert_main
from convert_torch.io import ConversionError
from convert_torch.sslam import convert
from dass_jax import load_model
from dass_jax.models import SSLAM
from torch_reference.sslam_torch import SslamTwin, fairseq_state_dict, hf_state_dict, perturb_

TWIN = dict(num_classes=5, dim=64, depth=2, heads=4, mlp_dim=96, max_time_patches=70)
FRAMES = 1000


@pytest.fixture(scope="module")
def twin():
  torch.manual_seed(0)
  return perturb_(SslamTwin(**TWIN), seed=1)


@pytest.fixture(scope="module")
def fbank():
  return np.random.default_rng(0).standard_normal((2, FRAMES, 128)).astype(np.float32)


def _logits(config, params, x):
  return np.asarray(jax.jit(SSLAM(config).apply)({"params": params}, x))


def _twin_logits(model, x):
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


def _fake_fairseq():
  """A stand-in `fairseq` with a meter class, an enum and a config dataclass, as in fairseq's
  `extra_state` / `cfg`. Unpickling it (calling __setstate__) would raise."""
  package = types.ModuleType("fairseq")
  meters = types.ModuleType("fairseq.logging.meters")

  class AverageMeter:
    def __init__(self):
      self.val, self.sum, self.count = np.float64(0.25), np.float64(2.5), 10

    def __setstate__(self, state):
      raise AssertionError("fairseq code ran while loading")

  class Mode(enum.Enum):
    CLS_TOKEN = 2

  @dataclasses.dataclass
  class TaskConfig:
    data: str = "/data/as2m"
    target_length: int = 1024

  for cls in (AverageMeter, Mode, TaskConfig):
    cls.__module__ = "fairseq.logging.meters"
    cls.__qualname__ = cls.__name__
    setattr(meters, cls.__name__, cls)
  return package, meters


def _save_fairseq(path, state_dict, extra_keys=None):
  """torch.save a fairseq-style checkpoint of `state_dict` (weights halved) with training state."""
  package, meters = _fake_fairseq()
  names = ("fairseq", "fairseq.logging", "fairseq.logging.meters")
  sys.modules.update(zip(names, (package, package, meters)))
  try:
    model = {k: v.detach().half() for k, v in state_dict.items()}
    model.update(extra_keys or {})
    torch.save(
      {
        "args": None,
        "cfg": {"task": meters.TaskConfig(), "model": {"prediction_mode": meters.Mode.CLS_TOKEN}},
        "model": model,
        "optimizer_history": [{"num_updates": 10, "best": np.float64(0.502)}],
        "extra_state": {"metrics": {"train": [meters.AverageMeter()]}, "epoch": 3},
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(4)}}},
      },
      path,
    )
  finally:
    for name in names:
      sys.modules.pop(name)


def _half_twin(twin):
  """The twin with every weight rounded to float16 (what the fp16 checkpoint holds), in fp32."""
  model = SslamTwin(**TWIN)
  model.load_state_dict({k: v.half().float() for k, v in twin.state_dict().items()})
  return model.eval()


def test_fairseq_fp16_checkpoint_converts_without_fairseq(twin, fbank, tmp_path, capsys):
  path = tmp_path / "checkpoint_best.pt"
  unused = {"model.center": torch.zeros(1, 1, 64), "model.cls_proj.weight": torch.zeros(64, 64)}
  unused = {k: v.half() for k, v in unused.items()}  # pre-training leftovers, dropped
  _save_fairseq(path, fairseq_state_dict(twin), unused)
  with pytest.raises(pickle.UnpicklingError):  # what torch.load(weights_only=True) makes of it
    torch.load(path, weights_only=True)
  out = tmp_path / "converted"
  assert convert_main(["sslam", str(path), str(out), "--num-heads", "4"]) == 0
  summary = capsys.readouterr().out
  assert "fairseq layout, float16 weights" in summary and "training-state classes" in summary
  assert "float16 sin-cos positions" in summary
  assert "fairseq" not in sys.modules  # nothing of the pickled package was imported
  _, params, config = load_model(out)
  assert (config.pos_embed_dtype, config.num_heads, config.max_length) == ("float16", 4, 1024)
  assert_close(_logits(config, params, fbank), _twin_logits(_half_twin(twin), fbank), name="fp16")
  meta = json.loads((out / "config.json").read_text())
  assert meta["source_format"] == "sslam/fairseq" and meta["model_type"] == "sslam"


def test_hf_layouts_convert_to_the_fp32_twin(twin, fbank, tmp_path):
  hf = hf_state_dict(twin)
  folder = tmp_path / "hub"
  folder.mkdir()
  save_file({k: v.contiguous() for k, v in hf.items()}, folder / "model.safetensors")
  hub_config = {
    "model_type": "eat",
    "num_heads": 4,
    "mel_bins": 128,
    "norm_eps": 1e-6,
    "layer_norm_first": False,
    "model_variant": "finetune",
    "num_classes": 5,
  }
  (folder / "config.json").write_text(json.dumps(hub_config))
  bare = tmp_path / "bare.safetensors"  # the EAT module saved by itself: no `model.` prefix
  save_file({k[len("model.") :]: v.contiguous() for k, v in hf.items()}, bare)
  want = _twin_logits(twin, fbank)
  config, params, layout, _ = convert(folder)  # heads from config.json
  assert (layout, config.num_heads, config.pos_embed_dtype) == ("hf", 4, "float32")
  assert_close(_logits(config, params, fbank), want, name="hf folder")
  config_b, params_b, _, _ = convert(bare, num_heads=4)
  assert config_b == config
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, params, params_b)))
  (folder / "config.json").write_text(json.dumps({**hub_config, "layer_norm_first": True}))
  with pytest.raises(ConversionError, match="pre-norm EAT"):
    convert(folder)


def test_what_does_not_fit_is_refused_with_every_key(twin, tmp_path):
  sd = {k: v.detach().clone() for k, v in fairseq_state_dict(twin).items()}
  del sd["model.blocks.1.mlp.fc2.bias"]
  sd["model.modality_encoders.IMAGE.alibi_scale"] = torch.ones(1, 1, 4, 1, 1)
  sd["head.weight"] = torch.zeros(6, 32)
  torch.save({"model": sd}, tmp_path / "bad.pt")
  with pytest.raises(ConversionError) as info:
    convert(tmp_path / "bad.pt", num_heads=4)
  message = str(info.value)
  for expected in (
    "1 missing:\n    model.blocks.1.mlp.fc2.bias",
    "1 unexpected:\n    model.modality_encoders.IMAGE.alibi_scale",
    "head.weight: file (6, 32) vs model (6, 64)",
  ):
    assert expected in message


def test_positions_must_be_the_sin_cos_table(twin, tmp_path):
  sd = dict(fairseq_state_dict(twin))
  key = "model.modality_encoders.IMAGE.fixed_positional_encoder.positions"
  sd[key] = sd[key].clone()
  sd[key][0, 9, 40] += 1e-3
  torch.save({"model": sd}, tmp_path / "moved.pt")
  with pytest.raises(ConversionError, match=r"not the fixed 2-D sin-cos table .* entry \(9, 40\)"):
    convert(tmp_path / "moved.pt", num_heads=4)


@pytest.mark.parametrize(
  "payload",
  [
    lambda marker: (os.system, (f"touch {marker}",)),
    lambda marker: (eval, (f"open({str(marker)!r}, 'w')",)),
    lambda marker: (__import__, ("shutil",)),
  ],
  ids=["os.system", "eval", "__import__"],
)
def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, capsys, payload):
  marker = tmp_path / "ran"

  class Crafted:
    def __reduce__(self):
      return payload(marker)

  torch.save({"model": {"w": torch.zeros(2)}, "extra_state": {"x": Crafted()}}, tmp_path / "c.pt")
  assert convert_main(["sslam", str(tmp_path / "c.pt"), str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "refused to unpickle" in err and "Traceback" not in err
  assert not marker.exists() and not (tmp_path / "out").exists()


def test_not_an_sslam_checkpoint(tmp_path, capsys):
  torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pt")
  assert convert_main(["sslam", str(tmp_path / "other.pt"), str(tmp_path / "out")]) == 1
  assert "not an SSLAM / EAT classifier checkpoint" in capsys.readouterr().err


def test_published_name_loads_from_the_hub_cache(twin, fbank, tmp_path, monkeypatch):
  pytest.importorskip("huggingface_hub")
  from safetensors.torch import save
  from test_convert_sources import fill_hub_cache

  entry = published.find("sslam-as2m-50.2")
  assert (entry.converter, entry.source) == ("sslam", "hf://ta012/SSLAM_AS2M_Finetuned")
  monkeypatch.setenv("DASS_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  weights = save({k: v.contiguous() for k, v in hf_state_dict(twin).items()})
  hub_config = json.dumps({"model_type": "eat", "num_heads": 4, "mel_bins": 128}).encode()
  files = {"model.safetensors": weights, "config.json": hub_config}
  fill_hub_cache(tmp_path / "cache" / "hub", entry.source[len("hf://") :], files)
  _, params, config = load_model(entry.name)
  assert_close(_logits(config, params, fbank), _twin_logits(twin, fbank), name="published name")
