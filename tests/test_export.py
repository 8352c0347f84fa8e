"""`python -m dass_jax.export` and `python -m dass_jax.predict --onnx` on tiny models of all four.

Checked:
  * acceptance: tiny DASS, AST, AuM and Dasheng checkpoints exported to ONNX (run in
    onnxruntime) and to StableHLO (deserialized and run in a fresh process) give the logits of our
    JAX forward (the checkpoint's own config, scan 'auto' = chunked on CPU) within 1e-5 relative,
    on random input and on a real recording (Python's own test recording of a plucked string,
    11.025 kHz stereo, through our fbank / waveform loading);
  * the ONNX metadata (model type, input kind, lengths, class names) and one --dynamic graph for
    any batch and number of frames (DASS, ONNX and StableHLO);
  * `python -m dass_jax.predict --onnx` with JAX made unimportable gives the same top classes and
    logits (1e-5) as `--checkpoint` on the shared fixture input and on the recording, timeline
    included;
  * bad options and files exit 2 naming the problem.

Tolerance 1e-5 relative (the issue's): both sides are float32; the exported scans sum in another
order than the chunked scan (measured 1e-7 to 1e-6). One exception, measured and stated: Dasheng on
the recording in ONNX, held to 1e-4. The recording is short and zero-padded to the graph's 1 s, and
the quiet bins of its spectrum reach the log-mel within Dasheng's 120 dB range, where two float32
FFTs disagree: in JAX alone, XLA's rfft against a float32 DFT matmul moves these logits by 4.1e-5
(1.6e-7 on white noise). onnxruntime's DFT lands at 2.7e-5.
"""

import dataclasses
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")
sf = pytest.importorskip("soundfile")

import jax
import jax.numpy as jnp
from numerics import rel_err

from dass_jax import export, models, predict
from dass_jax.checkpoint import load_model, save_converted
from dass_jax.onnx_model import OnnxModel

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT.parent / "shared" / "fixtures" / "dass_torch" / "dass_tiny_golden.npz"
RECORDING = Path(sysconfig.get_paths()["stdlib"]) / "test" / "audiodata" / "pluck-pcm16.wav"
REL_TOL = 1e-5
QUIET_SPECTRUM_TOL = 1e-4  # Dasheng's ONNX DFT on the recording (module docstring)
FRAMES = 100  # fixed-length exports of DASS and Dasheng (1 s)

CONFIGS = {
  "dass": models.DassConfig(num_classes=7, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
  "ast": models.AstConfig(
    num_classes=5, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=64
  ),
  "aum": models.AumConfig(num_classes=5, embed_dim=16, depth=1, max_length=64),
  "dasheng": models.DashengConfig(num_classes=5, embed_dim=16, depth=1, num_heads=2, mlp_dim=32),
}


def _perturbed(params, seed):
  """Random init with every leaf nudged, so that biases and norms are not all 0 / 1."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  leaves = [p + 0.2 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
  return jax.tree.unflatten(tree, leaves)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpt")
  out = {}
  for i, (name, config) in enumerate(CONFIGS.items()):
    model = models.build_model(config)
    params = jax.jit(model.init)(jax.random.PRNGKey(i), jnp.zeros(config.example_input_shape()))
    save_converted(root / name, config, _perturbed(params["params"], i))
    out[name] = root / name
  return out


@pytest.fixture(scope="module")
def recording():
  if not RECORDING.is_file():
    pytest.skip(f"{RECORDING} (Python's test recording) is not installed with this Python")
  return RECORDING


def _jax_logits(folder, x):
  model, params, _ = load_model(folder)
  return np.asarray(jax.jit(lambda p, v: model.apply({"params": p}, v))(params, x))


def _inputs(name, recording, layout):
  """Random input and the recording, each as the exported graph's input (batch 1)."""
  info = predict.model_info(CONFIGS[name])
  rng = np.random.default_rng(0)
  shape = (1, *(50 if d is None else d for d in layout.shape()[1:]))
  if info.input_kind == "waveform":
    random = 0.1 * rng.standard_normal(shape).astype(np.float32)
  else:
    random = rng.standard_normal(shape).astype(np.float32)
  real = predict.model_input(predict.load_input(recording, info), info, from_audio=True)
  if real.shape != shape:  # a fixed-length DASS / Dasheng export
    real = predict.model_input(real, dataclass_with_length(info, layout.frames), from_audio=True)
  return {"random": random, "recording": real}


def dataclass_with_length(info, frames):
  return dataclasses.replace(info, fixed_length=frames)


def _export(folder, fmt, out, *extra):
  status = export.main(["--checkpoint", str(folder), "--format", fmt, "--out", str(out), *extra])
  assert status == 0 and Path(out).is_file()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_matches_jax_on_random_input_and_a_recording(name, checkpoints, recording, tmp_path):
  frames = [] if name in ("ast", "aum") else ["--frames", str(FRAMES)]
  _export(checkpoints[name], "onnx", tmp_path / "m.onnx", *frames)
  onnx_model = OnnxModel(tmp_path / "m.onnx")
  config = export.inference_config(CONFIGS[name])
  layout = export.input_layout(config, None if not frames else FRAMES, False)
  assert onnx_model.info == dataclass_with_length(predict.model_info(CONFIGS[name]), layout.frames)
  for what, x in _inputs(name, recording, layout).items():
    ref = _jax_logits(checkpoints[name], x)
    out = onnx_model(x)
    assert out.shape == ref.shape == (1, CONFIGS[name].num_classes)
    tol = QUIET_SPECTRUM_TOL if (name, what) == ("dasheng", "recording") else REL_TOL
    assert rel_err(out, ref) < tol, (name, what, rel_err(out, ref))


_FRESH_PROCESS = """
import json, sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
inputs = np.load(sys.argv[2])
np.savez(sys.argv[3], **{k: np.asarray(exported.call(inputs[k])) for k in inputs.files})
print(json.dumps([str(s) for s in exported.in_avals]))
"""


@pytest.mark.parametrize("name", list(CONFIGS))
def test_stablehlo_matches_jax_in_a_fresh_process(name, checkpoints, recording, tmp_path):
  dynamic = name != "dasheng"
  _export(checkpoints[name], "stablehlo", tmp_path / "m.shlo", *(["--dynamic"] if dynamic else []))
  props = json.loads((tmp_path / "m.shlo.json").read_text())
  assert props["dass_jax.model_type"] == name
  config = export.inference_config(CONFIGS[name])
  layout = export.input_layout(config, None, dynamic)
  inputs = _inputs(name, recording, layout)
  if name == "dass":  # one graph, any batch and length
    inputs["batch2_37_frames"] = np.random.default_rng(1).standard_normal((2, 37, 128), np.float32)
  np.savez(tmp_path / "in.npz", **inputs)
  run = subprocess.run(
    [sys.executable, "-c", _FRESH_PROCESS, tmp_path / "m.shlo", tmp_path / "in.npz"]
    + [tmp_path / "out.npz"],
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == 0, run.stderr
  outs = np.load(tmp_path / "out.npz")
  for what, x in inputs.items():
    ref = _jax_logits(checkpoints[name], x)
    assert rel_err(outs[what], ref) < REL_TOL, (name, what)


def _env() -> dict[str, str]:
  path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
  return {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def onnx_files(checkpoints, tmp_path_factory):
  """The --dynamic DASS graph and the AST graph, written by the CLI in a fresh process.

  (In this pytest process, after the exports above, jax2onnx's gather lowering once met a symbolic
  slice size in the --dynamic DASS graph; a fresh process, as a user runs it, never did.)
  """
  root = tmp_path_factory.mktemp("onnx")
  for name, extra in (("dass", ["--dynamic"]), ("ast", [])):
    run = subprocess.run(
      [sys.executable, "-m", "dass_jax.export", "--checkpoint", str(checkpoints[name])]
      + ["--format", "onnx", "--out", str(root / f"{name}.onnx"), *extra],
      cwd=REPO_ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["input_shape"][0] == "dynamic" or name == "ast"
  return {"dass": root / "dass.onnx", "ast": root / "ast.onnx"}


def test_dynamic_dass_onnx_takes_any_batch_and_length(checkpoints, onnx_files):
  onnx_model = OnnxModel(onnx_files["dass"])
  assert onnx_model.info.fixed_length is None and onnx_model.batch == 0
  for batch, frames in ((1, 16), (3, 75)):
    x = np.random.default_rng(frames).standard_normal((batch, frames, 128), np.float32)
    assert rel_err(onnx_model(x), _jax_logits(checkpoints["dass"], x)) < REL_TOL


# Blocks every import of jax / jaxlib / flax in the child, then runs the predict CLI there.
_WITHOUT_JAX = """
import runpy, sys
class Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("jax", "jaxlib", "flax", "orbax"):
      raise ImportError(f"{name} is blocked: this run must not import JAX")
sys.meta_path.insert(0, Blocker())
sys.argv = ["predict"] + sys.argv[1:]
try:
  runpy.run_module("dass_jax.predict", run_name="__main__")
finally:
  assert not any(m.split(".")[0] in ("jax", "flax") for m in sys.modules), "JAX was imported"
"""


def _predict_without_jax(*args):
  return subprocess.run(
    [sys.executable, "-c", _WITHOUT_JAX, *map(str, args)],
    cwd=REPO_ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_predict_onnx_without_jax_gives_the_checkpoints_top_classes(
  checkpoints, onnx_files, recording, tmp_path, capsys
):
  if not FIXTURE.is_file():
    pytest.skip(f"shared fixture {FIXTURE} not found")
  np.save(tmp_path / "fixture.npy", np.load(FIXTURE)["x"][:1, :64])
  inputs = [tmp_path / "fixture.npy", recording]
  options = ["--top-k", "3", "--json", "--timeline-window", "0.2", "--timeline-hop", "0.1"]
  for name in ("dass", "ast"):
    capsys.readouterr()
    run = _predict_without_jax(
      "--onnx", onnx_files[name], *inputs, *options, "--logits-npy", tmp_path / "o.npy"
    )
    assert run.returncode == 0, run.stderr
    ours = json.loads(run.stdout)
    assert (
      predict.main(
        ["--checkpoint", str(checkpoints[name]), *map(str, inputs), *options]
        + ["--logits-npy", str(tmp_path / "j.npy")]
      )
      == 0
    )
    theirs = json.loads(capsys.readouterr().out)
    assert ours["model_type"] == theirs["model_type"] == name
    for a, b in zip(ours["results"], theirs["results"], strict=True):
      assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
      assert [t["name"] for t in a["top"]] == [t["name"] for t in b["top"]]
      tops = lambda r: [[t["class"] for t in w["top"]] for w in r["timeline"]]
      assert tops(a) == tops(b) and len(a["timeline"]) > 1
    assert rel_err(np.load(tmp_path / "o.npy"), np.load(tmp_path / "j.npy")) < REL_TOL


def test_bad_options_and_files_exit_2(checkpoints, onnx_files, tmp_path, capsys):
  def export_error(*args):
    assert export.main(list(map(str, args))) == 2
    return capsys.readouterr().err

  out = ["--format", "onnx", "--out", tmp_path / "x.onnx"]
  assert "max_length=64" in export_error("--checkpoint", checkpoints["ast"], *out, "--frames", 50)
  assert "fixed lengths only" in export_error(
    "--checkpoint", checkpoints["dasheng"], *out, "--dynamic"
  )
  assert "not found" in export_error("--checkpoint", tmp_path / "missing", *out)
  assert "does not exist" in export_error(
    "--checkpoint", checkpoints["dass"], "--format", "onnx", "--out", tmp_path / "no" / "x.onnx"
  )
  assert not (tmp_path / "x.onnx").exists()
  (tmp_path / "junk.onnx").write_bytes(b"not a model")
  np.save(tmp_path / "short.npy", np.zeros((1, 10, 128), np.float32))
  assert predict.main(["--onnx", str(tmp_path / "junk.onnx"), str(tmp_path / "short.npy")]) == 2
  assert "not a readable ONNX model" in capsys.readouterr().err
  assert predict.main(["--onnx", str(onnx_files["ast"]), str(tmp_path / "short.npy")]) == 2
  assert "does not fit the exported graph" in capsys.readouterr().err
