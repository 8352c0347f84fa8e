"""Self-distillation from the student's EMA and checkpoint-ensemble evaluation in
`experiments.train`, through a kill and resume.

Runs of the same config (test_train_runs.py's tiny AST, its helpers): one uninterrupted, one
killed after a checkpoint and resumed, one on 8 devices with the params (and so the EMA) sharded.
Every step is checkpointed, so the EMA can be checked step by step against t = m t + (1 - m) s,
and every second step is evaluated with its scores saved, so the checkpoint-ensemble figures can
be recomputed from them.
"""

import json
import os
import signal
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import test_train_runs as runs

from dass_jax.data import synthetic
from experiments import checkpoint_ensemble
from experiments import metrics as metrics_lib
from experiments import teacher as teacher_lib

MOMENTUM = 0.75
STEPS = 10
ARGS = [
  "--config.teacher.kind=ema",
  f"--config.teacher.ema_momentum={MOMENTUM}",
  "--config.loss.kd_kind=l2",
  "--config.loss.kd_weight=0.5",
  f"--config.total_steps={STEPS}",
  "--config.checkpoint_every_steps=1",
  f"--config.keep_checkpoints={STEPS}",
  "--config.evals.every_steps=2",
  "--config.evals.save_scores=True",
  "--config.optim.lr=3e-3",
]


@pytest.fixture(scope="module")
def ema_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("train_ema")
  ds = synthetic.ensure_dataset(root / "data", num_train=16, num_eval=8, clip_seconds=1.0)
  config = root / "tiny_config.py"
  config.write_text(
    runs.CONFIG.format(train=ds.train_datafile, eval=ds.eval_datafile, labels=ds.label_csv)
  )
  cache = tmp_path_factory.getbasetemp() / "xla_recipe"
  env = {"root": root, "config": str(config), "dataset": ds, "cache": str(cache)}
  full = runs._start(env, root / "full", *ARGS)
  fsdp = runs._start(
    env, root / "fsdp8", *ARGS, "--config.mesh=(('data', 1), ('fsdp', -1))", devices=8
  )
  killed = runs._start(env, root / "killed", *ARGS)
  deadline = time.time() + runs.TIMEOUT
  while (runs._latest_checkpoint(root / "killed") or 0) < 3:
    assert killed.poll() is None, Path(f"{root / 'killed'}.log").read_text()[-3000:]
    assert time.time() < deadline
    time.sleep(0.02)
  os.kill(killed.pid, signal.SIGKILL)
  killed.wait()
  stopped_at = runs._latest_checkpoint(root / "killed")
  assert stopped_at < STEPS, "the run finished before it could be killed"
  resumed_log = runs._run(env, root / "killed", *ARGS)
  assert f"resuming from checkpoint step {stopped_at}" in resumed_log
  runs._finish(fsdp)
  return {"root": root, "full_log": runs._finish(full), "stopped_at": stopped_at}


def _state(workdir, step):
  """The train state saved at `step`, on this process's one device (whatever mesh saved it)."""
  path = (Path(workdir) / "checkpoints" / str(step) / "state").absolute()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as ckptr:
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      ckptr.metadata(path).item_metadata,
    )
    state = ckptr.restore(path, target)
  return jax.tree.map(np.asarray, state)


def test_ema_update_is_m_t_plus_one_minus_m_s_at_every_step(ema_runs):
  workdir = ema_runs["root"] / "full"
  assert f"teacher: the student's EMA, momentum {MOMENTUM:g}" in ema_runs["full_log"]
  rows = runs._losses(workdir, ("train/loss_kd",))
  # The EMA starts as the student's initial params, so at step 1 the teacher's logits are the
  # student's (no dropout in the tiny AST): the l2 distillation loss is 0.
  assert rows[1][0] == pytest.approx(0.0, abs=1e-10)
  assert rows[STEPS][0] > 1e-8
  previous = _state(workdir, 1)
  for step in range(2, STEPS + 1):
    state = _state(workdir, step)
    want = jax.tree.map(
      lambda t, s: MOMENTUM * t + (1 - MOMENTUM) * s, previous["ema_params"], state["params"]
    )
    flat_got, flat_want = jax.tree.leaves(state["ema_params"]), jax.tree.leaves(want)
    for got, expected in zip(flat_got, flat_want, strict=True):
      np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    previous = state
  # The EMA lags the params: they differ after training.
  assert any(
    not np.allclose(e, p)
    for e, p in zip(jax.tree.leaves(state["ema_params"]), jax.tree.leaves(state["params"]))
  )
  # The jitted update and the library function agree (the formula in one place).
  np.testing.assert_array_equal(
    jax.tree.leaves(teacher_lib.ema_update(previous["ema_params"], state["params"], 1.0))[0],
    jax.tree.leaves(previous["ema_params"])[0],
  )


def test_ema_and_checkpoint_ensemble_survive_kill_and_resume_bit_exactly(ema_runs):
  root = ema_runs["root"]
  full, resumed = _state(root / "full", STEPS), _state(root / "killed", STEPS)
  for name in ("ema_params", "params", "checkpoint_ensemble"):
    for a, b in zip(jax.tree.leaves(full[name]), jax.tree.leaves(resumed[name]), strict=True):
      np.testing.assert_array_equal(a, b, err_msg=name)
  a = json.loads((root / "full" / "results.json").read_text())["checkpoint_ensemble"]
  b = json.loads((root / "killed" / "results.json").read_text())["checkpoint_ensemble"]
  assert a == b and a["evaluations"] == STEPS // 2


def test_checkpoint_ensemble_figures_equal_a_direct_computation(ema_runs):
  """valid/cum_* at every evaluation = metrics of the mean of the saved scores of the
  evaluations so far; results.json holds the last and the best."""
  workdir = ema_runs["root"] / "full"
  rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
  logged = {r["step"]: r for r in rows if "valid/cum_mAP" in r}
  assert sorted(logged) == list(range(2, STEPS + 1, 2))
  saved, direct = [], {}
  for step in sorted(logged):
    with np.load(workdir / "eval" / f"valid_step{step}_scores.npz") as f:
      saved.append(f["scores"].astype(np.float64))
      targets, index = f["targets"], f["index"]
    assert sorted(index) == list(range(8))
    mean = np.mean(saved, axis=0)
    want = metrics_lib.compute_metrics(mean, targets)
    direct[step] = want
    for metric, name in checkpoint_ensemble.NAMES.items():
      assert logged[step][f"valid/{name}"] == pytest.approx(want[metric], abs=1e-6), (step, name)
    # The per-checkpoint figures beside them are those of this evaluation's scores alone.
    alone = metrics_lib.compute_metrics(saved[-1], targets)
    assert logged[step]["valid/mAP"] == pytest.approx(alone["mAP"], abs=1e-9)
  # The first ensemble is the first checkpoint; later ones differ from their checkpoint.
  assert logged[2]["valid/cum_mAP"] == pytest.approx(logged[2]["valid/mAP"], abs=1e-6)
  results = json.loads((workdir / "results.json").read_text())["checkpoint_ensemble"]
  assert results["cum_mAP"] == pytest.approx(direct[STEPS]["mAP"], abs=1e-6)
  best_step = max(sorted(direct), key=lambda s: (direct[s]["mAP"], -s))
  assert results["best_cum_mAP_step"] == best_step
  assert results["best_cum_mAP"] == pytest.approx(direct[best_step]["mAP"], abs=1e-6)


def test_ema_sharded_like_the_params_on_eight_devices(ema_runs):
  """Under FSDP over 8 devices the EMA (sharded as the params) follows the same path."""
  root = ema_runs["root"]
  one, eight = _state(root / "full", STEPS), _state(root / "fsdp8", STEPS)
  for a, b in zip(jax.tree.leaves(one["ema_params"]), jax.tree.leaves(eight["ema_params"])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  assert "'fsdp': 8" in Path(f"{root / 'fsdp8'}.log").read_text()
