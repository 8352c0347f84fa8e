"""Long-audio prediction: streamed features and the sliding-window timeline of `dass_jax.predict`.

Checked here:
  * window placement (`timeline.window_bounds`) for lengths below, at, just past and well past one
    window, with hop = window and hop < window: exact [start, end) rows, plus the invariants for
    a sweep of lengths (equal lengths, starts on the hop grid but the end-aligned last one, last
    row ends at the recording's end, every frame covered, no duplicate windows);
  * seconds -> 10 ms frames, with non-positive, non-finite and fractional-frame values refused;
  * streamed fbank (`kaldi_fbank.stream_fbank`) = `kaldi_fbank.fbank` of the whole waveform, for
    block sizes around the 400-sample window / 160-sample shift and recordings shorter than one
    frame; streamed audio features (`kaldi_fbank.audio_features`) of 16 kHz and 22.05 kHz files =
    the normalised fbank of the whole decoded file (`audio.load_audio`);
  * every window's logits = the model run on that crop alone, with a batch size that forces the
    filler rows of the last batch (DASS), and on the crop padded to max_length (AST);
  * the CLI: `--timeline-window/--timeline-hop` writes JSON and CSV that agree with each other and
    with the model on each crop; a file shorter than one window gives one window equal to the
    whole-file prediction; bad options and inputs are refused naming the problem (exit 2).
"""

import csv
import json

import jax
import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from numerics import max_rel_err

from dass_jax import timeline
from dass_jax.audio import load_audio
from dass_jax.checkpoint import save_converted
from dass_jax.frontends import kaldi_fbank
from dass_jax.models import AST, DASS, AstConfig, DassConfig
from dass_jax.predict import main as predict_main

NUM_CLASSES = 6
CONFIG = DassConfig(
  num_classes=NUM_CLASSES, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), scan_impl="sequential"
)
AST_CONFIG = AstConfig(
  num_classes=3, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=64
)
REL_TOL = 1e-5


def random_params(model, seed: int):
  """Params of `model` drawn as 0.3 N(0, 1) (shapes from `eval_shape`, so nothing compiles)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 64, 128), np.float32))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes["params"]
  )


@pytest.fixture(scope="module")
def dass(tmp_path_factory):
  """(checkpoint folder, jitted apply, params) of a tiny random DASS with 6 classes."""
  model = DASS(CONFIG)
  params = random_params(model, 3)
  folder = save_converted(tmp_path_factory.mktemp("dass") / "ckpt", CONFIG, params)
  apply_fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
  return folder, apply_fn, params


def _wav(path, seconds: float, sample_rate: int = 16000, seed: int = 0):
  """A chirp plus noise, float32 wav; returns the path."""
  n = int(round(seconds * sample_rate))
  t = np.arange(n) / sample_rate
  rng = np.random.default_rng(seed)
  x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(n)
  sf.write(path, x.astype(np.float32), sample_rate, subtype="FLOAT")
  return path


@pytest.mark.parametrize(
  "frames, window, hop, expected",
  [
    (1, 1000, 100, [(0, 1)]),
    (500, 1000, 100, [(0, 500)]),
    (1000, 1000, 100, [(0, 1000)]),
    (1001, 1000, 100, [(0, 1000), (1, 1001)]),
    (1100, 1000, 100, [(0, 1000), (100, 1100)]),
    (1150, 1000, 100, [(0, 1000), (100, 1100), (150, 1150)]),
    (3000, 1000, 1000, [(0, 1000), (1000, 2000), (2000, 3000)]),
    (2500, 1000, 1000, [(0, 1000), (1000, 2000), (1500, 2500)]),
    (7, 3, 2, [(0, 3), (2, 5), (4, 7)]),
  ],
)
def test_window_bounds_exact(frames, window, hop, expected):
  bounds = timeline.window_bounds(frames, window, hop)
  assert bounds.dtype == np.int64
  assert [tuple(row) for row in bounds.tolist()] == expected


@pytest.mark.parametrize("window, hop", [(1000, 100), (1000, 1000), (300, 7), (5, 5)])
def test_window_bounds_invariants(window, hop):
  for frames in list(range(1, 40)) + [window - 1, window, window + 1, 2 * window + 3, 5123]:
    bounds = timeline.window_bounds(frames, window, hop)
    sizes = bounds[:, 1] - bounds[:, 0]
    assert (sizes == min(window, frames)).all()
    assert bounds[0, 0] == 0 and bounds[-1, 1] == frames
    assert (np.diff(bounds[:, 0]) > 0).all()
    assert (bounds[:-1, 0] % hop == 0).all()
    covered = np.zeros(frames, bool)
    for start, end in bounds:
      covered[start:end] = True
    assert covered.all()
    expected_count = (
      1 if frames <= window else (frames - window) // hop + 1 + ((frames - window) % hop != 0)
    )
    assert len(bounds) == expected_count


def test_window_bounds_rejects_bad_sizes():
  with pytest.raises(ValueError, match="longer than the window"):
    timeline.window_bounds(100, 10, 11)
  with pytest.raises(ValueError, match=">= 1"):
    timeline.window_bounds(0, 10, 5)


def test_seconds_to_frames():
  assert timeline.seconds_to_frames(10, "w") == 1000
  assert timeline.seconds_to_frames(0.01, "w") == 1
  assert timeline.seconds_to_frames(2.37, "w") == 237
  for bad, message in [
    (0.015, "whole number of 10 ms frames"),
    (0, "positive"),
    (-1, "positive"),
    (float("nan"), "positive"),
    (float("inf"), "positive"),
  ]:
    with pytest.raises(ValueError, match=message):
      timeline.seconds_to_frames(bad, "--timeline-hop")


@pytest.mark.parametrize(
  "samples, block",
  [
    (samples, block)
    for samples in (150, 399, 400, 401, 560, 16000 * 3 + 123)
    for block in (1, 159, 160, 240, 399, 400, 4001)
    if samples < 20000 or block > 1
  ],
)
def test_stream_fbank_equals_whole_fbank(samples, block):
  rng = np.random.default_rng(samples + block)
  x = (0.3 * rng.standard_normal(samples) + 0.2).astype(np.float32)  # with a DC offset
  whole = kaldi_fbank.fbank(x)
  streamed = kaldi_fbank.stream_fbank(x[i : i + block] for i in range(0, samples, block))
  assert streamed.shape == whole.shape == (max(1, 1 + (samples - 400) // 160), 128)
  np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-6)


def test_stream_fbank_rejects_empty_and_integer_blocks():
  with pytest.raises(ValueError, match="no audio samples"):
    kaldi_fbank.stream_fbank([np.zeros(0, np.float32)])
  with pytest.raises(ValueError, match="1-D float"):
    kaldi_fbank.stream_fbank([np.zeros(500, np.int16)])


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_streamed_audio_features_equal_whole_file_features(tmp_path, sample_rate):
  path = _wav(tmp_path / "clip.wav", 7.3, sample_rate)
  whole = kaldi_fbank.normalize(kaldi_fbank.fbank(load_audio(path)))
  streamed = kaldi_fbank.audio_features(path, block_seconds=0.77)
  assert streamed.dtype == np.float32 and streamed.shape == whole.shape
  np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-6)


def test_window_logits_equal_the_model_on_each_crop(dass):
  _, apply_fn, params = dass
  x = np.random.default_rng(5).standard_normal((730, 128)).astype(np.float32)
  bounds = timeline.window_bounds(730, 200, 70)
  assert len(bounds) == 9
  logits = timeline.window_logits(apply_fn, params, x, bounds, batch_size=4)
  assert logits.shape == (9, NUM_CLASSES)
  ref = np.concatenate([np.asarray(apply_fn(params, x[None, s:e])) for s, e in bounds])
  assert max_rel_err(logits, ref) <= REL_TOL
  assert np.abs(logits - logits[0]).max() > 1e-3  # the windows differ, so a mix-up would show


def test_ast_windows_are_padded_to_max_length():
  model = AST(AST_CONFIG)
  params = random_params(model, 4)
  x = np.random.default_rng(6).standard_normal((130, 128)).astype(np.float32)
  bounds = timeline.window_bounds(130, 50, 40)
  pad = float(kaldi_fbank.normalize(np.zeros(1, np.float32))[0])
  logits = timeline.window_logits(
    lambda p, b: model.apply({"params": p}, b),
    params,
    x,
    bounds,
    batch_size=8,
    length=64,
    pad_value=pad,
  )
  crops = [np.pad(x[s:e], ((0, 64 - (e - s)), (0, 0)), constant_values=pad) for s, e in bounds]
  ref = np.asarray(model.apply({"params": params}, np.stack(crops)))
  np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-6)


def test_window_logits_rejects_unequal_or_outside_bounds(dass):
  _, apply_fn, params = dass
  x = np.zeros((100, 128), np.float32)
  with pytest.raises(ValueError, match="equal-length"):
    timeline.window_logits(apply_fn, params, x, np.array([[0, 50], [40, 100], [60, 100]]), 2)
  with pytest.raises(ValueError, match="equal-length"):
    timeline.window_logits(apply_fn, params, x, np.array([[80, 130]]), 2)


def test_cli_writes_json_and_csv_matching_the_model(dass, tmp_path, capsys):
  folder, apply_fn, params = dass
  path = _wav(tmp_path / "long.wav", 5.55)
  argv = [
    "--checkpoint",
    str(folder),
    str(path),
    "--timeline-window",
    "2",
    "--timeline-hop",
    "0.5",
    "--top-k",
    "3",
    "--batch-size",
    "3",
    "--timeline-out",
    str(tmp_path / "t.json"),
    "--timeline-out",
    str(tmp_path / "t.csv"),
    "--json",
  ]
  assert predict_main(argv) == 0
  printed = json.loads(capsys.readouterr().out)
  report = json.loads((tmp_path / "t.json").read_text())
  feats = kaldi_fbank.audio_features(path)
  frames = len(feats)
  assert frames == 1 + (len(sf.read(path)[0]) - 400) // 160 == 553
  bounds = timeline.window_bounds(frames, 200, 50)
  assert (report["window_s"], report["hop_s"], report["top_k"]) == (2.0, 0.5, 3)
  assert report["frames_per_second"] == 100
  [item] = report["inputs"]
  assert item["input"] == str(path) and item["frames"] == frames
  windows = item["windows"]
  assert printed["results"][0]["timeline"] == windows
  assert [(w["start_frame"], w["end_frame"]) for w in windows] == [tuple(b) for b in bounds]
  assert windows[-1]["start_s"] == pytest.approx(3.53) and windows[-1]["end_s"] == 5.53
  ref = np.concatenate([np.asarray(apply_fn(params, feats[None, s:e])) for s, e in bounds])
  for window, row in zip(windows, ref):
    assert [t["class"] for t in window["top"]] == list(np.argsort(-row)[:3])
    got = np.array([t["logit"] for t in window["top"]])
    assert max_rel_err(got, np.sort(row)[::-1][:3]) <= REL_TOL
  with open(tmp_path / "t.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == timeline.CSV_FIELDS
  assert len(rows) == 3 * len(windows)
  for row in rows:
    top = windows[int(row["window"])]["top"][int(row["rank"]) - 1]
    assert row["input"] == str(path) and int(row["class"]) == top["class"]
    assert float(row["probability"]) == pytest.approx(top["probability"], rel=1e-5)
    assert float(row["start_s"]) == pytest.approx(windows[int(row["window"])]["start_s"])


def test_cli_file_shorter_than_one_window(dass, tmp_path, capsys):
  folder, _, _ = dass
  path = _wav(tmp_path / "short.wav", 0.8, seed=2)
  argv = [
    "--checkpoint",
    str(folder),
    str(path),
    "--timeline-window",
    "10",
    "--timeline-hop",
    "1",
    "--logits-npy",
    str(tmp_path / "l.npy"),
    "--timeline-out",
    str(tmp_path / "t.json"),
  ]
  assert predict_main(argv) == 0
  text = capsys.readouterr().out
  assert "timeline: 1 windows" in text
  [window] = json.loads((tmp_path / "t.json").read_text())["inputs"][0]["windows"]
  assert (window["start_frame"], window["end_frame"]) == (0, 78)
  whole = np.load(tmp_path / "l.npy")[0]
  assert window["top"][0]["class"] == int(np.argmax(whole))
  assert window["top"][0]["logit"] == pytest.approx(float(whole.max()), rel=1e-5)


@pytest.mark.parametrize(
  "options, message",
  [
    (["--timeline-hop", "1"], "need --timeline-window"),
    (["--timeline-out", "x.json"], "need --timeline-window"),
    (["--timeline-window", "1", "--timeline-hop", "2"], "longer than --timeline-window"),
    (["--timeline-window", "0.015"], "whole number of 10 ms frames"),
    (["--timeline-window", "-3"], "positive number of seconds"),
    (["--timeline-window", "nan"], "positive number of seconds"),
    (["--timeline-window", "2", "--timeline-hop", "0"], "--timeline-hop must be a positive number"),
    (["--timeline-window", "2", "--timeline-out", "t.txt"], "must end in .json or .csv"),
    (["--timeline-window", "2", "--timeline-out", "/no/such/dir/t.csv"], "does not exist"),
  ],
)
def test_cli_rejects_bad_timeline_options(tmp_path, capsys, options, message):
  clip = tmp_path / "clip.npy"
  np.save(clip, np.zeros((40, 128), np.float32))
  with pytest.raises(SystemExit) as exit_info:
    predict_main(["--checkpoint", str(tmp_path), str(clip), *options])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_cli_rejects_batched_input_and_too_long_ast_window(dass, tmp_path, capsys):
  folder, _, _ = dass
  batched = tmp_path / "batched.npy"
  np.save(batched, np.zeros((2, 300, 128), np.float32))
  assert predict_main(["--checkpoint", str(folder), str(batched), "--timeline-window", "1"]) == 2
  err = capsys.readouterr().err
  assert "batched.npy" in err and "one recording per input" in err and "batch of 2" in err

  save_converted(tmp_path / "ast", AST_CONFIG, random_params(AST(AST_CONFIG), 4))
  clip = tmp_path / "clip.npy"
  np.save(clip, np.zeros((300, 128), np.float32))
  assert (
    predict_main(["--checkpoint", str(tmp_path / "ast"), str(clip), "--timeline-window", "0.65"])
    == 2
  )
  err = capsys.readouterr().err
  assert "--timeline-window 0.65 s is 65 frames" in err and "max_length=64" in err
