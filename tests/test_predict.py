"""End to end: torch DASS checkpoint -> `convert_torch dass` CLI -> `dass_jax.predict` CLI.

Checked here:
  * acceptance: a perturbed twin DASS (depths 1,1,1,1, dims 16..128, 7 classes) saved with
    torch.save as a DataParallel 'module.v.' state dict, converted and predicted through the two
    CLIs in subprocesses on a 200-frame .npy: logits within 1e-5 (relative to max |logit|) of the
    PyTorch twin's;
  * a batched (batch, frames, 128) .npy and an audio file of another length (features from
    dass_jax.frontends.kaldi_fbank) run separately, in input order (--logits-npy rows, JSON
    results), each matching the twin;
  * bad inputs (missing file, wrong rank, wrong mel count, NaN / inf, empty, non-numeric,
    undecodable audio) and a bad checkpoint folder give exit code 2 and a message naming the file;
  * the model type comes from the checkpoint: a (tiny, random) AST checkpoint predicts through the
    same CLI, and an input length its position embeddings do not fit exits 2 naming the file;
  * long audio: a 12.3 s 22.05 kHz recording (1228 frames, longer than the 1024 DASS trains on)
    runs in one pass with streamed features, matching the twin on the whole file's features, and
    its 10 s / 1 s timeline has the expected windows, the end-aligned last one matching the twin
    on that crop;
  * audio longer than a fixed-length model (AST) takes is refused with the --timeline-window /
    --crop hint, and with --crop classified on its first max_length frames, saying so;
  * probabilities follow the checkpoint's label kind (softmax for a 'ce' training export, sigmoid
    for 'bce' and for the 527 AudioSet classes, a warning where the checkpoint does not say);
  * only decoding errors are bad input: a bug raised while computing features propagates.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

import jax
from numerics import max_rel_err, record

from dass_jax import predict
from dass_jax.checkpoint import save_converted
from dass_jax.frontends import kaldi_fbank
from dass_jax.frontends.kaldi_fbank import audio_features
from dass_jax.labels import class_names
from dass_jax.models import AST, AstConfig
from dass_jax.predict import main as predict_main
from torch_reference.dass_torch import DassTorch, dataparallel_state_dict, perturb_

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL_TOL = 1e-5


def _run(*args: str) -> subprocess.CompletedProcess:
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])),
  }
  return subprocess.run(
    [sys.executable, "-m", *args],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.fixture(scope="module")
def twin():
  torch.manual_seed(11)
  model = DassTorch(num_classes=7, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)).eval()
  perturb_(model, seed=12)
  return model


def _twin_logits(model, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def checkpoint(twin, tmp_path_factory):
  """The twin saved like DASS_*.pth and converted by the CLI; returns the converted folder."""
  folder = tmp_path_factory.mktemp("acceptance")
  torch.save(dataparallel_state_dict(twin), folder / "dass_tiny.pth")
  result = _run("convert_torch", "dass", str(folder / "dass_tiny.pth"), str(folder / "jax"))
  assert result.returncode == 0, result.stderr
  assert "depths=[1, 1, 1, 1]" in result.stdout
  return folder / "jax"


def test_acceptance_cli_logits_match_torch(twin, checkpoint, tmp_path):
  x = np.random.default_rng(0).standard_normal((200, 128)).astype(np.float32)
  np.save(tmp_path / "clip.npy", x)
  result = _run(
    "dass_jax.predict",
    "--checkpoint",
    str(checkpoint),
    str(tmp_path / "clip.npy"),
    "--logits-npy",
    str(tmp_path / "logits.npy"),
    "--top-k",
    "3",
  )
  assert result.returncode == 0, result.stderr
  logits = np.load(tmp_path / "logits.npy")
  ref = _twin_logits(twin, x[None])
  assert logits.shape == (1, 7)
  assert max_rel_err(logits, ref) <= REL_TOL
  record(
    "DASS (depths 1,1,1,1, 7 classes, perturbed) through the convert and predict CLIs vs the "
    "PyTorch twin",
    max_rel_err(logits, ref),
    REL_TOL,
    "max_rel_err",
  )
  best = class_names(7)[int(np.argmax(ref))]
  assert best in result.stdout.splitlines()[1]


def test_batched_and_mixed_lengths_keep_input_order(twin, checkpoint, tmp_path, capsys):
  rng = np.random.default_rng(1)
  a = rng.standard_normal((4, 120, 128)).astype(np.float32)
  np.save(tmp_path / "a.npy", a)
  samples = 400 + 89 * 160  # 25 ms windows every 10 ms at 16 kHz: 90 frames
  sf.write(tmp_path / "b.wav", 0.1 * rng.standard_normal(samples).astype(np.float32), 16000)
  b = audio_features(tmp_path / "b.wav")
  assert b.shape == (90, 128)
  argv = [
    "--checkpoint",
    str(checkpoint),
    str(tmp_path / "a.npy"),
    str(tmp_path / "b.wav"),
    "--json",
    "--top-k",
    "2",
    "--batch-size",
    "2",
    "--logits-npy",
    str(tmp_path / "l.npy"),
  ]
  assert predict_main(argv) == 0
  report = json.loads(capsys.readouterr().out)
  logits = np.load(tmp_path / "l.npy")
  assert logits.shape == (5, 7)
  assert max_rel_err(logits[:4], _twin_logits(twin, a)) <= REL_TOL
  assert max_rel_err(logits[4:], _twin_logits(twin, b[None])) <= REL_TOL
  rows = [(r["input"].rsplit("/", 1)[-1], r["index"], r["frames"]) for r in report["results"]]
  assert rows == [("a.npy", i, 120) for i in range(4)] + [("b.wav", 0, 90)]
  for row, result in zip(logits, report["results"]):
    assert [t["class"] for t in result["top"]] == list(np.argsort(-row)[:2])
    assert result["top"][0]["probability"] == pytest.approx(1 / (1 + np.exp(-row.max())), rel=1e-6)


BAD_INPUTS = {
  "missing.npy": (None, "not found"),
  "rank1.npy": (np.zeros(128, np.float32), "rank 1"),
  "mel64.npy": (np.zeros((50, 64), np.float32), "64 mel bins"),
  "nan.npy": (np.full((50, 128), np.nan, np.float32), "NaN"),
  "inf.npy": (np.full((2, 50, 128), np.inf, np.float32), "NaN / inf"),
  "empty.npy": (np.zeros((0, 128), np.float32), "empty"),
  "strings.npy": (np.array([["a"] * 128]), "not a real number"),
  "corrupt.wav": (b"RIFF but not audio", "could not turn the audio into features"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_exits_2_naming_the_file(checkpoint, tmp_path, capsys, name):
  array, expected = BAD_INPUTS[name]
  path = tmp_path / name
  if isinstance(array, bytes):
    path.write_bytes(array)
  elif array is not None:
    np.save(path, array)
  good = tmp_path / "good.npy"
  np.save(good, np.zeros((40, 128), np.float32))
  assert predict_main(["--checkpoint", str(checkpoint), str(good), str(path)]) == 2
  captured = capsys.readouterr()
  assert str(path) in captured.err and expected in captured.err
  assert captured.out == ""


def test_bad_checkpoint_folder_exits_2(tmp_path, capsys):
  clip = tmp_path / "clip.npy"
  np.save(clip, np.zeros((40, 128), np.float32))
  assert predict_main(["--checkpoint", str(tmp_path / "nowhere"), str(clip)]) == 2
  assert "checkpoint folder not found" in capsys.readouterr().err
  assert predict_main(["--checkpoint", str(tmp_path), str(clip)]) == 2
  assert "config.json" in capsys.readouterr().err


def test_class_names_always_cover_every_class():
  names = class_names(7)
  assert len(names) == 7 and all(isinstance(n, str) and n for n in names)


def test_ast_checkpoint_runs_through_the_same_cli(tmp_path, capsys):
  config = AstConfig(
    num_classes=4, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, max_length=64
  )
  x = np.random.default_rng(2).standard_normal((1, 64, 128)).astype(np.float32)
  params = AST(config).init(jax.random.PRNGKey(0), x)["params"]
  save_converted(tmp_path / "ast", config, params)
  np.save(tmp_path / "ok.npy", x[0])
  argv = [
    "--checkpoint",
    str(tmp_path / "ast"),
    str(tmp_path / "ok.npy"),
    "--logits-npy",
    str(tmp_path / "l.npy"),
  ]
  assert predict_main(argv) == 0
  ref = np.asarray(AST(config).apply({"params": params}, x))
  np.testing.assert_allclose(np.load(tmp_path / "l.npy"), ref, rtol=1e-5, atol=1e-6)
  np.save(tmp_path / "short.npy", x[0, :30])
  capsys.readouterr()
  assert predict_main(["--checkpoint", str(tmp_path / "ast"), str(tmp_path / "short.npy")]) == 2
  err = capsys.readouterr().err
  assert "short.npy" in err and "frames" in err


def test_long_audio_one_pass_and_timeline_match_torch(twin, checkpoint, tmp_path, capsys):
  rate, seconds = 22050, 12.3
  t = np.arange(int(rate * seconds)) / rate
  wave = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) * (t > 6) + 0.02 * np.sin(2 * np.pi * 50 * t)
  sf.write(tmp_path / "long.wav", wave.astype(np.float32), rate, subtype="FLOAT")
  whole = audio_features(tmp_path / "long.wav")
  assert whole.shape == (1228, 128)
  argv = [
    "--checkpoint",
    str(checkpoint),
    str(tmp_path / "long.wav"),
    "--json",
    "--top-k",
    "7",
    "--logits-npy",
    str(tmp_path / "l.npy"),
    "--timeline-window",
    "10",
    "--timeline-hop",
    "1",
  ]
  assert predict_main(argv) == 0
  [result] = json.loads(capsys.readouterr().out)["results"]
  assert result["frames"] == 1228
  assert max_rel_err(np.load(tmp_path / "l.npy"), _twin_logits(twin, whole[None])) <= REL_TOL
  windows = result["timeline"]
  assert [(w["start_frame"], w["end_frame"]) for w in windows] == [
    (0, 1000),
    (100, 1100),
    (200, 1200),
    (228, 1228),
  ]
  ref = _twin_logits(twin, whole[None, 228:1228])[0]
  got = np.zeros(7, np.float32)
  for top in windows[-1]["top"]:
    got[top["class"]] = top["logit"]
  assert max_rel_err(got, ref) <= REL_TOL


def _tiny_ast(folder, num_classes=4, **extra):
  """A random 64-frame AST saved as a checkpoint with metadata `extra`; returns (config, params)."""
  config = AstConfig(
    num_classes=num_classes, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, max_length=64
  )
  x = np.zeros((1, 64, 128), np.float32)
  params = AST(config).init(jax.random.PRNGKey(0), x)["params"]
  save_converted(folder, config, params, extra=extra or None)
  return config, params


def test_audio_longer_than_a_fixed_length_model_takes_is_refused_unless_asked(tmp_path, capsys):
  config, params = _tiny_ast(tmp_path / "ast")
  rng = np.random.default_rng(3)
  sf.write(tmp_path / "long.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
  features = audio_features(tmp_path / "long.wav")
  assert features.shape == (98, 128)  # 0.98 s, longer than max_length 64 (0.64 s)
  argv = ["--checkpoint", str(tmp_path / "ast"), str(tmp_path / "long.wav")]
  assert predict_main(argv) == 2
  captured = capsys.readouterr()
  assert "long.wav: 0.98 s (98 frames) is longer than this ast checkpoint takes" in captured.err
  assert "--timeline-window 0.64" in captured.err and "--crop" in captured.err
  assert captured.out == ""
  logits_npy = tmp_path / "l.npy"
  assert predict_main([*argv, "--crop", "--json", "--logits-npy", str(logits_npy)]) == 0
  captured = capsys.readouterr()
  [result] = json.loads(captured.out)["results"]
  assert (result["frames"], result["cropped_from"]) == (64, 98)
  assert "the first 0.64 s (64 of 98 frames)" in captured.err
  ref = np.asarray(AST(config).apply({"params": params}, features[None, :64]))
  np.testing.assert_allclose(np.load(logits_npy), ref, rtol=1e-5, atol=1e-6)
  # A timeline classifies the rest; the whole-recording line is the crop, and says so.
  assert predict_main([*argv, "--timeline-window", "0.5"]) == 0
  captured = capsys.readouterr()
  assert "(the first 64 of 98 frames)" in captured.out and "warning" in captured.err


def test_probabilities_follow_the_checkpoints_label_kind(tmp_path, capsys):
  x = np.random.default_rng(4).standard_normal((64, 128)).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  training = {"model": "best", "step": 3, "metric": "accuracy", "label_kind": "ce"}
  config, params = _tiny_ast(tmp_path / "ce", source="experiments.train", training=training)
  logits = np.asarray(AST(config).apply({"params": params}, x[None]))[0].astype(np.float64)

  def probabilities(*options):
    argv = ["--checkpoint", str(tmp_path / "ce"), str(tmp_path / "x.npy"), "--json"]
    assert predict_main([*argv, "--top-k", "4", *options]) == 0
    report = json.loads(capsys.readouterr().out)
    by_class = {t["class"]: t["probability"] for t in report["results"][0]["top"]}
    return report, np.array([by_class[c] for c in range(4)])

  report, probs = probabilities()
  softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  assert report["label_kind"] == "ce" and report["probability"] == "softmax"
  np.testing.assert_allclose(probs, softmax, rtol=1e-6)
  assert probs.sum() == pytest.approx(1.0)
  report, probs = probabilities("--label-kind", "bce")  # the option overrides the checkpoint
  np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-6)
  # A checkpoint that does not say: sigmoid, with a warning naming the option.
  _tiny_ast(tmp_path / "unknown")
  argv = ["--checkpoint", str(tmp_path / "unknown"), str(tmp_path / "x.npy"), "--json"]
  assert predict_main(argv) == 0
  captured = capsys.readouterr()
  assert json.loads(captured.out)["label_kind"] == "bce"
  assert "does not record" in captured.err and "--label-kind ce" in captured.err
  # Converted AudioSet checkpoints (527 classes) are multi-label, without a warning.
  _tiny_ast(tmp_path / "audioset", num_classes=527, source="hf://x/y", source_format="ast/hf")
  argv = ["--checkpoint", str(tmp_path / "audioset"), str(tmp_path / "x.npy"), "--json"]
  assert predict_main(argv) == 0
  captured = capsys.readouterr()
  assert json.loads(captured.out)["probability"] == "sigmoid" and captured.err == ""
  assert predict.probabilities(np.array([0.0, 0.0]), "ce").tolist() == [0.5, 0.5]


def test_only_decoding_errors_are_reported_as_bad_input(checkpoint, tmp_path, monkeypatch):
  sf.write(tmp_path / "ok.wav", np.zeros(4000, np.float32), 16000)

  def buggy(path, *args, **kwargs):
    raise TypeError("a bug in the feature code")

  monkeypatch.setattr(kaldi_fbank, "audio_features", buggy)
  with pytest.raises(TypeError, match="a bug in the feature code"):
    predict_main(["--checkpoint", str(checkpoint), str(tmp_path / "ok.wav")])
