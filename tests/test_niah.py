"""The audio needle-in-a-haystack study (experiments.niah) under both protocols, with tiny
random-init checkpoints, Dasheng (a waveform model) among them; the inputs themselves are tested
in tests/test_haystack.py, and here the waveforms the study hands Dasheng are rebuilt by hand."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dass_jax.checkpoint import save_converted
from dass_jax.constants import SAMPLE_RATE
from dass_jax.frontends import kaldi_fbank
from dass_jax.models import AstConfig, DashengConfig, DassConfig, build_model
from experiments import haystack as H
from experiments import niah
from experiments.configs import niah as niah_config
from experiments.metrics import compute_metrics

SR = SAMPLE_RATE


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """Tiny random DASS, AST and Dasheng (13 classes) saved as converted checkpoints.

  The two-stage DASS with the sequential scan compiles in a fraction of the time of four stages
  with the associative scan; both run any input length. The Dasheng has 8-token chunks (several
  per input, the last partial) and the batch-wide dB floor, which the study must replace by the
  per-clip one.
  """
  root = tmp_path_factory.mktemp("ckpt")
  configs = {
    "dass": DassConfig(num_classes=13, depths=(1, 1), dims=(8, 16), scan_impl="sequential"),
    # 48 frames: every NIAH input is longer, so AST always interpolates.
    "ast": AstConfig(
      num_classes=13, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=48
    ),
    # The authors' sinusoidal positions: runs every length without an extension.
    "ast_sine": AstConfig(
      num_classes=13,
      hidden_size=16,
      num_layers=1,
      num_heads=2,
      mlp_dim=32,
      max_length=48,
      pos_embed_type="sine",
    ),
    "dasheng": DashengConfig(
      num_classes=13,
      embed_dim=16,
      depth=1,
      num_heads=2,
      mlp_dim=32,
      chunk_tokens=8,
      db_floor="batch",
    ),
  }
  rng = np.random.default_rng(0)
  for name, cfg in configs.items():
    # Values drawn from the param shapes: nothing is compiled for an init.
    shapes = jax.eval_shape(
      build_model(cfg).init, jax.random.key(0), jnp.zeros(cfg.example_input_shape())
    )
    params = jax.tree.map(
      lambda s: 0.3 * rng.standard_normal(s.shape).astype(np.float32), shapes["params"]
    )
    if name == "dasheng":  # dB statistics of a plausible scale (a variance must be positive)
      params["init_bn"]["mean"] = np.full(64, -40.0, np.float32)
      params["init_bn"]["var"] = np.full(64, 400.0, np.float32)
    save_converted(root / name, cfg, params)
  return {name: str(root / name) for name in configs}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synthetic"))


def _config(protocol: str, checkpoints, synthetic_dir):
  config = niah_config.get_config("runlocal" if protocol == "paper" else "runlocal,streamed")
  config.data.synthetic.cache_dir = synthetic_dir
  config.models.dass, config.models.ast = checkpoints["dass"], checkpoints["ast"]
  config.models.dasheng = checkpoints["dasheng"]
  if protocol == "paper":
    config.models.ast_sine = checkpoints["ast_sine"]
  return config


def _run_study(protocol, checkpoints, synthetic_dir, tmp_path_factory):
  config = _config(protocol, checkpoints, synthetic_dir)
  workdir = tmp_path_factory.mktemp(f"niah_{protocol}")
  return config, workdir, niah.run(config, str(workdir))


@pytest.fixture(scope="module")
def paper_study(checkpoints, synthetic_dir, tmp_path_factory):
  return _run_study("paper", checkpoints, synthetic_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def streamed_study(checkpoints, synthetic_dir, tmp_path_factory):
  return _run_study("streamed", checkpoints, synthetic_dir, tmp_path_factory)


@pytest.fixture(params=["paper", "streamed"])
def study(request):
  return request.getfixturevalue(f"{request.param}_study")


def _runs(config, frames: int, position: float) -> bool:
  """Whether the protocol builds this pair (paper: not where the original crashes)."""
  if config.protocol == "streamed":
    return True
  try:
    H.paper_start_frame(position, frames, config.needle_frames)
  except ValueError:
    return False
  return True


def test_study_csv_rows_follow_the_config(study):
  config, workdir, rows = study
  with open(workdir / niah.CSV_FILE, newline="") as f:
    table = list(csv.DictReader(f))
  assert tuple(table[0]) == niah.CSV_FIELDS
  assert len(table) == len(rows)
  conditions = [("zeros", "")] + [(k, str(s)) for k in ("white", "babble") for s in config.snrs_db]
  frames = {float(d): niah.frames_for_duration(config.protocol, d) for d in config.durations_s}
  got = {
    (
      r["model"],
      r["haystack"],
      r["snr"],
      float(r["duration_s"]),
      int(r["frames"]),
      float(r["position"]),
    )
    for r in table
  }
  want = {
    (model, k, s, d, frames[d], float(p))
    for model, path in config.models.items()
    if path
    for k, s in conditions
    for d in frames
    for p in config.positions
    if _runs(config, frames[d], p)
  }
  assert got == want
  assert len(got) == len(table)
  assert {r["protocol"] for r in table} == {config.protocol}
  first = float(config.durations_s[0])
  for r in table:
    assert 0.0 < float(r["mAP"]) <= 1.0
    reference = np.mean(
      [
        float(x["mAP"])
        for x in table
        if float(x["duration_s"]) == first
        and (x["model"], x["haystack"], x["snr"]) == (r["model"], r["haystack"], r["snr"])
      ]
    )
    assert float(r["retained"]) == pytest.approx(float(r["mAP"]) / reference)


def test_paper_durations_are_frames_and_skip_what_the_original_cannot_run(
  checkpoints, synthetic_dir
):
  config = _config("paper", checkpoints, synthetic_dir)
  assert [niah.frames_for_duration("paper", d) for d in config.durations_s] == [98, 300]
  assert niah.frames_for_duration("streamed", 3.0) == 298
  assert not _runs(config, 300, 0.9) and _runs(config, 300, 0.25) and _runs(config, 98, 0.25)


def test_study_writes_plot_and_config(study):
  _, workdir, _ = study
  png = (workdir / niah.PLOT_FILE).read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
  assert "durations_s" in (workdir / niah.STUDY_CONFIG_FILE).read_text()


def test_zeros_reference_equals_plain_padded_input(study, checkpoints):
  """Zeros haystack, position 0: the input is the clip padded as AST/DASS evaluate it (paper:
  normalised fbank padded to needle_frames; streamed: raw zeros, normalised after), scored by
  sigmoid."""
  config, _, rows = study
  clips = niah.load_clips(config)
  module, params, _ = niah.load_for_eval(checkpoints["dass"])
  duration = config.durations_s[0 if config.protocol == "paper" else -1]
  frames = niah.frames_for_duration(config.protocol, duration)
  crop = int(config.needle_seconds * SR)
  x = np.stack(
    [
      kaldi_fbank.normalize(kaldi_fbank.pad_or_crop(kaldi_fbank.fbank(n[:crop]), frames))
      for n in clips.needles
    ]
  ).astype(np.float32)
  scores = jax.nn.sigmoid(jax.jit(module.apply)({"params": params}, x))
  expected = compute_metrics(np.asarray(scores), clips.targets)["mAP"]
  got = next(
    r["mAP"]
    for r in rows
    if r["model"] == "dass"
    and r["haystack"] == "zeros"
    and r["duration_s"] == duration
    and r["position"] == 0.0
  )
  assert got == pytest.approx(expected, abs=1e-6)


def test_paper_study_inputs_are_the_cli_inputs(paper_study, tmp_path):
  """The study's paper inputs for needle i equal `python -m experiments.haystack` with
  --seed SEED --needle-index i (white) and the written pool recording (babble)."""
  config, workdir, _ = paper_study
  clips = niah.load_clips(config)
  inputs = niah.Inputs(config, clips, str(tmp_path))
  datafile = niah.synthetic.ensure_dataset(
    config.data.synthetic.cache_dir,
    **{k: v for k, v in config.data.synthetic.to_dict().items() if k != "cache_dir"},
  ).eval_datafile
  wav = niah.data.read_datafile(datafile)[config.babble_pool + 3].wav
  for kind, extra in (("white", []), ("babble", ["--babble-wav", workdir / niah.BABBLE_FILE])):
    out = tmp_path / f"{kind}.npy"
    code = H.main(
      [
        str(a)
        for a in (
          "--needle", wav, "--total-frames", 300, "--position", 0.25, "--haystack", kind,
          "--snr-db", config.snrs_db[0], "--seed", config.seed, "--needle-index", 3,
          "--needle-frames", config.needle_frames, "--out", out, *extra,
        )
      ]
    )  # fmt: skip
    assert code == 0
    np.testing.assert_array_equal(np.load(out), inputs.build(3, kind, config.snrs_db[0], 300, 0.25))


def test_length_extension_and_budget(checkpoints):
  module, params, cfg = niah.load_for_eval(checkpoints["ast"])
  refuse = niah.Classifier("ast", module, params, cfg, "refuse")
  assert refuse.supports(46) and refuse.supports(55) and not refuse.supports(56)
  assert not refuse.supports(300)
  assert niah.Classifier("ast", module, params, cfg, "interpolate").supports(300)
  assert niah.Classifier("ast", module, params, cfg, "sine").supports(300)
  budget = niah.Classifier("ast", module, params, cfg, "interpolate", max_frames=200)
  assert budget.supports(200) and not budget.supports(201)
  with pytest.raises(ValueError, match="length_extension"):
    niah.Classifier("ast", module, params, cfg, "stretch")


def test_half_precision_scores(checkpoints):
  x = np.random.default_rng(0).standard_normal((2, 300, 128)).astype(np.float32)
  scores = {}
  for dtype in ("float32", "bfloat16"):
    module, params, cfg = niah.load_for_eval(checkpoints["dass"], dtype=dtype)
    scores[dtype] = niah.Classifier("dass", module, params, cfg, "refuse").scores(x)
  half = scores["bfloat16"]
  np.testing.assert_array_equal(half, half.astype(jnp.bfloat16).astype(np.float32))
  np.testing.assert_allclose(half, scores["float32"], atol=2e-2)
  assert not np.array_equal(half, scores["float32"])


def test_durations_must_increase_and_fit_the_needle(checkpoints, synthetic_dir):
  clips = niah.Clips(needles=[np.zeros(2 * SR)], targets=np.ones((1, 1)), babble_pool=[])
  config = _config("streamed", checkpoints, synthetic_dir)
  config.durations_s = (10.0, 2.0)
  with pytest.raises(ValueError, match="strictly increasing"):
    niah._check_durations(config, clips)
  config.durations_s = (1.0, 10.0)
  with pytest.raises(ValueError, match="shorter than the longest needle"):
    niah._check_durations(config, clips)
  config.durations_s = (2.0, 10.0)
  niah._check_durations(config, clips)
  config = _config("paper", checkpoints, synthetic_dir)
  config.durations_s = (0.97, 3.0)
  with pytest.raises(ValueError, match="shorter than the 98-frame needle"):
    niah._check_durations(config, clips)


def test_all_rows_as_needles_and_babble_needs_a_source(checkpoints, synthetic_dir, tmp_path):
  """The AudioSet paper config: every eval row a needle, babble from a recording (babble_wav)."""
  config = _config("paper", checkpoints, synthetic_dir)
  config.babble_pool, config.num_needles = 0, 0
  clips = niah.load_clips(config)
  assert len(clips.needles) == config.data.synthetic.num_eval == clips.targets.shape[0]
  with pytest.raises(ValueError, match="needs babble_wav"):
    niah.Inputs(config, clips, str(tmp_path))
  config.haystacks = ("zeros", "white")
  niah.Inputs(config, clips, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Dasheng: the waveform analogue of each input, rebuilt by hand from experiments/haystack.py's
# documented construction (only the noise sources, WhiteNoise and TiledRecording, are shared).


def _paper_waveform(config, clip, i, kind, frames, position, babble=None):
  """Paper: the clip minus its mean padded/cropped to 160 needle_frames samples, inserted at
  sample 160 int(L t) into the first 160 (L - needle_frames) samples of the paper's noise."""
  clip = clip.astype(np.float64)
  n = config.needle_frames
  needle = np.zeros(160 * n)
  kept = min(needle.size, clip.size)
  needle[:kept] = (clip - clip.mean())[:kept]
  hay = np.zeros(160 * (frames - n))
  if kind != "zeros":
    ratio = clip.size / (1 + (clip.size - 400) // 160)
    noise_len = int(ratio * (frames - n)) + 1
    if kind == "white":
      noise = H.WhiteNoise((config.seed, i)).segment(0, noise_len)
    else:
      noise = H.TiledRecording(babble).segment(0, noise_len)
    rms = np.sqrt(np.mean(clip**2))
    gain = rms / 10 ** (config.snrs_db[0] / 20) / np.sqrt(np.mean(noise**2))
    hay = (gain * noise - gain * noise.mean())[: hay.size]
  ind = 160 * int(frames * position)
  return np.concatenate([hay[:ind], needle, hay[ind:]])


def _streamed_waveform(config, clip, kind, frames, position):
  """Streamed: (L - 1) 160 + 400 samples; the cropped needle at sample 160 round(t (L - n))
  added to unit-power noise scaled to the SNR over the mean-removed needle (silence: zeros)."""
  needle = clip[: int(round(config.needle_seconds * SR))].astype(np.float64)
  out = np.zeros(160 * (frames - 1) + 400)
  if kind == "white":
    centred = needle - needle.mean()
    scale = np.sqrt(np.mean(centred**2) / 10 ** (config.snrs_db[0] / 10))
    out += scale * H.WhiteNoise(config.seed).segment(0, out.size)
  start = 160 * round(position * (frames - (1 + (needle.size - 400) // 160)))
  placed = needle[: out.size - start]
  out[start : start + placed.size] += placed
  return out


def _by_hand(config, clips, i, kind, frames, position, workdir):
  if config.protocol == "streamed":
    return _streamed_waveform(config, clips.needles[i], kind, frames, position)
  babble = None
  if kind == "babble":
    babble = niah.load_audio(str(workdir / niah.BABBLE_FILE))
  return _paper_waveform(config, clips.needles[i], i, kind, frames, position, babble)


# (haystack, duration index, position) per protocol; the streamed babble is a sum of pool clips
# (tests/test_haystack.py), left out here.
DASHENG_CONDITIONS = {
  "paper": [("zeros", 0, 0.0), ("white", 1, 0.25), ("babble", 1, 0.0)],
  "streamed": [("zeros", 1, 1.0), ("white", 0, 0.0), ("white", 1, 1.0)],
}


def test_dasheng_sees_the_documented_waveforms(study, monkeypatch):
  """The batches the study hands Dasheng hold exactly the hand-built waveforms, in needle order
  (padding rows after them), and its mAP row is that of the model run on them one at a time."""
  config, workdir, rows = study
  clips = niah.load_clips(config)
  inputs = niah.Inputs(config, clips, str(workdir))
  [dasheng] = [c for c in niah.build_classifiers(config) if c.name == "dasheng"]
  assert dasheng.input_kind == "waveform" and dasheng._config.db_floor == "clip"
  seen = []
  scores = niah.Classifier.scores
  monkeypatch.setattr(
    niah.Classifier, "scores", lambda self, x: seen.append(x.copy()) or scores(self, x)
  )
  module, params, _ = niah.load_for_eval(config.models.dasheng, db_floor="clip")
  forward = jax.jit(lambda x: jax.nn.sigmoid(module.apply({"params": params}, x)))
  count = len(clips.needles)
  for kind, d, position in DASHENG_CONDITIONS[config.protocol]:
    duration = config.durations_s[d]
    frames = niah.frames_for_duration(config.protocol, duration)
    seen.clear()
    got = niah.evaluate_condition(
      [dasheng], inputs, clips.targets, kind, config.snrs_db[0], frames, [position], 10**6
    )
    assert len(seen) == 1  # every needle in one batch
    want = np.stack(
      [_by_hand(config, clips, i, kind, frames, position, workdir) for i in range(count)]
    )
    assert seen[0].shape == (count, *H.input_shape(config.protocol, frames, "waveform"))
    np.testing.assert_allclose(seen[0], want, rtol=0, atol=1e-6)
    one_at_a_time = np.concatenate([np.asarray(forward(w[None].astype(np.float32))) for w in want])
    expected = compute_metrics(one_at_a_time, clips.targets)["mAP"]
    assert got[position]["dasheng"] == pytest.approx(expected, abs=1e-6)
    [row] = [
      r
      for r in rows
      if (r["model"], r["haystack"], r["duration_s"], r["position"])
      == ("dasheng", kind, duration, position)
    ]
    assert row["mAP"] == pytest.approx(expected, abs=1e-6)  # the study ran other batch sizes


def test_dasheng_batch_floor_would_couple_the_needles(checkpoints):
  """Why the study replaces db_floor: with the checkpoint's 'batch' floor a needle's score
  depends on the loudest needle of its batch."""
  module, params, cfg = niah.load_for_eval(checkpoints["dasheng"])
  assert cfg.db_floor == "batch"
  rng = np.random.default_rng(1)
  quiet = np.zeros((1, SR), np.float32)
  quiet[0, : SR // 2] = 1e-3 * rng.standard_normal(SR // 2)
  loud = rng.standard_normal((1, SR)).astype(np.float32)
  alone = module.apply({"params": params}, quiet)
  batched = module.apply({"params": params}, np.concatenate([quiet, loud]))[:1]
  assert not np.allclose(alone, batched, atol=1e-4)
  clip_module, _, _ = niah.load_for_eval(checkpoints["dasheng"], db_floor="clip")
  np.testing.assert_allclose(
    clip_module.apply({"params": params}, np.concatenate([quiet, loud]))[:1],
    clip_module.apply({"params": params}, quiet),
    atol=1e-5,
  )


def test_length_adapters_are_for_fbank_models(checkpoints, monkeypatch):
  """Adapters resize position embeddings over frames; a waveform model's input is in samples."""
  module, params, cfg = niah.load_for_eval(checkpoints["dasheng"])
  assert niah.Classifier("dasheng", module, params, cfg, "refuse").supports(10**6)
  monkeypatch.setitem(niah.LENGTH_ADAPTERS, "dasheng", lambda *args: None)
  with pytest.raises(ValueError, match="length adapters resize fbank models"):
    niah.Classifier("dasheng", module, params, cfg, "refuse")
