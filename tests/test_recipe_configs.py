"""The DASS v3 and v2-style ensemble configs' `runlocal` variants train on the synthetic data, and
the quickstart's extra stages (EMA, ensemble) run and are summarised over seeds.

The teachers are tiny random converted checkpoints: SSLAM for v3, AST and DASS for the
ensemble.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import dass_jax
from dass_jax import checkpoint, models
from dass_jax.data import synthetic
from experiments import quickstart, quickstart_variants
from experiments.configs import dass_v2_ensemble, dass_v3
from experiments.configs import quickstart as quickstart_config

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600


def _save_random(folder, config, seed):
  module = dass_jax.build_model(config)
  init = jax.jit(lambda key: module.init({"params": key}, jnp.zeros((1, 98, 128)), train=False))
  params = init(jax.random.PRNGKey(seed))
  checkpoint.save_converted(folder, config, jax.device_get(params["params"]))
  return str(folder)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("recipe_configs")
  ds = synthetic.ensure_dataset(root / "data", num_train=16, num_eval=8, clip_seconds=1.0)
  classes = ds.num_classes
  tiny_vit = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 32, "max_length": 98}
  ast = models.AstConfig(num_classes=classes, **tiny_vit)
  dass = models.DassConfig(num_classes=classes, depths=(1, 1), dims=(8, 16), drop_path_rate=0.0)
  sslam = models.SslamConfig(num_classes=classes, **tiny_vit)
  return {
    "root": root,
    "dataset": ds,
    "ast": _save_random(root / "ast_teacher", ast, 0),
    "dass": _save_random(root / "dass_teacher", dass, 1),
    "sslam": _save_random(root / "sslam_teacher", sslam, 2),
    "cache": str(tmp_path_factory.getbasetemp() / "xla_recipe"),
  }


def _command(env, module, config, workdir, *flags):
  cmd = [sys.executable, "-m", module, "--config", config, "--workdir", str(workdir)]
  cmd += ["--compilation_cache_dir", env["cache"], *flags]
  proc_env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": str(REPO),
    "DASS_JAX_CACHE": str(env["root"] / "cache"),
  }
  return subprocess.Popen(
    cmd, cwd=REPO, env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def _finish(proc):
  out, _ = proc.communicate(timeout=TIMEOUT)
  assert proc.returncode == 0, f"exit code {proc.returncode}, log:\n{out[-4000:]}"
  return out


def _paths(env):
  ds = env["dataset"]
  return (
    f"train={ds.train_datafile},valid={ds.eval_datafile},test={ds.eval_datafile},"
    f"labels={ds.label_csv}"
  )


def test_v3_and_v2_ensemble_configs_runlocal_train(env):
  root, paths = env["root"], _paths(env)
  v3 = f"experiments/configs/dass_v3.py:runlocal,teacher={env['sslam']},{paths}"
  v2 = f"experiments/configs/dass_v2_ensemble.py:runlocal,ast={env['ast']},second={env['dass']},"
  v2 += f"combine=probs,{paths}"
  procs = {
    "v3": _command(env, "experiments.train", v3, root / "v3"),
    "v2": _command(env, "experiments.train", v2, root / "v2"),
  }
  logs = {name: _finish(p) for name, p in procs.items()}
  assert f"teacher teacher: {env['sslam']} (SslamConfig, takes fbank)" in logs["v3"]
  assert "teacher ensemble ['ast', 'second'], combined by the mean of their probs" in logs["v2"]
  for name in procs:
    results = json.loads((root / name / "results.json").read_text())
    assert results["steps"] == 3 and 0 <= results["test"]["mAP"] <= 1
    assert results["checkpoint_ensemble"]["evaluations"] == 2  # steps 2 and 3
    rows = [json.loads(r) for r in (root / name / "metrics.jsonl").read_text().splitlines()]
    kd = [r["train/loss_kd"] for r in rows if "train/loss_kd" in r]
    assert kd and all(v > 0 for v in kd)


def test_v3_and_v2_configs_at_audioset_scale():
  v3 = dass_v3.get_config("medium,balanced,teacher=/m/sslam,train=/d/t.json,valid=/d/v.json")
  assert v3.teacher.path == "/m/sslam" and v3.model.depths == (2, 2, 20, 2)
  assert v3.input.datafile == "/d/t.json" and v3.evals.input.datafile == "/d/v.json"
  assert (v3.input.target_frames, v3.loss.kd_kind, v3.loss.kd_weight) == (1024, "kldiv", 0.5)
  assert (v3.num_epochs, v3.wa_start, v3.wa_end) == (25, 6, 25)
  v2 = dass_v2_ensemble.get_config("small,full,ast=/m/ast,second=/m/htsat,weights=/d/w.csv")
  assert v2.teacher.path == "" and v2.teacher.combine == "logits"
  assert {k: v.path for k, v in v2.teacher.ensemble.items()} == {
    "ast": "/m/ast",
    "second": "/m/htsat",
  }
  assert v2.input.weights_file == "/d/w.csv" and v2.num_epochs == 5


def test_quickstart_extra_stages_configs(tmp_path):
  config = quickstart_config.get_config("runlocal")
  assert tuple(config.quickstart.extra_stages) == ()  # the quickstart stays three stages
  config.quickstart.dataset_dir = str(tmp_path)
  ds = quickstart.ensure_dataset(config)
  stages = quickstart.stage_configs(config, str(tmp_path / "run"), ds)
  assert quickstart_variants.extra_stages(config, str(tmp_path / "run"), stages) == {}
  config.quickstart.extra_stages = ("student_ema,student_ensemble",)  # as the flag gives it
  extra = quickstart_variants.extra_stages(config, str(tmp_path / "run"), stages)
  assert list(extra) == ["student_ema", "student_ensemble"]
  ema, ensemble = extra["student_ema"], extra["student_ensemble"]
  assert ema.teacher.kind == "ema" and ema.teacher.path == ""
  assert ema.teacher.ema_momentum == quickstart_variants.EMA_MOMENTUM
  assert ensemble.teacher.path == "" and ensemble.teacher.kind == "checkpoint"
  assert {k: v.path for k, v in ensemble.teacher.ensemble.items()} == {
    "teacher": str(tmp_path / "run" / "teacher"),
    "student_nokd": str(tmp_path / "run" / "student_nokd"),
  }
  # Everything but the teacher is student_kd's.
  for cfg in (ema, ensemble):
    a, b = cfg.to_dict(), stages["student_kd"].to_dict()
    a.pop("teacher"), b.pop("teacher")
    assert a == b
  config.quickstart.extra_stages = ("student_swa",)
  with pytest.raises(ValueError, match="unknown"):
    quickstart_variants.extra_stages(config, str(tmp_path / "run"), stages)


def test_quickstart_seeds_with_extra_stages_runlocal(env):
  """The seeds command with the extra stages: every stage trains and the summary has them all."""
  root = env["root"]
  proc = _command(
    env,
    "experiments.quickstart_seeds",
    "experiments/configs/quickstart.py:runlocal",
    root / "seeds",
    "--seeds",
    "0",
    "--config.quickstart.extra_stages=student_ema,student_ensemble",
  )
  stdout = _finish(proc)
  result = json.loads((root / "seeds" / "quickstart_seeds.json").read_text())
  stages = ["teacher", "student_kd", "student_nokd", "student_ema", "student_ensemble"]
  assert list(result["stages"]) == stages and list(result["per_seed"]["0"]) == stages
  for name in stages:
    assert 0 <= result["per_seed"]["0"][name] <= 1
    assert name in stdout
  summary = json.loads((root / "seeds" / "seed0" / quickstart.RESULTS_FILE).read_text())
  assert "student_ensemble" in summary["stages"] and "student_ema" in summary["stages"]
