"""A model that takes waveforms (Dasheng) trained as the student of `experiments.train`.

A tiny Dasheng trains from scratch for three steps on tiny synthetic data, alone and distilled
from a tiny fbank teacher (a random AST), in subprocesses as tests/test_train_runs.py does.
Checked: every trained param moved from the run's own initialisation, while the BatchNorm
statistics (`ModelSpec.frozen`) are those of the first batch and stayed put under weight decay;
the evaluator fed the model the
eval clips' waveforms over the span of the eval frames ((98 - 1) * 160 + 400 samples), which the
run's final mAP reproduces when rebuilt here from the wav files; the export is a converted
checkpoint that `dass_jax.predict` and the length study load; the AST teacher read the fbank
(its KD loss is finite and positive at every step). Refusals: audio at another rate than 16 kHz.
"""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_train_runs as runs

from dass_jax import audio, data, models
from dass_jax.checkpoint import save_converted
from dass_jax.data import synthetic
from dass_jax.frontends import dasheng_mel
from dass_jax.predict import main as predict_main
from experiments import evaluate, niah, sharding
from experiments import metrics as metrics_lib
from experiments.configs import quickstart, quickstart_dasheng

FRAMES = 98
SAMPLES = (FRAMES - 1) * 160 + 400  # the waveform span of FRAMES Kaldi frames

CONFIG = textwrap.dedent('''\
    """Tiny Dasheng student on a tiny synthetic dataset, for the tests."""
    import ml_collections
    from experiments.configs import common


    def get_config(arg=None):
      c = common.base_config()
      c.seed = 0
      c.model_type = "dasheng"
      c.model = ml_collections.ConfigDict({{"embed_dim": 16, "depth": 1, "num_heads": 2,
                                           "mlp_dim": 32, "chunk_tokens": 8}})
      c.batch_size = 8
      c.total_steps = 3
      for section, datafile in ((c.input, {train!r}), (c.evals.input, {eval!r})):
        section.datafile, section.label_csv = datafile, {labels!r}
        section.target_frames = {frames}
        section.read_threads = 1
      c.input.freqm, c.input.timem, c.input.mixup = 0, 0, 0.5
      c.evals.batch_size = 8
      c.optim.lr = 1e-3
      c.optim.warmup_steps = 0
      c.log_every_steps = 1
      c.checkpoint_every_steps = 1
      c.fsdp_min_size = 0
      return c
    ''')


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("waveform_student")
  ds = synthetic.ensure_dataset(root / "data", num_train=16, num_eval=8, clip_seconds=1.0)
  config = root / "tiny_dasheng.py"
  config.write_text(
    CONFIG.format(
      train=ds.train_datafile, eval=ds.eval_datafile, labels=ds.label_csv, frames=FRAMES
    )
  )
  return {"root": root, "config": str(config), "dataset": ds, "cache": str(root / "xla")}


@pytest.fixture(scope="module")
def ast_teacher(env):
  """A tiny random AST classifier (an fbank teacher) as a converted checkpoint."""
  cfg = models.AstConfig(
    num_classes=env["dataset"].num_classes,
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    mlp_dim=32,
    max_length=FRAMES,
  )
  shapes = jax.eval_shape(
    models.build_model(cfg).init, jax.random.key(0), jnp.zeros(cfg.example_input_shape())
  )
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda s: 0.3 * rng.standard_normal(s.shape, np.float32), shapes["params"])
  save_converted(env["root"] / "ast_teacher", cfg, params)
  return env["root"] / "ast_teacher"


@pytest.fixture(scope="module")
def trained(env, ast_teacher):
  """The three runs, started together: alone, distilled from the AST, and at 22.05 kHz."""
  root = env["root"]
  procs = {
    "alone": runs._start(env, root / "alone"),
    "ast_kd": runs._start(
      env, root / "ast_kd", f"--config.teacher.path={ast_teacher}", "--config.loss.kd_weight=0.5"
    ),
    "rate": runs._start(env, root / "rate", "--config.input.sample_rate=22050"),
  }
  logs = {name: runs._finish(p, expect_rc=1 if name == "rate" else 0) for name, p in procs.items()}
  return logs


def _flat(tree):
  return {
    jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_params_moved_from_the_init_and_statistics_stayed(env, trained):
  """The export differs from the run's initialisation (PRNGKey(seed) split, as train.py draws
  it) in every trained leaf; the frozen BatchNorm statistics are the per-mel-bin dB mean and
  variance of the first training batch's waveforms, untouched by the updates (weight decay on)."""
  log = trained["alone"]
  assert "DashengConfig with 0.01M params, takes waveform" in log
  assert "init_bn/mean, init_bn/var from the first batch" in log
  model, exported, cfg = niah.load_for_eval(str(env["root"] / "alone"))
  init_key, _ = jax.random.split(jax.random.PRNGKey(0))
  init = model.init({"params": init_key}, jnp.zeros(cfg.example_input_shape()), train=False)
  init, exported = _flat(init["params"]), _flat(exported)
  assert init.keys() == exported.keys()
  frozen = {f"['{a}']['{b}']" for a, b in (p.split("/") for p in models.spec_of(cfg).frozen)}
  assert frozen == {"['init_bn']['mean']", "['init_bn']['var']"}
  for name, value in init.items():
    if name not in frozen:
      assert np.max(np.abs(exported[name] - value)) > 1e-5, name
  run = json.loads((env["root"] / "alone" / "train_config.json").read_text())
  assert run["optim"]["weight_decay"] > 0
  train_cfg = data.default_config(**{**run["input"], "batch_size": run["batch_size"]})
  train_cfg.waveform = True
  first = next(data.make_train_iterator(train_cfg, seed=run["seed"]))["waveform"]
  db = np.asarray(dasheng_mel.log_mel_db(first), np.float64)
  # float32 statistics against float64 (measured 3e-6 / 5e-5 max abs); Adam would have moved a
  # decayed leaf by ~lr = 1e-3 per step.
  np.testing.assert_allclose(exported["['init_bn']['mean']"], db.mean(axis=(0, 1)), atol=1e-4)
  np.testing.assert_allclose(exported["['init_bn']['var']"], db.var(axis=(0, 1)), atol=5e-4)


def test_eval_fed_the_waveforms_of_the_eval_frames(env, trained):
  """The evaluator's model input is (batch, SAMPLES) waveforms: its scores are the model's on
  the eval wavs cropped / zero-padded to SAMPLES, and so is the run's final mAP."""
  model, params, _ = niah.load_for_eval(str(env["root"] / "alone" / "export"))
  ds = env["dataset"]
  entries = data.read_datafile(ds.eval_datafile)
  waves = np.zeros((len(entries), SAMPLES), np.float32)
  for row, entry in zip(waves, entries):
    clip = audio.load_audio(entry.wav)[:SAMPLES]
    row[: clip.size] = clip
  want = np.asarray(jax.nn.sigmoid(model.apply({"params": params}, waves)))

  shapes = []

  class Spy:  # the model as the evaluator uses it, recording what it is applied to
    config = model.config

    def apply(self, variables, x, train):
      shapes.append(x.shape)
      return model.apply(variables, x, train=train)

  eval_cfg = data.default_config(
    datafile=ds.eval_datafile, label_csv=ds.label_csv, target_frames=FRAMES, read_threads=1
  )
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 1)))
  scores, targets, _ = evaluate.Evaluator(Spy(), eval_cfg, mesh, 8).scores(params)
  assert shapes == [(8, SAMPLES)]
  np.testing.assert_allclose(scores, want, atol=1e-5)
  chosen = json.loads((env["root"] / "alone" / "results.json").read_text())["selected"]["model"]
  final = json.loads((env["root"] / "alone" / "eval" / f"valid_{chosen}.json").read_text())
  assert final["mAP"] == pytest.approx(metrics_lib.compute_metrics(want, targets)["mAP"], abs=1e-6)


def test_export_runs_in_predict(env, trained, tmp_path, capsys):
  export = env["root"] / "alone" / "export"
  wav = data.read_datafile(env["dataset"].eval_datafile)[0].wav
  argv = ["--checkpoint", str(export), wav, "--logits-npy", str(tmp_path / "l.npy"), "--json"]
  assert predict_main(argv) == 0
  assert json.loads(capsys.readouterr().out)["model_type"] == "dasheng"
  model, params, _ = niah.load_for_eval(str(export))
  want = model.apply({"params": params}, audio.load_audio(wav)[None])
  np.testing.assert_allclose(np.load(tmp_path / "l.npy"), want, atol=1e-5)


def test_fbank_teacher_distils_a_waveform_student(env, trained):
  log = trained["ast_kd"]
  assert "(AstConfig, takes fbank)" in log and "takes waveform" in log
  losses = runs._losses(env["root"] / "ast_kd", ("train/loss", "train/loss_kd"))
  assert sorted(losses) == [1, 2, 3]
  assert all(np.isfinite(total) and 0 < kd < 1e3 for total, kd in losses.values())
  alone = runs._losses(env["root"] / "alone")
  assert losses[1][0] != alone[1][0]  # the teacher's term is in the loss


def test_refusals(trained):
  assert (
    "a model that takes waveforms reads 16000 Hz audio, but the data config's sample_rate "
    "is 22050" in trained["rate"]
  )


def test_waveform_entry_only_when_a_model_reads_it():
  cfg = data.default_config(waveform=True)
  data.request_inputs(cfg, {"fbank"})
  assert cfg.waveform is False
  data.request_inputs(cfg, ["fbank", "waveform"])
  assert cfg.waveform is True
  cfg.sample_rate = 8000
  data.request_inputs(cfg, ["fbank"])  # no waveform model: any rate
  with pytest.raises(ValueError, match="sample_rate is 8000"):
    data.request_inputs(cfg, ["waveform"])


@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_quickstart_dasheng_config_chunks_at_its_clip_length(arg):
  """The batch's waveform for the quickstart clips makes exactly one chunk of tokens."""
  c = quickstart_dasheng.get_config(arg)
  config = models.config_from_dict({"model_type": c.model_type, **c.model.to_dict()})
  assert isinstance(config, models.DashengConfig)
  samples = (c.input.target_frames - 1) * 160 + 400
  tokens = jax.eval_shape(
    lambda x: models.build_model(config).init_with_output(
      jax.random.key(0), x, method=models.Dasheng.embed
    )[0],
    jax.ShapeDtypeStruct((1, samples), jnp.float32),
  ).shape[1]
  assert tokens == config.chunk_tokens
  assert c.workdir != quickstart.get_config(arg).workdir  # never resumes the DASS quickstart
