"""In-process checks of the training pieces: schedule, optimizer, sharding rules, configs."""

import importlib
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from experiments import optim, sharding, teacher
from experiments.configs import common


def _optim_cfg(**overrides):
  cfg = optim.default_config()
  cfg.update(overrides)
  return cfg


def test_schedule_matches_recipe_warmup_and_step_decay():
  cfg = _optim_cfg(
    lr=1.0, warmup_steps=1000, warmup_update_every=50, decay_start=2, decay_every=1, decay_rate=0.5
  )
  schedule = optim.make_schedule(cfg, steps_per_epoch=1000, total_steps=10_000)
  # Warm-up set every 50 steps to step / 1000 * lr (DASS traintest.py).
  assert float(schedule(0)) == 0.0
  assert float(schedule(49)) == 0.0
  assert float(schedule(50)) == pytest.approx(0.05)
  assert float(schedule(999)) == pytest.approx(0.95)
  # Epochs 0 and 1 (1 and 2 in the recipe) at lr; MultiStepLR milestones 2, 3, ... halve it.
  assert float(schedule(1500)) == pytest.approx(1.0)
  assert float(schedule(2000)) == pytest.approx(0.5)
  assert float(schedule(3999)) == pytest.approx(0.25)
  assert float(schedule(4000)) == pytest.approx(0.125)


def test_cosine_schedule_warms_up_then_decays_to_the_final_ratio():
  cfg = _optim_cfg(
    lr=2.0, schedule="cosine", final_lr_ratio=0.1, warmup_steps=10, warmup_update_every=1
  )
  schedule = optim.make_schedule(cfg, steps_per_epoch=7, total_steps=110)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(1.0)
  assert float(schedule(10)) == pytest.approx(2.0)
  # Half-way through the decay: lr * (r + (1 - r) / 2); at the end lr * r, and no further.
  assert float(schedule(60)) == pytest.approx(2.0 * 0.55)
  assert float(schedule(110)) == pytest.approx(0.2)
  assert float(schedule(500)) == pytest.approx(0.2)
  values = [float(schedule(s)) for s in range(10, 111)]
  assert all(a >= b for a, b in itertools.pairwise(values))
  with pytest.raises(ValueError, match="schedule must be one of"):
    optim.make_schedule(_optim_cfg(schedule="linear"), steps_per_epoch=7, total_steps=110)


def test_optimizer_is_torch_adam_with_l2_weight_decay():
  cfg = _optim_cfg(lr=0.1, warmup_steps=0, weight_decay=0.01, b1=0.95, b2=0.999, eps=1e-8)
  tx, _ = optim.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([-0.005, 0.25])}
  updates, _ = tx.update(grads, tx.init(params), params)
  # torch.optim.Adam step 1: g' = g + wd * p = [0.005, 0.23]; the bias-corrected m / sqrt(v) is
  # sign(g'), so the update is -lr * sign(g') = [-0.1, -0.1]. Without the L2 term the first
  # coordinate would be +0.1, with AdamW's decoupled decay +0.099.
  np.testing.assert_allclose(np.asarray(updates["w"]), [-0.1, -0.1], rtol=1e-5)


def test_grad_clipping_comes_first():
  cfg = _optim_cfg(lr=1.0, warmup_steps=0, weight_decay=0.0, grad_clip_norm=1.0)
  tx, _ = optim.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)
  assert isinstance(tx, optax.GradientTransformation)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  # With clipping the first Adam step still has unit magnitude per coordinate; the second moment
  # sees the clipped gradient, so a later small gradient is not swamped by a huge first one.
  big = {"w": jnp.array([1e6, 0.0, 0.0])}
  _, state = tx.update(big, state, params)
  mu = state[1].mu["w"]
  assert float(jnp.abs(mu).max()) == pytest.approx((1 - 0.95) * 1.0, rel=1e-5)


def test_fsdp_rule_shards_largest_divisible_dim():
  mesh = sharding.make_mesh([("data", 1), ("fsdp", 1)])
  rules = [("pos_embed", "replicate"), (".*", "fsdp")]
  assert sharding.leaf_spec("blocks_0/attn/qkv/kernel", (64, 192), mesh, rules, 0) == P()
  fake = type("FakeMesh", (), {"shape": {"data": 1, "fsdp": 4}})()
  assert sharding.leaf_spec("x/kernel", (6, 64, 32), fake, rules, 0) == P(None, "fsdp", None)
  assert sharding.leaf_spec("x/kernel", (6, 10), fake, rules, 0) == P()
  assert sharding.leaf_spec("pos_embed", (1, 16, 64), fake, rules, 0) == P()
  assert sharding.leaf_spec("x/kernel", (64, 64), fake, rules, 10**6) == P()
  assert sharding.leaf_spec("opt/count", (), fake, rules, 0) == P()
  with pytest.raises(ValueError, match="unknown sharding rule"):
    sharding.leaf_spec("x", (8,), fake, [(".*", "tp")], 0)


def test_make_mesh_sizes():
  n = jax.device_count()
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  assert dict(mesh.shape) == {"data": n, "fsdp": 1}
  with pytest.raises(ValueError, match="at most one axis"):
    sharding.make_mesh([("data", -1), ("fsdp", -1)])
  with pytest.raises(ValueError, match="slots"):
    sharding.make_mesh([("data", n + 1), ("fsdp", 1)])


def test_parse_arg_types_and_errors():
  arg = common.parse_arg(
    "medium,full,runlocal",
    lazy=True,
    size="small",
    set="balanced",
    runlocal=False,
    choices={"size": ("small", "medium"), "set": ("balanced", "full")},
  )
  assert (arg.size, arg.set, arg.runlocal) == ("medium", "full", True)
  with pytest.raises(ValueError, match="unknown config argument"):
    common.parse_arg("bogus", runlocal=False)
  with pytest.raises(ValueError, match="must be one of"):
    common.parse_arg("size=large", size="small", choices={"size": ("small", "medium")})


@pytest.mark.parametrize(
  "module,arg",
  [
    ("quickstart", None),
    ("quickstart", "runlocal"),
    ("audioset_dass", "small,balanced"),
    ("audioset_dass", "medium,full"),
    ("finetune_esc50", None),
  ],
)
def test_configs_build_and_document_their_command(module, arg):
  mod = importlib.import_module(f"experiments.configs.{module}")
  cfg = mod.get_config(arg)
  assert isinstance(cfg, ml_collections.ConfigDict)
  assert "python -m experiments.train --config experiments/configs/" in " ".join(
    mod.__doc__.replace("\\\n", " ").split()
  )
  assert cfg.batch_size > 0 and cfg.optim.lr > 0


def test_audioset_recipes():
  from experiments.configs import audioset_dass

  bal = audioset_dass.get_config("small,balanced")
  full = audioset_dass.get_config("medium,full")
  assert (bal.num_epochs, bal.wa_start, bal.wa_end) == (25, 6, 25)
  assert (bal.optim.decay_start, bal.optim.decay_every, bal.optim.decay_rate) == (10, 5, 0.5)
  assert (full.num_epochs, full.wa_start, full.wa_end) == (5, 1, 5)
  assert (full.optim.decay_start, full.optim.decay_every) == (2, 1)
  assert full.model.depths == (2, 2, 20, 2) and bal.model.depths == (2, 2, 8, 2)
  for c in (bal, full):
    assert (c.batch_size, c.input.mixup, c.input.freqm, c.input.timem) == (12, 0.5, 48, 192)
    assert (c.optim.b1, c.optim.b2, c.optim.weight_decay) == (0.95, 0.999, 5e-7)


def test_teacher_cache_refused_with_augmentation():
  from dass_jax import data

  with pytest.raises(ValueError, match="augmentation"):
    teacher.check_cache_allowed(data.default_config(mixup=0.5, freqm=0, timem=0))
  teacher.check_cache_allowed(data.default_config(mixup=0.0, freqm=0, timem=0))


def test_teacher_dir_must_exist(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a converted checkpoint"):
    teacher.resolve_dir(str(tmp_path))


def test_teacher_config_kinds_and_ensembles():
  from experiments.configs import common

  base = common.base_config().teacher
  assert teacher.members(base) == {} and not teacher.is_ema(base)  # no KD
  single = ml_collections.ConfigDict(base.to_dict())
  single.path, single.cache = "/t", "/t.npy"
  assert teacher.members(single)["teacher"].to_dict() == {
    "path": "/t",
    "cache": "/t.npy",
    "dtype": "",
  }
  ensemble = ml_collections.ConfigDict(base.to_dict())
  ensemble.ensemble = {"a": {"path": "/a"}, "b": {"path": "/b", "cache": "/b.npy"}}
  assert list(teacher.members(ensemble)) == ["a", "b"]
  assert teacher.members(ensemble)["a"].cache == ""
  ema = ml_collections.ConfigDict(base.to_dict())
  ema.kind = "ema"
  assert teacher.is_ema(ema) and teacher.members(ema) == {}

  def refused(match, **fields):
    cfg = ml_collections.ConfigDict(base.to_dict())
    cfg.update(fields)
    with pytest.raises(ValueError, match=match):
      teacher.members(cfg)

  refused("kind must be one of", kind="self")
  refused("leave teacher.path", kind="ema", path="/t")
  refused("ema_momentum must be in", kind="ema", ema_momentum=1.5)
  refused("not both", path="/t", ensemble={"a": {"path": "/a"}})
  refused("has no path", ensemble={"a": {"cache": "/a.npy"}})
  refused("unknown fields", ensemble={"a": {"path": "/a", "weight": 2}})
  refused(
    "a cache file of its own",
    ensemble={"a": {"path": "/a", "cache": "/c.npy"}, "b": {"path": "/b", "cache": "/c.npy"}},
  )
  refused("belong to config.teacher.path", cache="/c.npy")
  refused("combine must be one of", path="/t", combine="max")


def test_checkpoint_ensemble_running_sum():
  from experiments import checkpoint_ensemble as ce
  from experiments import metrics

  rng = np.random.default_rng(0)
  targets = (rng.random((6, 3)) < 0.5).astype(np.float32)
  targets[0] = 1
  targets[1] = 0
  evaluations = [rng.random((6, 3)).astype(np.float32) for _ in range(3)]
  order = np.array([3, 0, 5, 1, 4, 2])  # rows arrive in any order; the sum is by row
  state = ce.init_state(6, 3)
  for k, scores in enumerate(evaluations, start=1):
    state = ce.add(state, scores[order], order)
    got = ce.figures(np.asarray(state["sum"]), int(state["count"]), targets[order], order)
    want = metrics.compute_metrics(np.mean(evaluations[:k], axis=0), targets)
    assert got["cum_mAP"] == pytest.approx(want["mAP"], abs=1e-9)
    assert got["cum_acc"] == pytest.approx(want["accuracy"], abs=1e-9)
  state = ce.track_best(state, np.float32(0.5), np.int32(4))
  state = ce.track_best(state, np.float32(0.5), np.int32(8))  # not better: the first is kept
  assert (float(state["best_value"]), int(state["best_step"])) == (0.5, 4)
  with pytest.raises(ValueError, match="no evaluation"):
    ce.figures(np.zeros((6, 3)), 0, targets, np.arange(6))


def test_merge_pretrained_keeps_weights_and_reinitialises_head():
  from experiments import train

  fresh = {
    "blocks_0": {"kernel": np.zeros((4, 4), np.float32)},
    "head": {"kernel": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)},
  }
  loaded = {
    "blocks_0": {"kernel": np.ones((4, 4), np.float32)},
    "head": {"kernel": np.ones((4, 527), np.float32), "bias": np.ones(527, np.float32)},
  }
  merged = train._merge_pretrained(fresh, loaded, reinit_head=True, source="ckpt")
  np.testing.assert_array_equal(merged["blocks_0"]["kernel"], 1.0)
  np.testing.assert_array_equal(merged["head"]["kernel"], 0.0)
  with pytest.raises(ValueError, match="reinit_head=True"):
    train._merge_pretrained(fresh, loaded, reinit_head=False, source="ckpt")
  with pytest.raises(ValueError, match="do not match the model"):
    train._merge_pretrained(
      fresh, {"blocks_0": loaded["blocks_0"]}, reinit_head=True, source="ckpt"
    )
