"""Dasheng through the CLIs: a tiny dasheng-package classifier -> `convert_torch dasheng` ->
`dass_jax.predict` on audio files and waveform .npy arrays, against the package's own outputs.

Checked: a 25.3 s 22.05 kHz recording (three chunks, the last partial) is decoded block by block
(soxr streaming) into the whole 16 kHz waveform, which matches `dass_jax.audio.load_audio`'s
one-shot decode to float rounding and gives the dasheng package's logits for that waveform
(1e-5 relative, fp32); its 10 s / 5 s timeline places the expected windows, the end-aligned last
one matching the package on that waveform crop; batched and 1-D waveform .npy inputs run clip by
clip in input order; an encoder without a classifier head and a too-short input exit 2 naming
the problem.
"""

import json

import numpy as np
import pytest
from numerics import assert_close

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from torch_reference import dasheng_reference

try:
  dasheng_reference.import_dasheng()
except ImportError as e:
  pytest.skip(f"PyTorch reference unavailable: {e}", allow_module_level=True)

from convert_torch.__main__ import main as convert_main
from dass_jax import audio
from dass_jax.predict import main as predict_main

CLASSES = 7


@pytest.fixture(scope="module")
def reference():
  torch.manual_seed(5)
  model = dasheng_reference.DashengClassifier(32, 2, 2, CLASSES)
  return dasheng_reference.randomize_(model, 6)


def _logits(model, waveform: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(np.asarray(waveform, np.float32)[None]))[1].numpy()


@pytest.fixture(scope="module")
def checkpoints(reference, tmp_path_factory):
  root = tmp_path_factory.mktemp("dasheng_ckpt")
  torch.save(dasheng_reference.classifier_state_dict(reference), root / "classifier.pt")
  torch.save(dasheng_reference.encoder_checkpoint(reference), root / "encoder.pt")
  for name in ("classifier", "encoder"):
    args = ["dasheng", str(root / f"{name}.pt"), str(root / name), "--num-heads", "2"]
    assert convert_main(args) == 0
  return root


def test_long_recording_and_timeline_match_dasheng(reference, checkpoints, tmp_path, capsys):
  rng = np.random.default_rng(0)
  rate, seconds = 22050, 25.3
  t = np.arange(int(rate * seconds)) / rate
  recording = 0.1 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440 * t) * (t > 12)
  sf.write(tmp_path / "long.wav", recording.astype(np.float32), rate)
  streamed = np.concatenate(list(audio.iter_audio_blocks(tmp_path / "long.wav", 30.0)))
  one_shot = audio.load_audio(tmp_path / "long.wav")
  assert streamed.shape == one_shot.shape == (404800,)
  assert np.max(np.abs(streamed - one_shot)) <= 1e-5
  argv = [
    "--checkpoint",
    str(checkpoints / "classifier"),
    str(tmp_path / "long.wav"),
    "--logits-npy",
    str(tmp_path / "logits.npy"),
    "--timeline-window",
    "10",
    "--timeline-hop",
    "5",
    "--timeline-out",
    str(tmp_path / "timeline.json"),
    "--json",
  ]
  assert predict_main(argv) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["model_type"] == "dasheng" and report["results"][0]["samples"] == 404800
  assert_close(np.load(tmp_path / "logits.npy"), _logits(reference, streamed), name="recording")
  windows = report["results"][0]["timeline"]
  assert [(w["start_s"], w["end_s"]) for w in windows] == [
    (0.0, 10.0),
    (5.0, 15.0),
    (10.0, 20.0),
    (15.0, 25.0),
    (15.3, 25.3),
  ]
  last = windows[-1]
  crop = streamed[last["start_frame"] * 160 : last["end_frame"] * 160]
  ref = _logits(reference, crop)[0]
  got = np.array([top["logit"] for top in last["top"]])
  assert [top["class"] for top in last["top"]] == list(np.argsort(-ref)[:5])
  assert_close(got, np.sort(ref)[::-1][:5], name="last window")
  saved = json.loads((tmp_path / "timeline.json").read_text())
  assert saved["inputs"][0]["frames"] == 2530 and len(saved["inputs"][0]["windows"]) == 5


def test_waveform_arrays_run_clip_by_clip(reference, checkpoints, tmp_path, capsys):
  rng = np.random.default_rng(1)
  batch = rng.standard_normal((2, 24000)).astype(np.float32)
  batch[1] *= 1e-3
  single = 0.1 * rng.standard_normal(16000).astype(np.float32)
  np.save(tmp_path / "batch.npy", batch)
  np.save(tmp_path / "single.npy", single)
  argv = [
    "--checkpoint",
    str(checkpoints / "classifier"),
    str(tmp_path / "batch.npy"),
    str(tmp_path / "single.npy"),
    "--logits-npy",
    str(tmp_path / "logits.npy"),
  ]
  assert predict_main(argv) == 0
  out = capsys.readouterr().out
  assert "batch.npy[1] (24000 samples)" in out and "single.npy[0] (16000 samples)" in out
  logits = np.load(tmp_path / "logits.npy")
  expected = np.concatenate([_logits(reference, x) for x in (batch[0], batch[1], single)])
  assert_close(logits, expected, name="npy waveforms")


def test_encoder_checkpoint_and_short_input_exit_2(checkpoints, tmp_path, capsys):
  np.save(tmp_path / "short.npy", np.zeros(300, np.float32))
  np.save(tmp_path / "fbank_like.npy", np.zeros((2, 10, 64), np.float32))
  encoder = ["--checkpoint", str(checkpoints / "encoder"), str(tmp_path / "short.npy")]
  assert predict_main(encoder) == 2
  assert "no classifier head" in capsys.readouterr().err
  classifier = ["--checkpoint", str(checkpoints / "classifier")]
  assert predict_main([*classifier, str(tmp_path / "short.npy")]) == 2
  err = capsys.readouterr().err
  assert "short.npy" in err and "at least 480 samples" in err
  assert predict_main([*classifier, str(tmp_path / "fbank_like.npy")]) == 2
  assert "expected 16 kHz samples" in capsys.readouterr().err
