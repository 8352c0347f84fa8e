"""A converted Dasheng teacher distils a tiny AST student in `experiments.train`, online and cached.

Dasheng takes waveforms, the student fbank: the pipeline adds the (mixed) waveform each fbank row
was made from (`data.waveform`), and the teacher reads it. SpecAugment acts on the student's fbank
only, so with it on, the online teacher still sees the clean clip and the logits cache (built on
the clean clips) must give the very same update: both runs here use SpecAugment. Mixup changes
the teacher's input, so a cache with mixup is refused. The runs reuse test_train_runs.py's tiny
AST config and helpers.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_reference import dasheng_reference

try:
  dasheng_reference.import_dasheng()
except ImportError as e:
  pytest.skip(f"PyTorch reference unavailable: {e}", allow_module_level=True)

import test_train_runs as runs

from convert_torch.__main__ import main as convert_main
from dass_jax import data
from dass_jax.data import synthetic
from dass_jax.frontends import kaldi_fbank

SPEC_AUGMENT = ["--config.input.freqm=24", "--config.input.timem=40"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """test_train_runs' tiny AST config on its tiny synthetic dataset, in a folder of our own."""
  root = tmp_path_factory.mktemp("dasheng_teacher")
  ds = synthetic.ensure_dataset(root / "data", num_train=16, num_eval=8, clip_seconds=1.0)
  config = root / "tiny_config.py"
  config.write_text(
    runs.CONFIG.format(train=ds.train_datafile, eval=ds.eval_datafile, labels=ds.label_csv)
  )
  return {"root": root, "config": str(config), "dataset": ds, "cache": str(root / "xla")}


@pytest.fixture(scope="module")
def teacher(env):
  """A tiny random Dasheng classifier from the dasheng package, converted by the CLI."""
  torch.manual_seed(7)
  classes = env["dataset"].num_classes
  model = dasheng_reference.randomize_(dasheng_reference.DashengClassifier(32, 1, 2, classes), 8)
  torch.save(dasheng_reference.classifier_state_dict(model), env["root"] / "dasheng_tiny.pt")
  out = env["root"] / "dasheng_teacher"
  assert (
    convert_main(["dasheng", str(env["root"] / "dasheng_tiny.pt"), str(out), "--num-heads", "2"])
    == 0
  )
  return out


def test_waveform_entry_is_the_audio_of_the_student_fbank(env):
  ds = env["dataset"]
  cfg = data.default_config(
    datafile=ds.train_datafile,
    label_csv=ds.label_csv,
    target_frames=98,
    batch_size=4,
    freqm=0,
    timem=0,
    mixup=1.0,
    waveform=True,
    read_threads=1,
  )
  batch = next(data.make_train_iterator(cfg, seed=3))
  assert batch["waveform"].shape == (4, 97 * 160 + 400)
  for waveform, fbank in zip(batch["waveform"], batch["fbank"]):
    again = kaldi_fbank.normalize(kaldi_fbank.fbank(waveform))
    np.testing.assert_allclose(again, fbank, atol=2e-4)
  assert "waveform" not in next(
    data.make_train_iterator({**cfg.to_dict(), "waveform": False}, seed=3)
  )


def test_online_and_cached_dasheng_teacher_give_the_same_student(env, teacher):
  root = env["root"]
  cache = root / "dasheng_logits.npy"
  common = [
    "--config.total_steps=3",
    f"--config.teacher.path={teacher}",
    "--config.loss.kd_weight=0.5",
    *SPEC_AUGMENT,
  ]
  online = runs._start(env, root / "dasheng_online", *common)
  cached = runs._start(env, root / "dasheng_cached", *common, f"--config.teacher.cache={cache}")
  log = runs._finish(online)
  runs._finish(cached)
  assert "DashengConfig, takes waveform" in log
  logits = np.load(cache)
  assert logits.shape == (16, env["dataset"].num_classes) and np.all(np.isfinite(logits))
  keys = ("train/loss", "train/loss_kd", "train/loss_label")
  a, b = runs._losses(root / "dasheng_online", keys), runs._losses(root / "dasheng_cached", keys)
  assert sorted(a) == [1, 2, 3]
  for step in a:
    np.testing.assert_allclose(a[step], b[step], atol=1e-5)
    assert a[step][1] > 0
  runs._assert_exports_close(root / "dasheng_online", root / "dasheng_cached", atol=1e-5)


def test_cache_with_mixup_is_refused(env, teacher):
  root = env["root"]
  mixup = runs._start(
    env,
    root / "dasheng_cached_mixup",
    f"--config.teacher.path={teacher}",
    f"--config.teacher.cache={root / 'unused.npy'}",
    "--config.input.mixup=0.5",
  )
  assert "waveform teacher's input uses {'mixup': 0.5}" in runs._finish(mixup, expect_rc=1)
