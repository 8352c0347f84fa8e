"""Checkpoint teachers in `experiments.train`: a DASS teacher, ensembles and their caches.

The runs reuse test_train_runs.py's tiny AST student config and helpers (subprocesses sharing a
compilation cache). The teachers: a tiny AST trained for a few steps and a tiny DASS with random
weights, each a converted checkpoint folder.
"""

import json
import os
import shutil
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import test_train_runs as runs

import dass_jax
from dass_jax import checkpoint, data, models
from dass_jax.data import synthetic
from experiments import sharding
from experiments import teacher as teacher_lib

ENSEMBLE_CONFIG = textwrap.dedent('''\
    """test_train_runs' tiny AST, distilled from an ensemble of two teachers."""
    import importlib.util

    _spec = importlib.util.spec_from_file_location("tiny", {tiny!r})
    _tiny = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_tiny)


    def get_config(arg=None):
      c = _tiny.get_config(arg)
      c.teacher.ensemble = {{
        "ast": {{"path": {ast!r}, "cache": "", "dtype": ""}},
        "dass": {{"path": {dass!r}, "cache": "", "dtype": ""}},
      }}
      c.teacher.combine = "probs"
      c.loss.kd_kind = "bce"
      return c
    ''')


def _tiny_dass(folder, num_classes, seed):
  """A random tiny DASS with a spread of logits (the head scaled up), as a converted checkpoint."""
  config = models.DassConfig(
    num_classes=num_classes, depths=(1, 1), dims=(8, 16), drop_path_rate=0.0
  )
  module = dass_jax.build_model(config)
  init = jax.jit(lambda key: module.init({"params": key}, jnp.zeros((1, 98, 128)), train=False))
  params = init(jax.random.PRNGKey(seed))
  params = jax.device_get(params["params"])
  params["classifier"]["head"]["kernel"] = params["classifier"]["head"]["kernel"] * 20.0
  checkpoint.save_converted(folder, config, params, extra={"source": "test"})
  return str(folder)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("train_teachers")
  ds = synthetic.ensure_dataset(root / "data", num_train=16, num_eval=8, clip_seconds=1.0)
  config = root / "tiny_config.py"
  config.write_text(
    runs.CONFIG.format(train=ds.train_datafile, eval=ds.eval_datafile, labels=ds.label_csv)
  )
  cache = tmp_path_factory.getbasetemp() / "xla_recipe"
  return {"root": root, "config": str(config), "dataset": ds, "cache": str(cache)}


@pytest.fixture(scope="module")
def teachers(env):
  """{'ast': a tiny AST trained 2 steps (a train work directory), 'dass': a tiny random DASS}."""
  root = env["root"]
  runs._run(env, root / "ast_teacher", "--config.total_steps=2", "--config.seed=1")
  dass = _tiny_dass(root / "dass_teacher", env["dataset"].num_classes, seed=3)
  return {"ast": str(root / "ast_teacher"), "dass": dass}


def _clean_batch(env, rows=8):
  """The first `rows` training clips' clean fbank (no augmentation), as a teacher cache sees."""
  ds = env["dataset"]
  cfg = data.default_config(
    datafile=ds.train_datafile, label_csv=ds.label_csv, target_frames=98, batch_size=rows
  )
  batch = next(iter(data.make_eval_iterator(cfg)))
  return batch["fbank"], batch["index"]


def _forward(folder, fbank):
  module, params, _ = dass_jax.load_model(teacher_lib.resolve_dir(folder))
  return np.asarray(
    jax.jit(lambda p, x: module.apply({"params": p}, x, train=False))(params, fbank)
  )


def _combined(teachers, params, batch, loss_cfg, combine):
  """The train step's teacher logits (`teacher.step_logits`, jitted)."""
  fn = jax.jit(lambda p, b: teacher_lib.step_logits(teachers, p, b, loss_cfg, combine))
  return np.asarray(fn(params, batch))


def test_ensemble_targets_are_the_mean_of_the_single_teachers_targets(env, teachers):
  """The step's combined logits, from the loaded teachers: 'probs' gives targets equal to the
  mean of each teacher's targets, 'logits' the mean of the logits."""
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  cfg = ml_collections.ConfigDict(
    {
      "kind": "checkpoint",
      "path": "",
      "cache": "",
      "dtype": "",
      "ensemble": {name: {"path": path} for name, path in teachers.items()},
      "combine": "probs",
      "ema_momentum": 0.999,
    }
  )
  train_cfg = data.default_config(target_frames=98)
  loaded = teacher_lib.prepare(cfg, train_cfg, env["dataset"].num_classes, mesh, [], 0, 8)
  assert [t.name for t in loaded] == ["ast", "dass"]
  assert [type(t.config).__name__ for t in loaded] == ["AstConfig", "DassConfig"]
  fbank, _ = _clean_batch(env)
  single = [_forward(teachers[name], fbank) for name in ("ast", "dass")]
  assert np.std(single[1]) > 0.1  # the DASS teacher's logits vary
  params = teacher_lib.online_params(loaded)
  batch = {"fbank": jnp.asarray(fbank)}
  # 'probs' with sigmoid targets at T = 2; 'logits' (any loss); the softmax and other cases of
  # the combination itself are in test_losses.py.
  bce = ml_collections.ConfigDict({"kd_kind": "bce", "temperature": 2.0, "teacher_func": "sigmoid"})
  combined = _combined(loaded, params, batch, bce, "probs")
  want = np.mean([jax.nn.sigmoid(t / 2.0) for t in single], axis=0)
  np.testing.assert_allclose(jax.nn.sigmoid(combined / 2.0), want, atol=2e-6)
  kldiv = ml_collections.ConfigDict({"kd_kind": "kldiv", "temperature": 1.0, "teacher_func": ""})
  combined = _combined(loaded, params, batch, kldiv, "logits")
  np.testing.assert_allclose(combined, np.mean(single, axis=0), atol=2e-5, rtol=1e-5)


def test_dass_checkpoint_teaches_and_ensembles_cache_per_teacher(env, teachers):
  """A DASS checkpoint as teacher beside an AST one: the ensemble online and from one cache per
  teacher give the same student, and each cache holds its own teacher's logits of the clean clips
  with the teacher's parameter hash."""
  root = env["root"]
  ensemble_config = root / "ensemble_config.py"
  ensemble_config.write_text(
    ENSEMBLE_CONFIG.format(tiny=env["config"], ast=teachers["ast"], dass=teachers["dass"])
  )
  ens_env = {**env, "config": str(ensemble_config)}
  caches = {name: root / f"{name}_logits.npy" for name in teachers}
  common = ["--config.total_steps=3", "--config.loss.kd_weight=0.5"]
  online = runs._start(ens_env, root / "ensemble_online", *common)
  cached = runs._start(
    ens_env,
    root / "ensemble_cached",
    *common,
    *(f"--config.teacher.ensemble.{n}.cache={c}" for n, c in caches.items()),
  )
  log = runs._finish(online)
  runs._finish(cached)
  assert "teacher dass: " in log and "(DassConfig, takes fbank)" in log
  assert "combined by the mean of their probs" in log
  keys = ("train/loss", "train/loss_kd", "train/loss_label")
  a, b = runs._losses(root / "ensemble_online", keys), runs._losses(root / "ensemble_cached", keys)
  assert sorted(a) == [1, 2, 3]
  for step in a:
    np.testing.assert_allclose(a[step], b[step], atol=1e-5)
    assert a[step][1] > 0
  runs._assert_exports_close(root / "ensemble_online", root / "ensemble_cached", atol=1e-5)
  fbank, index = _clean_batch(env)
  for name, path in caches.items():
    cached = np.load(path)
    assert cached.shape == (16, env["dataset"].num_classes)
    np.testing.assert_allclose(cached[index], _forward(teachers[name], fbank), atol=1e-5)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    folder = teacher_lib.resolve_dir(teachers[name])
    assert meta["params_sha256"] == checkpoint.read_metadata(folder)["params_sha256"]


def test_a_teacher_retrained_in_place_rebuilds_its_cache(env, teachers):
  """Issue 22: a trained teacher (a copy of the fixture's work directory), cached, then trained
  further in the same work directory: the next student run rebuilds the cache (log line) from
  the new params instead of reusing the old one."""
  root = env["root"]
  teacher, cache = root / "retrained_teacher", root / "retrained_logits.npy"
  shutil.copytree(teachers["ast"], teacher)
  student = ["--config.total_steps=1", f"--config.teacher.path={teacher}"]
  log = runs._run(env, root / "student_before", *student, f"--config.teacher.cache={cache}")
  assert "it does not exist yet" in log
  before = np.load(cache)
  first = checkpoint.read_metadata(teacher / "export")["params_sha256"]
  runs._run(env, teacher, "--config.total_steps=4", "--config.seed=1")
  second = checkpoint.read_metadata(teacher / "export")["params_sha256"]
  assert second != first
  log = runs._run(env, root / "student_after", *student, f"--config.teacher.cache={cache}")
  assert "the teacher changed since it was built" in log and "retrained in place" in log
  meta = json.loads((root / "retrained_logits.npy.json").read_text())
  assert meta["params_sha256"] == second
  after = np.load(cache)
  assert not np.allclose(after, before)
  fbank, index = _clean_batch(env)
  np.testing.assert_allclose(after[index], _forward(teacher, fbank), atol=1e-5)


def test_a_cache_of_other_data_is_refused_and_a_partial_one_rebuilt(env, teachers, tmp_path):
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  ds = env["dataset"]
  dass = teacher_lib.load("dass", teachers["dass"], mesh, [], 0)
  train_cfg = data.default_config(
    datafile=ds.train_datafile, label_csv=ds.label_csv, target_frames=98, read_threads=1
  )
  cache = str(tmp_path / "dass.npy")
  first = teacher_lib.ensure_cache(cache, dass, train_cfg, mesh, 8, ds.num_classes)
  assert first.shape == (16, ds.num_classes)
  other = data.default_config(**{**train_cfg.to_dict(), "datafile": ds.eval_datafile})
  with pytest.raises(ValueError, match="was built for other settings"):
    teacher_lib.ensure_cache(cache, dass, other, mesh, 8, ds.num_classes)
  os.remove(cache + ".json")  # a build killed between the logits and their metadata
  assert "interrupted build" in teacher_lib._stale_reason(cache, {})
  again = teacher_lib.ensure_cache(cache, dass, train_cfg, mesh, 8, ds.num_classes)
  np.testing.assert_array_equal(again, first)
