"""Embeddings (`dass_jax.embed`) of every registered model, long inputs without cropping, the npz
command, and the HEAR API contract (`dass_jax.hear`, as hear-validator checks it)."""

import dataclasses

import jax
import numpy as np
import pytest
import soundfile as sf

from dass_jax import embed, models
from dass_jax.checkpoint import save_converted

CONFIGS = {
  "dass": models.DassConfig(num_classes=3, depths=(1, 1, 1, 1), dims=(8, 16, 16, 16)),
  "ast": models.AstConfig(
    num_classes=3, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=64
  ),
  "aum": models.AumConfig(
    num_classes=3, embed_dim=16, depth=1, max_length=64, scan_impl="sequential"
  ),
  "dasheng": models.DashengConfig(
    num_classes=3, embed_dim=16, depth=1, num_heads=2, mlp_dim=32, chunk_tokens=8
  ),
  "sslam": models.SslamConfig(
    num_classes=3, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=64
  ),
}
# Token length in ms of each tiny model: DASS 4 stride-2 convs + 3 downsamples = 32 frames; AST 64
# frames in 5 time patches; AuM and SSLAM 16-frame patches; Dasheng 4 frames.
TOKEN_MS = {"dass": 320.0, "ast": 128.0, "aum": 160.0, "dasheng": 40.0, "sslam": 160.0}


def _init(config):
  model = models.build_model(config)
  x = np.zeros(config.example_input_shape(), np.float32)
  return model, model.init(jax.random.PRNGKey(0), x)["params"], config


@pytest.fixture(scope="module")
def embedders():
  return {name: embed.Embedder(*_init(config)) for name, config in CONFIGS.items()}


def _audio(seconds, seed=0):
  return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000)).astype(np.float32)


def test_every_registered_model_has_a_hidden_states_hook():
  assert set(CONFIGS) == set(models.MODELS)
  assert all(spec.hidden_states is not None for spec in models.MODELS.values())


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seconds", [0.05, 2.6])
def test_shapes_dtypes_and_timestamps(embedders, name, seconds):
  e = embedders[name]
  out = e.embed_waveform(_audio(seconds))
  t = len(out.times_ms)
  assert out.frames.shape == (t, e.dim) and out.scene.shape == (e.dim,) == (16,)
  assert out.frames.dtype == np.float32 and out.scene.dtype == np.float32
  assert np.all(np.isfinite(out.frames))
  duration_ms = 1000.0 * seconds
  assert out.times_ms[0] > 0.0 and out.times_ms[-1] < duration_ms + 1e-6
  if t > 1:
    step = np.diff(out.times_ms)
    assert np.all(step > 0) and np.ptp(step) < 1e-6
    assert step[0] == pytest.approx(TOKEN_MS[name], rel=0.05)
    # Nothing cropped: the last token sits within two tokens of the end.
    assert out.times_ms[-1] >= duration_ms - 2 * step[0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scene_is_the_mean_of_the_timestamp_embeddings_for_whole_tokens(embedders, name):
  # 41200 samples = 256 fbank frames = 8 DASS tokens = 4 AST/AuM/SSLAM windows = 64 Dasheng tokens.
  out = embedders[name].embed_waveform(_audio(41200 / 16000))
  np.testing.assert_allclose(out.scene, out.frames.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_dass_scene_embedding_is_the_vector_its_classifier_reads(embedders):
  e = embedders["dass"]
  x = e.model_input(_audio(1.0)[None])
  pooled_of = jax.jit(
    lambda p, x: e.model.apply({"params": p}, x, mutable=["intermediates"])[1]["intermediates"][
      "classifier"
    ]["pooled"][-1]
  )
  pooled = np.asarray(pooled_of(e.params, x)[0])
  np.testing.assert_allclose(e.embed_model_input(x[0]).scene, pooled, rtol=1e-5, atol=1e-6)


def test_dasheng_timestamp_embeddings_are_its_embed_output(embedders):
  e = embedders["dasheng"]
  audio = _audio(1.0)
  embed_of = jax.jit(lambda p, x: e.model.apply({"params": p}, x, method="embed"))
  expected = np.asarray(embed_of(e.params, audio[None]))[0]
  np.testing.assert_allclose(e.embed_waveform(audio).frames, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ast", "aum", "sslam"])
def test_fixed_length_models_window_long_inputs_instead_of_cropping(embedders, name):
  e = embedders[name]
  x = e.model_input(_audio(1.6)[None])[0]  # 158 frames: windows of 64, 64 and 30 + padding
  out = e.embed_model_input(x)
  per_window = int(round(640.0 / TOKEN_MS[name]))
  assert per_window * 2 < len(out.times_ms) <= per_window * 3
  # Each window's tokens are the model's hidden states of exactly those frames.
  for w in range(2):
    _, alone, _ = e.embed_inputs(x[None, 64 * w : 64 * (w + 1)])
    np.testing.assert_allclose(
      out.frames[w * per_window : (w + 1) * per_window], alone[0], rtol=1e-5, atol=1e-6
    )


def test_bucketing_pads_with_silence_and_drops_the_padding_tokens():
  e = embed.Embedder(*_init(CONFIGS["dass"]), bucket_seconds=0.32)
  exact = embed.Embedder(*_init(CONFIGS["dass"]))
  audio = _audio(0.7)
  a, b = e.embed_waveform(audio), exact.embed_waveform(audio)
  np.testing.assert_array_equal(a.times_ms[: len(b.times_ms)], b.times_ms[: len(a.times_ms)])
  assert a.frames.shape == b.frames.shape == (2, 16)
  # Padding changes the scan's context a little, not the tokens of the recording. (The scene also
  # averages the third token, which starts at frame 64 of 68: its last 28 frames are the model's
  # stride padding in one case and the fbank of silence in the other, so the scenes differ more.)
  cos = np.sum(a.frames * b.frames, axis=1) / np.linalg.norm(a.frames, axis=1)
  assert np.all(cos / np.linalg.norm(b.frames, axis=1) > 0.99)


def test_the_command_writes_every_file_s_embeddings(tmp_path, capsys):
  config = CONFIGS["ast"]
  ckpt = save_converted(tmp_path / "ckpt", config, _init(config)[1])
  files = []
  for name, seconds in (("short.wav", 0.5), ("long.wav", 7.3)):
    sf.write(tmp_path / name, _audio(seconds), 16000)
    files.append(str(tmp_path / name))
  out = tmp_path / "x.npz"
  assert embed.main(["--checkpoint", str(ckpt), *files, "--out", str(out)]) == 0
  got = np.load(out)
  assert list(got["files"]) == files and str(got["model_type"]) == "ast"
  assert got["scene"].shape == (2, 16) and got["scene"].dtype == np.float32
  offsets = got["offsets"]
  assert offsets[0] == 0 and offsets[-1] == len(got["frames"]) == len(got["times_ms"])
  long_times = got["times_ms"][offsets[1] : offsets[2]]
  assert long_times[-1] > 7000.0  # the whole 7.3 s, in 64-frame windows
  np.testing.assert_allclose(
    got["scene"][1], got["frames"][offsets[1] : offsets[2]].mean(axis=0), rtol=1e-6
  )
  assert "timestamps every 128.0 ms" in capsys.readouterr().out


def test_the_command_names_a_bad_input(tmp_path, capsys):
  config = CONFIGS["dass"]
  ckpt = save_converted(tmp_path / "ckpt", config, _init(config)[1])
  (tmp_path / "bad.wav").write_bytes(b"nope")
  argv = ["--checkpoint", str(ckpt), str(tmp_path / "bad.wav"), "--out", str(tmp_path / "x.npz")]
  assert embed.main(argv) == 2
  assert "bad.wav" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()


# ------------------------------------------------------------------------------------------------
# HEAR API (hear-eval-kit takes only torch.nn.Module or tf.Module models).
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hear_model(tmp_path_factory):
  torch = pytest.importorskip("torch")
  from dass_jax import hear

  config = dataclasses.replace(CONFIGS["dass"], num_classes=5)
  folder = save_converted(tmp_path_factory.mktemp("hear") / "ckpt", config, _init(config)[1])
  model = hear.load_model(str(folder))
  assert isinstance(model, torch.nn.Module)
  return model


def test_hear_model_attributes(hear_model):
  assert hear_model.sample_rate == 16000
  for name in ("scene_embedding_size", "timestamp_embedding_size"):
    assert isinstance(getattr(hear_model, name), int) and getattr(hear_model, name) == 16


@pytest.mark.parametrize("length", [1.07, 1.98, 4.0])
def test_hear_timestamp_embeddings_contract(hear_model, length):
  import torch

  from dass_jax import hear

  audio = torch.rand((2, int(length * hear_model.sample_rate))) * 2 - 1
  embeddings, timestamps = hear.get_timestamp_embeddings(audio, hear_model)
  assert embeddings.dtype == torch.float32 and embeddings.ndim == 3
  assert embeddings.shape[0] == 2 and embeddings.shape[2] == hear_model.timestamp_embedding_size
  assert tuple(timestamps.shape) == tuple(embeddings.shape[:2])
  ts = timestamps.numpy()
  assert np.array_equal(ts[0], ts[1])
  diff = np.diff(ts, axis=1)
  assert np.all(diff > 0) and np.max(np.abs(diff - diff.mean())) <= 1.0  # regular, within 1 ms
  assert ts.max() <= 1000 * length and ts.max() >= 1000 * length - 2 * diff.mean()


def test_hear_scene_embeddings_of_unequal_sounds_padded_as_the_kit_does(hear_model):
  import torch

  from dass_jax import hear

  rate = hear_model.sample_rate
  sounds = [_audio(s, seed=i) for i, s in enumerate((0.6, 1.5, 2.74))]
  batch = np.zeros((3, max(len(s) for s in sounds)), np.float32)  # zero-padded at the end
  for i, s in enumerate(sounds):
    batch[i, : len(s)] = s
  scene = hear.get_scene_embeddings(torch.from_numpy(batch), hear_model)
  assert scene.dtype == torch.float32 and tuple(scene.shape) == (3, 16)
  assert torch.all(torch.isfinite(scene))
  # Each row is the embedding of that padded sound alone (no mixing across the batch).
  alone = hear.get_scene_embeddings(torch.from_numpy(batch[1:2]), hear_model)
  np.testing.assert_allclose(scene[1].numpy(), alone[0].numpy(), rtol=1e-4, atol=1e-5)
  assert rate * 2.74 == pytest.approx(batch.shape[1], abs=1)
