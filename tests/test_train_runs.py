"""End-to-end runs of `python -m experiments.train` in subprocesses (tiny AST, tiny data).

Each run is a fresh process so that XLA_FLAGS (simulated CPU devices) and
jax.distributed take effect; runs that do not depend on each other start together. A shared
persistent compilation cache keeps the repeated compiles cheap.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import chex
import numpy as np
import pytest

from dass_jax.data import synthetic

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300

CONFIG = textwrap.dedent('''\
    """Tiny AST on a tiny synthetic dataset, for the tests."""
    import ml_collections
    from experiments.configs import common


    def get_config(arg=None):
      c = common.base_config()
      c.model_type = "ast"
      c.model = ml_collections.ConfigDict({{"hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                           "mlp_dim": 32, "max_length": 98}})
      c.batch_size = 8
      c.total_steps = 3
      for section, datafile in ((c.input, {train!r}), (c.evals.input, {eval!r})):
        section.datafile, section.label_csv = datafile, {labels!r}
        section.target_frames = 98
        section.read_threads = 1
      c.input.freqm, c.input.timem, c.input.mixup = 0, 0, 0.0
      c.evals.batch_size = 8
      c.optim.lr = 1e-3
      c.optim.warmup_steps = 0
      c.log_every_steps = 1
      c.checkpoint_every_steps = 1
      c.fsdp_min_size = 0
      c.select.model = "last"  # exports compared between runs: the last step's params
      return c
    ''')


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("train_runs")
  ds = synthetic.ensure_dataset(root / "data", num_train=16, num_eval=8, clip_seconds=1.0)
  config = root / "tiny_config.py"
  config.write_text(
    CONFIG.format(train=ds.train_datafile, eval=ds.eval_datafile, labels=ds.label_csv)
  )
  return {"root": root, "config": str(config), "dataset": ds, "cache": str(root / "xla")}


def _start(env, workdir, *overrides, devices=1, log=None):
  cmd = [
    sys.executable,
    "-m",
    "experiments.train",
    "--config",
    env["config"],
    "--workdir",
    str(workdir),
    "--compilation_cache_dir",
    env["cache"],
    *overrides,
  ]
  proc_env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": str(REPO),
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
  }
  out = open(log or f"{workdir}.log", "w")  # noqa: SIM115  (the child process writes it)
  proc = subprocess.Popen(cmd, cwd=REPO, env=proc_env, stdout=out, stderr=subprocess.STDOUT)
  proc.log_path = log or f"{workdir}.log"
  return proc


def _finish(proc, expect_rc=0):
  rc = proc.wait(timeout=TIMEOUT)
  log = Path(proc.log_path).read_text()
  assert rc == expect_rc, f"exit code {rc}, log:\n{log[-4000:]}"
  return log


def _run(env, workdir, *overrides, **kwargs):
  return _finish(_start(env, workdir, *overrides, **kwargs))


def _losses(workdir, keys=("train/loss",)):
  rows = [json.loads(row) for row in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: [r[k] for k in keys] for r in rows if keys[0] in r}


def _params(folder):
  import jax
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(Path(folder).absolute())
  return {
    jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def _assert_exports_close(workdir_a, workdir_b, atol):
  """The exported params of two train work directories agree to `atol` (max abs)."""
  chex.assert_trees_all_close(
    _params(workdir_a / "export" / "params"),
    _params(workdir_b / "export" / "params"),
    atol=atol,
    rtol=0,
  )


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def parallel_runs(env):
  """Three steps of the same run on 1 device, 8 devices (data / fsdp) and 2 processes.

  The training datafile names one unreadable wav, which every run must skip the same way.
  """
  root, ds = env["root"], env["dataset"]
  data = json.loads(Path(ds.train_datafile).read_text())
  bad_wav = root / "broken.wav"
  bad_wav.write_bytes(b"RIFF not really a wav file")
  data["data"][3]["wav"] = str(bad_wav)
  datafile = Path(ds.root) / "train_with_bad.json"  # Wav paths are relative to its folder.
  datafile.write_text(json.dumps(data))
  bad = f"--config.input.datafile={datafile}"
  port = _free_port()
  procs = {
    "one": _start(env, root / "one", bad),
    "dp8": _start(env, root / "dp8", bad, "--config.mesh=(('data', -1), ('fsdp', 1))", devices=8),
    "fsdp8": _start(
      env, root / "fsdp8", bad, "--config.mesh=(('data', 1), ('fsdp', -1))", devices=8
    ),
  }
  for i in range(2):
    procs[f"proc{i}"] = _start(
      env,
      root / "two_proc",
      bad,
      f"--coordinator_address=localhost:{port}",
      "--num_processes=2",
      f"--process_id={i}",
      log=root / f"proc{i}.log",
    )
  return {name: _finish(p) for name, p in procs.items()}


def test_one_vs_eight_devices_data_and_fsdp(env, parallel_runs):
  root = env["root"]
  assert "'fsdp': 8" in parallel_runs["fsdp8"] and "'data': 8" in parallel_runs["dp8"]
  ref = _losses(root / "one")
  assert sorted(ref) == [1, 2, 3]
  for name in ("dp8", "fsdp8"):
    other = _losses(root / name)
    assert sorted(other) == sorted(ref)
    for step in ref:
      assert other[step][0] == pytest.approx(ref[step][0], abs=1e-5), (name, step)
    _assert_exports_close(root / "one", root / name, atol=1e-5)
  # Losses went down: the step updates the model.
  assert ref[3][0] < ref[1][0]
  # The resolved config, TensorBoard events, per-class AP and results are written.
  one = root / "one"
  assert json.loads((one / "train_config.json").read_text())["batch_size"] == 8
  assert any((one / "tensorboard").iterdir())
  per_class = json.loads((one / "eval" / "valid_last.json").read_text())["per_class"]
  assert len(per_class) == env["dataset"].num_classes
  assert set(json.loads((one / "results.json").read_text())["valid"]) >= {
    "mAP",
    "mAUC",
    "d_prime",
    "accuracy",
  }


def test_unreadable_audio_is_skipped_and_counted(env, parallel_runs):
  lines = (env["root"] / "one" / "metrics.jsonl").read_text().splitlines()
  rows = [json.loads(line) for line in lines]
  skipped = [r["train/skipped_audio"] for r in rows if "train/skipped_audio" in r]
  assert skipped[-1] >= 1
  assert "broken.wav" in parallel_runs["one"]


def test_two_processes_agree_with_one(env, parallel_runs):
  root = env["root"]
  finals = [
    next(row for row in parallel_runs[f"proc{i}"].splitlines() if "valid_last at" in row).split(
      "valid_last at"
    )[1]
    for i in range(2)
  ]
  assert finals[0] == finals[1]
  assert "2 process(es)" in parallel_runs["proc0"]
  two, one = _losses(root / "two_proc"), _losses(root / "one")
  assert sorted(two) == [1, 2, 3]
  for step in one:
    assert two[step][0] == pytest.approx(one[step][0], abs=1e-5)


def _latest_checkpoint(workdir):
  folder = Path(workdir) / "checkpoints"
  steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
  return max(steps, default=None)


def test_kill_and_resume_matches_uninterrupted(env):
  root = env["root"]
  args = ["--config.total_steps=12", "--config.checkpoint_every_steps=4"]
  full = _start(env, root / "full", *args)
  killed = _start(env, root / "killed", *args)
  deadline = time.time() + TIMEOUT
  while (_latest_checkpoint(root / "killed") or 0) < 4:
    assert killed.poll() is None, Path(f"{root / 'killed'}.log").read_text()[-3000:]
    assert time.time() < deadline
    time.sleep(0.02)
  os.kill(killed.pid, signal.SIGKILL)
  killed.wait()
  stopped_at = _latest_checkpoint(root / "killed")
  assert stopped_at < 12, "the run finished before it could be killed"
  log = _run(env, root / "killed", *args)
  assert f"resuming from checkpoint step {stopped_at}" in log
  _finish(full)
  _assert_exports_close(root / "full", root / "killed", atol=1e-6)
  assert _losses(root / "full")[12] == pytest.approx(_losses(root / "killed")[12], abs=1e-6)
  # Rerunning a finished run restores the last step and changes nothing.
  log = _run(env, root / "full", *args)
  assert "resuming from checkpoint step 12" in log


def test_online_and_cached_teacher_give_the_same_student(env):
  root = env["root"]
  _run(env, root / "teacher", "--config.total_steps=4", "--config.seed=1")
  assert (root / "teacher" / "export" / "config.json").is_file()
  cache = root / "teacher_logits.npy"
  common = [
    "--config.total_steps=3",
    f"--config.teacher.path={root / 'teacher'}",
    "--config.loss.kd_weight=0.5",
  ]
  online = _start(env, root / "online", *common)
  cached = _start(env, root / "cached", *common, f"--config.teacher.cache={cache}")
  _finish(online)
  _finish(cached)
  logits = np.load(cache)
  assert logits.shape == (16, env["dataset"].num_classes) and np.all(np.isfinite(logits))
  keys = ("train/loss", "train/loss_kd", "train/loss_label")
  a, b = _losses(root / "online", keys), _losses(root / "cached", keys)
  assert sorted(a) == [1, 2, 3]
  for step in a:
    np.testing.assert_allclose(a[step], b[step], atol=1e-5)
    assert a[step][1] > 0
  _assert_exports_close(root / "online", root / "cached", atol=1e-5)
  # The teacher is no part of the student's checkpoint.
  meta = (root / "online" / "checkpoints" / "3" / "state" / "_METADATA").read_text()
  assert "teacher" not in meta and "opt_state" in meta
  # With augmentation on, the cache is refused with a clear message.
  bad = _start(
    env, root / "cached_aug", *common, f"--config.teacher.cache={cache}", "--config.input.mixup=0.5"
  )
  log = _finish(bad, expect_rc=1)
  assert "only without augmentation" in log


def test_nan_loss_stops_and_keeps_last_good_checkpoint(env):
  root = env["root"]
  workdir = root / "nan"
  log = _finish(
    _start(env, workdir, "--config.optim.lr=1e30", "--config.total_steps=20"), expect_rc=1
  )
  assert "non-finite loss" in log
  rows = [json.loads(row) for row in (workdir / "metrics.jsonl").read_text().splitlines()]
  last_logged = max(r["step"] for r in rows if "train/loss" in r)
  latest = _latest_checkpoint(workdir)
  assert latest == last_logged < 20
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore((workdir / "checkpoints" / str(latest) / "state").absolute())
  import jax

  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state["params"]))
  assert not (workdir / "export").exists()


def test_finetune_from_converted_checkpoint_single_label(env, parallel_runs):
  root = env["root"]
  log = _run(
    env,
    root / "finetune",
    f"--config.init_from={root / 'one' / 'export'}",
    "--config.reinit_head=True",
    "--config.loss.label_kind=ce",
    "--config.total_steps=2",
  )
  assert f"initialised from {root / 'one' / 'export'}" in log
  final = json.loads((root / "finetune" / "results.json").read_text())["valid"]
  assert 0.0 <= final["accuracy"] <= 1.0
  # The export records its label kind: predict turns its logits into softmax probabilities.
  exported = json.loads((root / "finetune" / "export" / "config.json").read_text())
  assert exported["training"]["label_kind"] == "ce"
  rows = _losses(root / "finetune")
  assert sorted(rows) == [1, 2]


def _rows(workdir):
  return [json.loads(row) for row in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_choice_on_valid_and_one_test_evaluation(env):
  """'best' keeps the params of the best valid evaluation; test is evaluated once, on them."""
  root, ds = env["root"], env["dataset"]
  workdir = root / "select_best"
  log = _run(
    env,
    workdir,
    "--config.select.model=best",
    "--config.total_steps=6",
    "--config.evals.every_steps=1",
    "--config.optim.lr=3e-3",
    f"--config.test.input.datafile={ds.eval_datafile}",
    f"--config.test.input.label_csv={ds.label_csv}",
    "--config.test.input.target_frames=98",
  )
  results = json.loads((workdir / "results.json").read_text())
  valid = [(r["step"], r["valid/mAP"]) for r in _rows(workdir) if "valid/mAP" in r]
  assert [step for step, _ in valid] == [1, 2, 3, 4, 5, 6]
  best_step, best_map = max(valid, key=lambda sv: (sv[1], -sv[0]))  # first of equal bests
  assert results["selected"] == {"model": "best", "step": best_step, "metric": "mAP"}
  assert results["valid"]["mAP"] == pytest.approx(best_map, abs=1e-6)
  # The test split: once, at the end, on the chosen model (valid and test are the same clips
  # here, so the chosen model's test mAP is its valid mAP).
  tests = [r for r in _rows(workdir) if "test/mAP" in r]
  assert len(tests) == 1 and log.count("test at step") == 1
  assert results["test"]["mAP"] == pytest.approx(best_map, abs=1e-6)
  exported = json.loads((workdir / "export" / "config.json").read_text())["training"]
  assert exported["step"] == best_step and exported["model"] == "best"
  assert exported["label_kind"] == "bce"


def test_rerun_with_more_steps_rewrites_the_export(env):
  """A finished run rerun with more steps trains on, and export/ follows the new params."""
  from dass_jax import checkpoint

  workdir = env["root"] / "rerun_longer"
  _run(env, workdir, "--config.total_steps=3")
  first = checkpoint.read_metadata(workdir / "export")["params_sha256"]
  _run(env, workdir, "--config.total_steps=5")
  second = checkpoint.read_metadata(workdir / "export")["params_sha256"]
  assert second != first
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore((workdir / "checkpoints" / "5" / "state").absolute())
  assert second == checkpoint.params_digest(state["params"])
  assert json.loads((workdir / "results.json").read_text())["steps"] == 5


def test_early_stop_on_valid_survives_a_rerun(env):
  """With lr 0 the valid mAP never improves after the first evaluation: patience 2 stops at
  step 3, and rerunning the command does not train further."""
  workdir = env["root"] / "early_stop"
  args = [
    "--config.total_steps=10",
    "--config.evals.every_steps=1",
    "--config.optim.lr=0",
    "--config.optim.warmup_steps=0",
    "--config.select.patience=2",
  ]
  log = _run(env, workdir, *args)
  assert "early stop at step 3" in log
  results = json.loads((workdir / "results.json").read_text())
  assert results["steps"] == 3 and results["stopped_early"]
  assert _latest_checkpoint(workdir) == 3
  log = _run(env, workdir, *args)
  assert "early stop: no better valid mAP in 2 evaluations" in log
  assert _latest_checkpoint(workdir) == 3
  assert max(r["step"] for r in _rows(workdir) if "train/loss" in r) == 3
