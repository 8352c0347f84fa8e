"""The quickstart's smoke run (`quickstart.py:runlocal`) and its seeds command, in subprocesses,
and the pieces they report with (learning curves, the seeds summary).

One quickstart run is shared: the seeds command then resumes it as its seed 0 (nothing to train)
and trains seed 1 with the same persistent compilation cache, so the file stays near a minute.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import quickstart, quickstart_seeds

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(module: str, root: Path, workdir: Path, *flags: str) -> str:
  cmd = [
    sys.executable,
    "-m",
    module,
    "--config",
    "experiments/configs/quickstart.py:runlocal",
    "--workdir",
    str(workdir),
    "--compilation_cache_dir",
    str(root / "xla"),
    *flags,
  ]
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": str(REPO),
    "DASS_JAX_CACHE": str(root / "cache"),
  }
  proc = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
  )
  log = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"exit code {proc.returncode}, log:\n{log[-4000:]}"
  return proc.stdout


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("quickstart")
  workdir = root / "seeds" / "seed0"
  stdout = _run("experiments.train", root, workdir)
  return {"root": root, "workdir": workdir, "stdout": stdout}


def test_runlocal_prints_the_table_and_writes_json_and_curves(quickstart_run):
  workdir, stdout = quickstart_run["workdir"], quickstart_run["stdout"]
  summary = json.loads((workdir / quickstart.RESULTS_FILE).read_text())
  assert set(summary["stages"]) == set(quickstart.STAGES)
  assert summary["seed"] == 0 and 0 < summary["chance_map"] < 1 and summary["seconds"] > 0
  for name, stage in summary["stages"].items():
    assert f"{name} " in stdout
    assert 0.0 <= stage["mAP"] <= 1.0 and stage["num_params"] > 0 and stage["steps"] > 0
    curves = stage["curves"]
    assert curves["train_loss"] and curves["train_label_loss"]
    # Evaluated during training (config.evals.every_steps) and at the end.
    steps = [step for step, _ in curves["valid_map"]]
    assert len(steps) >= 2 and steps == sorted(steps) and steps[-1] == stage["steps"]
    # The model chosen on valid ('best') has the best valid mAP of every evaluation.
    assert max(v for _, v in curves["valid_map"]) == pytest.approx(stage["valid"]["mAP"])
    # The test split: evaluated once, after training; its figures are the stage's.
    rows = [json.loads(r) for r in (workdir / name / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in rows if "test/mAP" in r]
    assert len(tests) == 1 and tests[0]["step"] == stage["steps"]
    assert stage["mAP"] == pytest.approx(tests[0]["test/mAP"])
    assert "valid/mAP" not in tests[0]  # a row of its own, after every valid evaluation
  assert (workdir / "student_kd" / quickstart.TEACHER_CACHE).is_file()
  kd = summary["stages"]["student_kd"]["curves"]
  assert kd["train_loss"] != kd["train_label_loss"]  # The KD part is in the total.
  png = workdir / summary["curves_png"]
  assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def test_seeds_command_resumes_seed0_and_reports_mean_std(quickstart_run):
  root = quickstart_run["root"]
  before = json.loads((quickstart_run["workdir"] / quickstart.RESULTS_FILE).read_text())
  stdout = _run("experiments.quickstart_seeds", root, root / "seeds", "--seeds", "0,1")
  result = json.loads((root / "seeds" / quickstart_seeds.RESULTS_FILE).read_text())
  assert result["seeds"] == [0, 1]
  # Seed 0 is the finished quickstart run, resumed: the same numbers.
  for name in quickstart.STAGES:
    assert result["per_seed"]["0"][name] == pytest.approx(before["stages"][name]["mAP"], abs=1e-6)
    valid = before["stages"][name]["valid"]["mAP"]
    assert result["per_seed_valid"]["0"][name] == pytest.approx(valid, abs=1e-6)
  assert (root / "seeds" / "seed1" / quickstart.CURVES_FILE).is_file()
  assert list(result["stages"]) == list(quickstart.STAGES)  # whatever stages the runs have
  assert list(result["gains"]) == ["student_kd"] and result["gains"]["student_kd"]["df"] == 1
  assert result["verdicts"][0] in stdout and "mean ± std" in stdout


def test_seeds_summary_separates_a_consistent_gain_from_noise():
  consistent = {
    s: {"teacher": 0.8, "student_kd": 0.9 + 0.01 * s, "student_nokd": 0.8 + 0.012 * s}
    for s in range(5)
  }
  summary = quickstart_seeds.summarize(consistent)
  gain = summary["gains"]["student_kd"]
  assert gain["mean"] == pytest.approx(0.096) and gain["positive"] == 5 and gain["df"] == 4
  # Paired t = mean / (std / sqrt(n)) with gains 0.100, 0.098, ..., 0.092.
  assert gain["t"] == pytest.approx(0.096 / (np.std(gain["per_seed"], ddof=1) / np.sqrt(5)))
  assert gain["p_t"] < 1e-4 and gain["p_sign"] == pytest.approx(1 / 32)
  assert gain["p_wilcoxon"] == pytest.approx(1 / 32)  # exact: all 5 ranks positive
  assert gain["significant"] and "significant at 5 %" in summary["verdicts"][0]
  assert summary["stages"]["student_kd"]["mean"] == pytest.approx(0.92)
  assert summary["stages"]["student_kd"]["std"] == pytest.approx(
    np.std([0.9, 0.91, 0.92, 0.93, 0.94], ddof=1)
  )
  noisy = {
    0: {"teacher": 0.8, "student_kd": 0.90, "student_nokd": 0.85},
    1: {"teacher": 0.8, "student_kd": 0.84, "student_nokd": 0.88},
    2: {"teacher": 0.8, "student_kd": 0.88, "student_nokd": 0.86},
  }
  summary = quickstart_seeds.summarize(noisy)
  gain = summary["gains"]["student_kd"]
  assert not gain["significant"] and "NOT significant at 5 %" in summary["verdicts"][0]
  assert gain["positive"] == 2 and gain["p_t"] > 0.05
  lines = quickstart_seeds.format_table(noisy, summary)
  assert any(line.startswith("student_kd - nokd") for line in lines)


def test_seeds_summary_compares_every_student_with_the_plain_one():
  """Extra stages (e.g. an EMA student) get their own paired gain over student_nokd."""
  runs = {
    s: {"teacher": 0.8, "student_kd": 0.85, "student_nokd": 0.84, "student_ema": 0.86 + s / 100}
    for s in range(3)
  }
  summary = quickstart_seeds.summarize(runs, valid=runs)
  assert list(summary["gains"]) == ["student_kd", "student_ema"]
  assert summary["gains"]["student_ema"]["mean"] == pytest.approx(0.03)
  assert summary["gains"]["student_kd"]["p_t"] is None  # identical gains: no t-test
  assert list(summary["valid_stages"]) == ["teacher", "student_kd", "student_nokd", "student_ema"]
  with pytest.raises(ValueError, match="different stages"):
    quickstart_seeds.summarize({0: {"teacher": 0.8}, 1: {"student_nokd": 0.8}})


def test_stage_curves_keep_the_last_value_of_a_repeated_step():
  rows = [
    {"step": 10, "train/loss": 0.5, "train/loss_label": 0.4},
    {"step": 20, "train/loss": 0.3, "train/loss_label": 0.2},
    {"step": 20, "valid/mAP": 0.5},
    {"step": 20, "train/loss": 0.25, "train/loss_label": 0.15},  # resumed run
    {"step": 40, "valid/mAP": 0.7, "test/mAP": 0.1},
  ]
  curves = quickstart.stage_curves(rows)
  assert curves["train_loss"] == [[10, 0.5], [20, 0.25]]
  assert curves["train_label_loss"] == [[10, 0.4], [20, 0.15]]
  assert curves["valid_map"] == [[20, 0.5], [40, 0.7]]
  no_teacher = quickstart.stage_curves([{"step": 5, "train/loss": 0.3}])
  assert no_teacher["train_label_loss"] == [[5, 0.3]]


def test_stage_configs_teacher_augments_students_do_not_and_train_labels_are_weak(tmp_path):
  from experiments.configs import quickstart as quickstart_config

  config = quickstart_config.get_config("runlocal")
  qs = config.quickstart
  qs.dataset_dir = str(tmp_path)
  ds = quickstart.ensure_dataset(config)
  stages = quickstart.stage_configs(config, str(tmp_path / "run"), ds)
  assert qs.missing_label_rate > 0 and ds.train_datafile.endswith("-missing0.3.json")
  assert ds.valid_datafile and ds.valid_datafile != ds.eval_datafile
  for cfg in stages.values():
    assert cfg.input.datafile == ds.train_datafile  # weak labels for every stage's training
    assert cfg.evals.input.datafile == ds.valid_datafile  # every choice on valid
    assert cfg.test.input.datafile == ds.eval_datafile  # the test split, evaluated once
    assert cfg.test.input.target_frames == cfg.evals.input.target_frames == cfg.input.target_frames
  teacher_input = stages["teacher"].input
  assert (teacher_input.mixup, teacher_input.freqm, teacher_input.timem) == (0.5, 24, 96)
  for name in ("student_kd", "student_nokd"):
    assert (stages[name].input.mixup, stages[name].input.freqm, stages[name].input.timem) == (
      0.0,
      0,
      0,
    )
  assert stages["student_kd"].teacher.path == str(tmp_path / "run" / "teacher")
  # Unaugmented students: the teacher's logits are computed once (the online teacher's update).
  assert stages["student_kd"].teacher.cache == str(
    tmp_path / "run" / "student_kd" / quickstart.TEACHER_CACHE
  )
  assert stages["student_nokd"].teacher.path == "" == stages["teacher"].teacher.path
