"""AuM everywhere a model goes: `dass_jax.predict` (audio padded to its fixed length, cropped with
--crop),
training as a student from a converted checkpoint of another length, the quickstart config, and
the length study's adapter (position embeddings resampled to each input length)."""

import json

import jax
import ml_collections
import numpy as np
import pytest
from numerics import assert_close

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from convert_torch.aum import torch_to_flax
from dass_jax import load_model, models
from dass_jax.checkpoint import save_converted
from dass_jax.data import synthetic
from dass_jax.frontends.kaldi_fbank import audio_features
from dass_jax.models.aum import with_max_length
from dass_jax.predict import main as predict_main
from dass_jax.predict import pad_value
from experiments import niah, train
from experiments.configs import common, quickstart, quickstart_aum
from torch_reference.aum_torch import AudioMambaTwin

FRAMES = 64  # the checkpoint's max_length: 8 x 4 patches


@pytest.fixture(scope="module")
def twin_and_checkpoint(tmp_path_factory):
  torch.manual_seed(0)
  twin = AudioMambaTwin(
    num_classes=5, embed_dim=16, depth=1, bimamba_type="v2", spectrogram_size=(128, FRAMES)
  ).eval()
  config, params = torch_to_flax({k: v.numpy() for k, v in twin.state_dict().items()})
  folder = tmp_path_factory.mktemp("aum") / "ckpt"
  save_converted(folder, config, params)
  return twin, folder


def _twin_logits(twin, features):
  return twin(torch.from_numpy(features[None])).detach().numpy()


def test_predict_pads_and_crops_audio_to_max_length(twin_and_checkpoint, tmp_path, capsys):
  twin, folder = twin_and_checkpoint
  rng = np.random.default_rng(0)
  for name, seconds in (("long.wav", 1.5), ("short.wav", 0.4)):
    sf.write(tmp_path / name, 0.1 * rng.standard_normal(int(seconds * 16000)), 16000)
  argv = ["--checkpoint", str(folder), "--logits-npy", str(tmp_path / "logits.npy")]
  assert predict_main([*argv, str(tmp_path / "long.wav"), str(tmp_path / "short.wav")]) == 2
  assert "long.wav: 1.48 s (148 frames) is longer" in capsys.readouterr().err  # without --crop
  assert (
    predict_main([*argv, "--crop", str(tmp_path / "long.wav"), str(tmp_path / "short.wav")]) == 0
  )
  logits = np.load(tmp_path / "logits.npy")
  long, short = audio_features(tmp_path / "long.wav"), audio_features(tmp_path / "short.wav")
  assert len(long) > FRAMES > len(short)
  padded = np.pad(short, ((0, FRAMES - len(short)), (0, 0)), constant_values=pad_value())
  assert_close(logits[:1], _twin_logits(twin, long[:FRAMES]), name="cropped")
  assert_close(logits[1:], _twin_logits(twin, padded), name="padded")
  out = capsys.readouterr().out
  assert "(the first 64 of 148 frames)" in out and "(64 frames)" in out


def test_predict_refuses_what_the_fixed_length_cannot_take(twin_and_checkpoint, tmp_path, capsys):
  _, folder = twin_and_checkpoint
  np.save(tmp_path / "x.npy", np.zeros((1, 80, 128), np.float32))  # 5 time patches, not 4
  assert predict_main(["--checkpoint", str(folder), str(tmp_path / "x.npy")]) == 2
  assert "with_max_length" in capsys.readouterr().err
  sf.write(tmp_path / "a.wav", np.zeros(16000), 16000)
  argv = ["--checkpoint", str(folder), str(tmp_path / "a.wav"), "--timeline-window", "1"]
  assert predict_main(argv) == 2
  assert "this aum checkpoint takes at most max_length=64 frames" in capsys.readouterr().err


def test_train_student_from_checkpoint_of_another_length(twin_and_checkpoint, tmp_path):
  """1 s clips (98 frames): the 64-frame checkpoint's position embeddings are resampled."""
  _, folder = twin_and_checkpoint
  ds = synthetic.ensure_dataset(tmp_path / "data", num_train=8, num_eval=4, clip_seconds=1.0)
  c = common.base_config()
  c.model_type, c.model = "aum", ml_collections.ConfigDict({"max_length": 98})
  c.init_from, c.reinit_head = str(folder), True
  c.batch_size, c.total_steps, c.fsdp_min_size = 4, 2, 0
  for section, datafile in ((c.input, ds.train_datafile), (c.evals.input, ds.eval_datafile)):
    section.datafile, section.label_csv = datafile, ds.label_csv
    section.target_frames, section.read_threads = 98, 1
  c.input.freqm, c.input.timem, c.input.mixup = 0, 0, 0.0
  c.evals.batch_size, c.optim.warmup_steps = 4, 0

  results = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["steps"] == 2 and 0.0 <= results["valid"]["mAP"] <= 1.0
  model, params, config = load_model(tmp_path / "run" / "export")
  assert (config.model_type, config.max_length, config.num_classes) == ("aum", 98, ds.num_classes)
  assert params["pos_embed"].shape == (1, 1 + 8 * 6, 16)
  x = np.zeros((1, 98, 128), np.float32)
  assert np.all(np.isfinite(jax.jit(model.apply)({"params": params}, x)))

  c.init_from, c.model.max_length = "", 64
  with pytest.raises(ValueError, match=r"set config\.model\.max_length=98"):
    train._check_length(train._model_config(c, ds.num_classes), c)


@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_quickstart_aum_config_builds_a_student_for_its_clips(arg):
  c = quickstart_aum.get_config(arg)
  config = models.config_from_dict({"model_type": c.model_type, **c.model.to_dict()})
  assert isinstance(config, models.AumConfig)
  assert models.fixed_length(config) == c.input.target_frames == c.evals.input.target_frames
  assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
  assert c.workdir != quickstart.get_config(arg).workdir  # never resumes the DASS quickstart


def test_length_study_resamples_or_refuses_other_lengths(twin_and_checkpoint):
  twin, folder = twin_and_checkpoint
  module, params, config = niah.load_for_eval(str(folder))
  x = np.random.default_rng(1).standard_normal((1, 100, 128), dtype=np.float32)
  resampled = niah.Classifier("aum", module, params, config, "interpolate")
  scores = resampled.scores(x)  # 100 frames: 6 time patches instead of 4
  adapted, adapted_config = with_max_length(params, config, 100)
  twin_long = AudioMambaTwin(
    num_classes=5, embed_dim=16, depth=1, bimamba_type="v2", spectrogram_size=(128, 100)
  )
  state = dict(twin.state_dict())
  state["pos_embed.pos_embed"] = torch.tensor(np.asarray(adapted["pos_embed"]))
  twin_long.load_state_dict(state)
  ref = torch.sigmoid(twin_long(torch.from_numpy(x))).detach().numpy()
  assert adapted_config.grid == (8, 6)
  assert_close(scores, ref, name="resampled AuM scores vs twin with the same embeddings")
  assert niah.Classifier("aum", module, params, config, "sine").supports(100)
  refusing = niah.Classifier("aum", module, params, config, "refuse")
  assert refusing.supports(FRAMES + 15) and not refusing.supports(100)
