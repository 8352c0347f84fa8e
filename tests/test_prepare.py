"""`python -m dass_jax.prepare`: folder and CSV imports (ESC-50's layout included), split rules,
bad files, and an import that is interrupted. (The TFDS import is in test_data_tfds.py.)"""

import csv
import json
from pathlib import Path

import pytest
import soundfile as sf

from dass_jax import labels as labels_lib
from dass_jax import prepare
from dass_jax.data import datafile as datafile_lib
from tests import audio_folders

SPLITS = ("train", "valid", "test")


def _read(out: Path):
  summary = json.loads((out / "summary.json").read_text())
  entries = {s: datafile_lib.read_datafile(out / f"{s}.json") for s in SPLITS}
  return summary, entries, labels_lib.read_label_csv(out / "labels.csv")


def _wavs(entries, split):
  return {Path(e.wav).name for e in entries[split]}


def test_folder_import_writes_stratified_datafiles_and_names_bad_files(tmp_path, capsys):
  root = audio_folders.class_folder(tmp_path / "sounds", per_class=10)
  bad = audio_folders.bad_files(root / "mid")
  (root / "notes.txt").write_text("not audio")
  (root / "low" / "readme.md").write_text("not audio")
  out = tmp_path / "data"

  assert prepare.main(["--folder", str(root), "--out", str(out)]) == 0
  assert "30 clips, 3 classes (single-label); train 24, valid 3, test 3; 3 left out" in (
    capsys.readouterr().out
  )
  summary, entries, classes = _read(out)
  assert classes.names == ("high", "low", "mid")
  assert classes.mids == ("/own/high", "/own/low", "/own/mid")
  assert summary["label_kind"] == "single" and summary["num_classes"] == 3
  assert summary["source"]["ignored_files"] == 2
  skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
  assert set(skipped) == set(bad)
  for name, fragment in bad.items():
    assert fragment in skipped[name]
  # Disjoint splits that cover every good clip; every class 8 / 1 / 1.
  names = [_wavs(entries, s) for s in SPLITS]
  assert sum(len(n) for n in names) == len(set().union(*names)) == 30
  for c in summary["classes"]:
    assert c["clips"] == {"train": 8, "valid": 1, "test": 1}
  for split in SPLITS:
    for e in entries[split]:
      assert e.labels == (f"/own/{Path(e.wav).parent.name}",)
  assert summary["sample_rates"] == {"8000": 30} and summary["channels"] == {"1": 30}
  assert 0.15 <= summary["durations"]["min"] <= summary["durations"]["p95"] <= 0.31
  assert summary["splits"]["valid"]["clips"] == 3 and summary["split_rule"]["kind"] == "stratified"


def test_the_seed_fixes_the_split(tmp_path):
  root = audio_folders.class_folder(tmp_path / "sounds", per_class=20)
  outs = {}
  for name, seed in (("a", 5), ("b", 5), ("c", 6)):
    prepare.prepare(tmp_path / name, folder=str(root), seed=seed, test_fraction=0.2)
    outs[name] = {s: (tmp_path / name / f"{s}.json").read_text() for s in SPLITS}
  assert outs["a"] == outs["b"]
  assert outs["a"]["test"] != outs["c"]["test"]


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def test_csv_with_splits_groups_and_multi_label_cells(tmp_path):
  audio_folders.class_folder(tmp_path / "rec", per_class=12)
  rows = []
  for name in audio_folders.CLASSES:
    for i in range(12):
      speaker = f"spk{i % 4}"
      label = f"{name};low" if name != "low" and i % 3 == 0 else name  # some clips two labels
      split = "test" if speaker == "spk3" else "train"
      rows.append({"path": f"rec/{name}/{name}_{i}.wav", "label": label, "split": split})
      rows[-1]["group"] = speaker
  rows.append({"path": "rec/missing.wav", "label": "mid", "split": "train", "group": "spk0"})
  rows.append({"path": "rec/low/low_0.wav", "label": "", "split": "train", "group": "spk0"})
  _write_csv(tmp_path / "list.csv", rows, ["path", "label", "split", "group"])
  out = tmp_path / "data"

  summary = prepare.prepare(out, csv_file=str(tmp_path / "list.csv"), valid_fraction=0.3, seed=1)
  _, entries, _ = _read(out)
  assert summary["label_kind"] == "multi"
  assert {len(e.labels) for s in SPLITS for e in entries[s]} == {1, 2}
  reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
  assert "no such file" in reasons["missing.wav"]
  assert any("no label" in r for r in reasons.values())
  # The given test split is kept; valid is carved from train; no speaker in two splits.
  assert {e.group for e in entries["test"]} == {"spk3"}
  assert entries["valid"] and {e.group for e in entries["valid"]} <= {"spk0", "spk1", "spk2"}
  seen = {}
  for s in SPLITS:
    for e in entries[s]:
      assert seen.setdefault(e.group, s) == s
  assert summary["split_rule"]["kind"] == "given splits" and "valid" in summary["split_rule"]
  assert summary["splits"]["test"]["groups"] == 1


def test_given_splits_that_put_a_group_in_two_splits_are_refused(tmp_path):
  audio_folders.class_folder(tmp_path / "rec", per_class=2)
  rows = [
    {"path": "rec/low/low_0.wav", "label": "low", "split": "train", "group": "anna"},
    {"path": "rec/low/low_1.wav", "label": "low", "split": "test", "group": "anna"},
  ]
  _write_csv(tmp_path / "list.csv", rows, ["path", "label", "split", "group"])
  with pytest.raises(ValueError, match="group 'anna' has clips in both 'train' and 'test'"):
    prepare.prepare(tmp_path / "out", csv_file=str(tmp_path / "list.csv"))
  assert not (tmp_path / "out").exists()


def _esc50_like(root: Path) -> Path:
  """ESC-50's layout: audio/<fold>-<src>-<take>-<target>.wav and meta/esc50.csv."""
  header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
  rows = []
  for fold in range(1, 6):
    for target, category in enumerate(audio_folders.CLASSES):
      src = f"{fold}{target}0"
      for take in "AB":  # two fragments of one source recording
        name = f"{fold}-{src}-{take}-{target}.wav"
        audio = audio_folders.tone(category, fold * 2 + (take == "B"))
        (root / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(root / "audio" / name, audio, 8000)
        rows.append(dict(zip(header, [name, fold, target, category, "False", src, take])))
  _write_csv(root / "meta" / "esc50.csv", rows, header)
  return root / "meta" / "esc50.csv"


def test_esc50_csv_imports_with_the_column_mapping_and_its_folds(tmp_path):
  csv_path = _esc50_like(tmp_path / "ESC-50")
  out = tmp_path / "esc"
  argv = [
    "--csv",
    str(csv_path),
    "--audio-root",
    str(tmp_path / "ESC-50" / "audio"),
    "--columns",
    "path=filename,label=category,fold=fold,group=src_file",
    "--out",
    str(out),
  ]
  assert prepare.main(argv) == 0
  summary, entries, _ = _read(out)
  assert summary["split_rule"] == {
    "kind": "folds",
    "folds": ["1", "2", "3", "4", "5"],
    "test_fold": "5",
    "valid_fold": "4",
  }
  assert {e.fold for e in entries["test"]} == {"5"} and len(entries["test"]) == 6
  assert {e.fold for e in entries["valid"]} == {"4"}
  assert {e.fold for e in entries["train"]} == {"1", "2", "3"}
  assert all(e.group for s in SPLITS for e in entries[s])
  assert summary["folds"] == {str(f): {"clips": 6} for f in range(1, 6)}
  assert summary["source"]["columns"]["label"] == "category"

  prepare.prepare(
    tmp_path / "esc_fold1",
    csv_file=str(csv_path),
    audio_root=str(tmp_path / "ESC-50" / "audio"),
    columns="path=filename,label=category,fold=fold",
    test_fold="1",
  )
  _, entries, _ = _read(tmp_path / "esc_fold1")
  assert {e.fold for e in entries["test"]} == {"1"} and {e.fold for e in entries["valid"]} == {"5"}


def test_esc50_csv_without_the_mapping_says_which_column_is_missing(tmp_path, capsys):
  csv_path = _esc50_like(tmp_path / "ESC-50")
  assert prepare.main(["--csv", str(csv_path), "--out", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert "no column 'path'" in err and "--columns path=COLUMN" in err


def test_an_interrupted_import_leaves_no_output(tmp_path, monkeypatch):
  root = audio_folders.class_folder(tmp_path / "sounds", per_class=5)
  written = []
  original = datafile_lib.write_datafile

  def write_then_stop(path, entries):
    original(path, entries)
    written.append(path)
    if len(written) == 2:
      raise KeyboardInterrupt  # e.g. Ctrl-C between two files

  monkeypatch.setattr(datafile_lib, "write_datafile", write_then_stop)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(tmp_path / "data", folder=str(root))
  assert len(written) == 2 and all(Path(p).parent != tmp_path / "data" for p in written)
  assert not (tmp_path / "data").exists()
  assert not list(tmp_path.glob(".tmp-data*"))


def test_an_existing_output_is_refused_untouched_or_replaced_on_request(tmp_path, capsys):
  root = audio_folders.class_folder(tmp_path / "sounds", per_class=5)
  out = tmp_path / "data"
  out.mkdir()
  (out / "mine.txt").write_text("keep me")
  assert prepare.main(["--folder", str(root), "--out", str(out)]) == 2
  assert "exists" in capsys.readouterr().err
  assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
  assert prepare.main(["--folder", str(root), "--out", str(out), "--overwrite"]) == 0
  assert sorted(p.name for p in out.iterdir()) == [
    "labels.csv",
    "summary.json",
    "test.json",
    "train.json",
    "valid.json",
  ]


def test_a_folder_without_class_folders_is_a_clear_error(tmp_path, capsys):
  (tmp_path / "flat").mkdir()
  (tmp_path / "flat" / "a.wav").write_bytes(b"")
  assert prepare.main(["--folder", str(tmp_path / "flat"), "--out", str(tmp_path / "o")]) == 2
  assert "no audio files" in capsys.readouterr().err and not (tmp_path / "o").exists()
