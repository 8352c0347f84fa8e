"""SSLAM in JAX against its PyTorch twin (`torch_reference.sslam_torch`), through the converter.

Checked:
  * the released size (ViT-B/16, 527 classes) has 85,660,943 parameters, the twin's count without
    its fixed position table (4,718,592 more values: 768 x 8 rows of 768); the SSLAM README says
    88M for the model;
  * random weights, small model (D 64, 2 blocks): logits and every block's hidden states match the
    twin on 1024 frames and on 1000 (not a multiple of the patch: the tail is ignored by both);
    `rel_err` <= 1e-5 (float32 ports of the same math land near 1e-7);
  * a real recording: Python's own test recording `test/audiodata/pluck-pcm16.wav` (a plucked
    string, 0.3 s, 11.025 kHz stereo, part of the CPython distribution), through
    `dass_jax.predict` (decoded, resampled, fbank, padded to 1024 frames like the authors'
    inference) on the small model, and through the full-size ViT-B with random weights (slow):
    both within 1e-5 of the twin on the same features;
  * bfloat16 compute runs, and bad inputs are refused;
  * a converted SSLAM is a teacher in `experiments.train` (tiny AST student, synthetic data): the
    run finishes with a distillation loss, and the teacher logits cache it builds equals the twin's
    logits on the clips' features (1e-4: the cache's features come from the data pipeline, whose
    fbank agrees with `audio_features` to float32 rounding).
"""

import dataclasses
import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from numerics import assert_close

torch = pytest.importorskip("torch")

import jax
import jax.numpy as jnp

from convert_torch import mapping
from convert_torch.__main__ import main as convert_main
from convert_torch.params import count_params
from convert_torch.sslam import infer_config, param_table
from dass_jax import models
from dass_jax.data import read_datafile, synthetic
from dass_jax.frontends.kaldi_fbank import audio_features
from dass_jax.models import SSLAM, SslamConfig
from dass_jax.predict import main as predict_main
from torch_reference.sslam_torch import SslamTwin, fairseq_state_dict, perturb_

SMALL = dict(num_classes=5, dim=64, depth=2, heads=4, mlp_dim=96, max_time_patches=70)
RELEASED_PARAMS = 85_660_943
POSITION_VALUES = 768 * 8 * 768


def real_recording() -> Path:
  """CPython's test recording (a plucked string); skips where the interpreter ships without it."""
  path = Path(sysconfig.get_paths()["stdlib"]) / "test" / "audiodata" / "pluck-pcm16.wav"
  if not path.is_file():
    pytest.skip(f"{path} is not installed (a Python without its test package)")
  return path


def _convert(twin, **hints):
  """(config, params) of a twin through the converter's table (fairseq layout)."""
  sd = {k: v.detach().numpy() for k, v in fairseq_state_dict(twin).items()}
  config = infer_config(sd, "fairseq", num_heads=twin.blocks[0].attn.heads, **hints)
  rows = sd["model.modality_encoders.IMAGE.fixed_positional_encoder.positions"].shape[1]
  return config, mapping.params_from_table(param_table(config, "fairseq", rows), sd, config, "twin")


def _twin_logits(model, x):
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def small():
  torch.manual_seed(0)
  twin = perturb_(SslamTwin(**SMALL), seed=1)
  return (twin, *_convert(twin))


def test_released_size_parameter_count():
  config = SslamConfig()
  shapes = jax.eval_shape(
    lambda: SSLAM(config).init(jax.random.PRNGKey(0), jnp.zeros(config.example_input_shape()))
  )["params"]
  assert count_params(shapes) == RELEASED_PARAMS
  twin = SslamTwin()
  assert sum(p.numel() for p in twin.parameters() if p.requires_grad) == RELEASED_PARAMS
  assert twin.positions.numel() == POSITION_VALUES


@pytest.mark.parametrize("frames", [1024, 1000])
def test_random_weights_match_the_twin(small, frames):
  twin, config, params = small
  x = np.random.default_rng(frames).standard_normal((2, frames, 128)).astype(np.float32)
  logits, state = jax.jit(
    lambda p, x: SSLAM(config).apply({"params": p}, x, mutable=["intermediates"])
  )(params, x)
  assert_close(logits, _twin_logits(twin, x), name="logits")
  with torch.no_grad():  # the twin's hidden states, block by block
    h = twin.patch_embed(torch.from_numpy(x)[:, None]).flatten(2).transpose(1, 2)
    h = h + twin.positions[:, : h.shape[1]]
    h = twin.embed_norm(torch.cat([twin.cls_token.expand(2, -1, -1), h], dim=1))
    hidden = [h.numpy()]
    for block in twin.blocks:
      h = block(h)
      hidden.append(h.numpy())
  for i, (ours, ref) in enumerate(
    zip(state["intermediates"]["hidden_states"], hidden, strict=True)
  ):
    assert_close(ours, ref, name=f"hidden state {i}")


def test_predict_on_a_real_recording(small, tmp_path, capsys):
  from dass_jax.checkpoint import save_converted

  twin, config, params = small
  recording = real_recording()
  folder = save_converted(tmp_path / "sslam", config, params)
  logits_file = tmp_path / "logits.npy"
  args = ["--checkpoint", str(folder), str(recording), "--logits-npy", str(logits_file), "--json"]
  assert predict_main(args) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["model_type"] == "sslam" and report["results"][0]["frames"] == config.max_length
  features = audio_features(recording, target_frames=config.max_length)
  assert_close(np.load(logits_file), _twin_logits(twin, features[None]), name="predict")


@pytest.mark.slow
def test_full_size_matches_the_twin_on_a_real_recording():
  features = audio_features(real_recording(), target_frames=1024)[None]
  torch.manual_seed(2)
  twin = perturb_(SslamTwin(), seed=3, scale=0.02)
  config, params = _convert(twin)
  assert config == SslamConfig()
  logits = jax.jit(SSLAM(config).apply)({"params": params}, features)
  assert_close(logits, _twin_logits(twin, features), name="ViT-B logits")


def test_bfloat16_and_bad_inputs(small):
  _, config, params = small
  x = np.random.default_rng(3).standard_normal((1, 512, 128)).astype(np.float32)
  f32 = SSLAM(config).apply({"params": params}, x)
  bf16 = SSLAM(dataclasses.replace(config, dtype="bfloat16")).apply({"params": params}, x)
  assert bf16.dtype == jnp.float32
  assert_close(bf16, f32, dtype=jnp.bfloat16, name="bfloat16")
  for shape in ((1, 512, 64), (1, 8, 128), (512, 128)):
    with pytest.raises(ValueError, match="SSLAM expects"):
      SSLAM(config).apply({"params": params}, np.zeros(shape, np.float32))
  assert models.fixed_length(config) == config.max_length == 1024
  _, longer = models.spec_of(config).with_max_length(params, config, 2048)
  assert longer.max_length == 2048


def test_converted_sslam_teaches_in_train(tmp_path):
  import test_train_runs as runs

  ds = synthetic.ensure_dataset(tmp_path / "data", num_train=16, num_eval=8, clip_seconds=1.0)
  config_file = tmp_path / "tiny_config.py"
  config_file.write_text(
    runs.CONFIG.format(train=ds.train_datafile, eval=ds.eval_datafile, labels=ds.label_csv)
  )
  env = {"root": tmp_path, "config": str(config_file), "cache": str(tmp_path / "xla")}
  torch.manual_seed(4)
  twin = perturb_(SslamTwin(ds.num_classes, 32, 1, 2, 64, max_time_patches=70), seed=5)
  torch.save({"model": fairseq_state_dict(twin)}, tmp_path / "sslam_tiny.pt")
  teacher = tmp_path / "sslam_teacher"
  assert (
    convert_main(["sslam", str(tmp_path / "sslam_tiny.pt"), str(teacher), "--num-heads", "2"]) == 0
  )
  cache = tmp_path / "sslam_logits.npy"
  overrides = (
    "--config.total_steps=2",
    f"--config.teacher.path={teacher}",
    f"--config.teacher.cache={cache}",
    "--config.loss.kd_weight=0.5",
  )
  log = runs._run(env, tmp_path / "student", *overrides)
  assert "SslamConfig, takes fbank" in log
  losses = runs._losses(tmp_path / "student", ("train/loss", "train/loss_kd"))
  assert sorted(losses) == [1, 2] and all(kd > 0 for _, kd in losses.values())
  features = np.stack(
    [audio_features(e.wav, target_frames=98) for e in read_datafile(ds.train_datafile)]
  )
  assert_close(np.load(cache), _twin_logits(twin, features), tol=1e-4, name="teacher cache")
