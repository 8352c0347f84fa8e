r"""Imports labelled recordings as train / valid / test datafiles for `experiments.train`.

    python -m dass_jax.prepare --folder DIR --out OUT [--valid-fraction 0.1] [--test-fraction 0.1]
                               [--seed 0]
    python -m dass_jax.prepare --csv FILE --out OUT [--columns path=COL,label=COL,...]
                               [--audio-root DIR] [--test-fold K] [--valid-fold K]
    python -m dass_jax.prepare --tfds NAME --out OUT [--tfds-data-dir DIR]

Inputs:
  --folder DIR  one sub-folder per class, named after the class (`DIR/dog/a.wav`, `DIR/rain/
                b.flac`; deeper folders inside a class folder belong to that class). Files
                without an audio extension (`dass_jax.audio.AUDIO_EXTENSIONS`) are ignored and
                counted.
  --csv FILE    a header row and the columns `path,label`, optionally `fold` or `split`
                (train / valid / test; 'validation', 'val' and 'dev' also mean valid) and
                `group`. Paths are relative to the CSV's folder (or to --audio-root). A label cell
                with several labels separated by ';' makes a multi-label clip. --columns maps
                these names to the file's own column names, e.g. ESC-50's `meta/esc50.csv`
                (`filename,fold,target,category,esc10,src_file,take`, audio in `../audio`):
                  --csv ESC-50/meta/esc50.csv --audio-root ESC-50/audio \
                  --columns path=filename,label=category,fold=fold,group=src_file
  --tfds NAME   a prepared TFDS dataset (`tfds.data_source`, ArrayRecord files; needs the [tfds]
                extra, not TensorFlow) with an audio feature and a label feature ('label' or
                'labels': a ClassLabel or a sequence of them); its splits train / validation (or
                valid) / test are kept. Each example's audio is written into OUT/audio/<split>/
                as a WAV at the dataset's own sample rate.

Splits:
  * a `split` column (or the TFDS splits): kept as given; a valid split missing from them is carved
    from train by --valid-fraction, a missing test split likewise by --test-fraction;
  * a `fold` column: --test-fold (default: the last fold) is the test split, --valid-fold
    (default: the fold before the test fold, cyclically) the valid split, the other folds train;
    the clips keep their fold in the datafiles (`experiments.probe` cross-validates over folds);
  * otherwise: a deterministic stratified split by --valid-fraction and --test-fraction under
    --seed (`dass_jax.data.splits`: every class in each split by its fraction).
A `group` (speaker, session, source recording) never crosses splits: carved and stratified splits
move whole groups, and given splits or folds that put a group in two splits are refused.

Every file is decoded once (its own rate, no resampling). Unreadable, empty or too short files
(under --min-seconds, default 0.025 s: one 25 ms analysis window) and rows without a label are
left out and listed in summary.json with the reason; nothing stops the import half-way. OUT is
built in a temporary sibling folder and renamed into place when complete: it appears whole or not
at all (an existing OUT is refused unless --overwrite).

Output (OUT/):
  train.json, valid.json, test.json  AST-format datafiles (`dass_jax.data`): {"data": [{"wav",
                                     "labels": "mid,mid", "fold"?, "group"?}, ...]}; wav paths
                                     absolute, or relative to OUT for audio written into it
  labels.csv                         index,mid,display_name (`dass_jax.labels`); classes in natural
                                     order of their names; ids generated as '/own/<name>'
  summary.json                       see `prepare`: the source, the split rule, label kind
                                     (single / multi), classes with clips per split, clips and
                                     seconds per split, durations, sample rates, channels, and
                                     every file left out with its reason

Next: `python -m experiments.train --config experiments/configs/own_data.py:OUT --workdir W`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from dass_jax import audio, files
from dass_jax import labels as labels_lib
from dass_jax.data import datafile as datafile_lib
from dass_jax.data import splits as splits_lib

MIN_SECONDS = 0.025  # one 25 ms Kaldi window: a shorter clip has no fbank frame
LABEL_SEPARATOR = ";"
CSV_COLUMNS = ("path", "label", "fold", "split", "group")
SPLIT_NAMES = {
  "train": splits_lib.TRAIN,
  "valid": splits_lib.VALID,
  "validation": splits_lib.VALID,
  "val": splits_lib.VALID,
  "dev": splits_lib.VALID,
  "test": splits_lib.TEST,
}
MID_PREFIX = "/own/"
SUMMARY_FILE = "summary.json"
LABELS_FILE = "labels.csv"


@dataclasses.dataclass
class Clip:
  """One recording to import: its file and labels, and what the source says about its split."""

  path: str
  labels: tuple[str, ...]
  split: str | None = None
  fold: str | None = None
  group: str | None = None


def clips_from_folder(folder: str | os.PathLike) -> tuple[list[Clip], dict[str, Any]]:
  """The audio files under `folder/<class>/`, labelled by their class folder.

  Returns (clips, source description with the count of ignored non-audio files).
  """
  root = Path(folder)
  if not root.is_dir():
    raise FileNotFoundError(f"--folder {folder}: no such folder")
  clips, ignored = [], 0
  class_dirs = sorted(
    (d for d in root.iterdir() if d.is_dir()), key=lambda d: labels_lib.natural_key(d.name)
  )
  for class_dir in class_dirs:
    for path in sorted(class_dir.rglob("*")):
      if path.is_dir():
        continue
      if audio.has_audio_extension(path):
        clips.append(Clip(path=str(path.absolute()), labels=(class_dir.name,)))
      else:
        ignored += 1
  ignored += sum(1 for p in root.iterdir() if p.is_file())
  if not clips:
    raise ValueError(
      f"--folder {folder}: no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) in class "
      f"sub-folders (expected {folder}/<class>/<file>)"
    )
  return clips, {"kind": "folder", "path": str(root.absolute()), "ignored_files": ignored}


def parse_columns(text: str | None) -> dict[str, str]:
  """'path=filename,label=category' -> {field: column}; fields not named map to themselves."""
  mapping = {field: field for field in CSV_COLUMNS}
  for item in (text or "").split(","):
    item = item.strip()
    if not item:
      continue
    field, sep, column = item.partition("=")
    if not sep or field.strip() not in CSV_COLUMNS or not column.strip():
      raise ValueError(
        f"--columns item {item!r}: expected FIELD=COLUMN with FIELD one of {', '.join(CSV_COLUMNS)}"
      )
    mapping[field.strip()] = column.strip()
  return mapping


def clips_from_csv(
  csv_file: str | os.PathLike,
  columns: dict[str, str],
  audio_root: str | os.PathLike | None = None,
) -> tuple[list[Clip], list[dict[str, str]], dict[str, Any]]:
  """The rows of a CSV as clips.

  Returns (clips, rows left out with their reason, source description). A row without a label is
  left out; a missing file is found (and left out) when the audio is decoded.
  """
  csv_path = Path(csv_file)
  if not csv_path.is_file():
    raise FileNotFoundError(f"--csv {csv_file}: no such file")
  root = Path(audio_root) if audio_root else csv_path.parent
  with open(csv_path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    rows = list(reader)
  for field in ("path", "label"):
    if columns[field] not in header:
      raise ValueError(
        f"--csv {csv_file}: no column {columns[field]!r} for the clip's {field} (columns: "
        f"{', '.join(header)}); map it with --columns {field}=COLUMN"
      )
  present = {f: columns[f] for f in ("fold", "split", "group") if columns[f] in header}
  if "fold" in present and "split" in present:
    raise ValueError(f"--csv {csv_file}: has both a fold and a split column; map only one")
  clips, skipped = [], []
  for line, row in enumerate(rows, start=2):
    rel = (row.get(columns["path"]) or "").strip()
    if not rel:
      skipped.append({"path": f"{csv_path}:{line}", "reason": "no path in the row"})
      continue
    path = str((root / rel).absolute())
    names = tuple(
      n.strip() for n in (row.get(columns["label"]) or "").split(LABEL_SEPARATOR) if n.strip()
    )
    if not names:
      skipped.append({"path": path, "reason": f"no label ({csv_path}:{line})"})
      continue
    extra = {f: (row.get(col) or "").strip() or None for f, col in present.items()}
    if "split" in extra:
      given = extra["split"]
      if given is None or given.lower() not in SPLIT_NAMES:
        raise ValueError(
          f"{csv_path}:{line}: split {given!r} is not one of {', '.join(SPLIT_NAMES)}"
        )
      extra["split"] = SPLIT_NAMES[given.lower()]
    if "fold" in extra and extra["fold"] is None:
      raise ValueError(f"{csv_path}:{line}: empty fold")
    clips.append(Clip(path=path, labels=tuple(dict.fromkeys(names)), **extra))
  source = {
    "kind": "csv",
    "path": str(csv_path.absolute()),
    "audio_root": str(root.absolute()),
    "columns": {f: columns[f] for f in ("path", "label", *present)},
  }
  return clips, skipped, source


def clips_from_tfds(
  name: str, data_dir: str | None, audio_dir: Path
) -> tuple[list[Clip], list[dict[str, str]], dict[str, Any]]:
  """Writes every example of a TFDS dataset as a WAV under `audio_dir/<split>/` and returns them
  as clips with their TFDS split (see `dass_jax.data.tfds_source`)."""
  import soundfile as sf

  from dass_jax.data import tfds_source

  dataset = tfds_source.TfdsDataset(name, data_dir=data_dir)
  clips, skipped = [], []
  for tfds_split in dataset.splits:
    split = SPLIT_NAMES.get(tfds_split.lower())
    if split is None:
      skipped.append({"path": f"{name}[{tfds_split}]", "reason": "not a train/valid/test split"})
      continue
    folder = audio_dir / tfds_split
    folder.mkdir(parents=True, exist_ok=True)
    source = dataset.source(tfds_split)
    width = len(str(max(len(source) - 1, 0)))
    for row in range(len(source)):
      where = f"{name}[{tfds_split}] row {row}"
      try:
        samples, rate = dataset.audio(source, row)
        names = dataset.label_names(source, row)
      except ValueError as e:
        skipped.append({"path": where, "reason": str(e)})
        continue
      if not names:
        skipped.append({"path": where, "reason": "no label"})
        continue
      path = folder / f"{row:0{width}d}.wav"
      subtype = "PCM_16" if samples.dtype == np.int16 else "FLOAT"
      sf.write(path, samples, rate, subtype=subtype)
      clips.append(Clip(path=str(path), labels=names, split=split))
  source_info = {"kind": "tfds", "name": name, "data_dir": data_dir, "splits": dataset.splits}
  return clips, skipped, source_info


def inspect_clips(
  clips: list[Clip], min_seconds: float, workers: int
) -> tuple[list[tuple[Clip, audio.AudioInfo]], list[dict[str, str]]]:
  """Decodes every clip once; returns (kept clips with their audio info, clips left out)."""

  def inspect(clip: Clip) -> audio.AudioInfo | str:
    try:
      info = audio.inspect_audio(clip.path)
    except audio.AudioLoadError as e:  # its message starts with the path, which is listed too
      return str(e).removeprefix(f"{clip.path}: ")
    except Exception as e:  # a decoder's own failure is a bad file too, never a crash
      return f"{type(e).__name__}: {e}"
    if info.seconds < min_seconds:
      return f"too short: {info.seconds:.4f} s < {min_seconds} s"
    return info

  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
    results = list(pool.map(inspect, clips))
  kept, skipped = [], []
  for clip, result in zip(clips, results):
    if isinstance(result, str):
      skipped.append({"path": clip.path, "reason": result})
    else:
      kept.append((clip, result))
  return kept, skipped


def choose_splits(
  clips: list[Clip],
  *,
  valid_fraction: float,
  test_fraction: float,
  seed: int,
  test_fold: str | None = None,
  valid_fold: str | None = None,
) -> tuple[list[str], dict[str, Any]]:
  """Each clip's split by the module's rules; returns (splits, a description of the rule)."""
  labels = [c.labels for c in clips]
  groups = [c.group for c in clips]
  keys = [c.path for c in clips]
  if any(c.split for c in clips):
    split = [c.split for c in clips]
    splits_lib.check_groups(split, groups, "the given splits")
    rule: dict[str, Any] = {"kind": "given splits"}
    for missing, fraction in ((splits_lib.VALID, valid_fraction), (splits_lib.TEST, test_fraction)):
      if missing not in split and fraction > 0:
        split = splits_lib.carve(
          split, labels, groups, splits_lib.TRAIN, missing, fraction, seed, keys
        )
        rule[missing] = f"carved from train: fraction {fraction}, seed {seed}"
    return split, rule
  if any(c.fold for c in clips):
    folds = sorted({c.fold for c in clips}, key=labels_lib.natural_key)
    if len(folds) < 3:
      raise ValueError(f"the fold column has {len(folds)} fold(s) {folds}; need 3 or more")
    test = test_fold if test_fold is not None else folds[-1]
    valid = valid_fold if valid_fold is not None else folds[(folds.index(test) - 1) % len(folds)]
    for name, fold in (("--test-fold", test), ("--valid-fold", valid)):
      if fold not in folds:
        raise ValueError(f"{name} {fold!r} is not a fold of the data ({', '.join(folds)})")
    if valid == test:
      raise ValueError(f"--valid-fold and --test-fold are both {test!r}")
    split = [
      splits_lib.TEST if c.fold == test else splits_lib.VALID if c.fold == valid else "train"
      for c in clips
    ]
    splits_lib.check_groups(split, groups, "the folds")
    return split, {"kind": "folds", "folds": folds, "test_fold": test, "valid_fold": valid}
  fractions = {splits_lib.VALID: valid_fraction, splits_lib.TEST: test_fraction}
  split = splits_lib.assign_splits(labels, groups, fractions, seed, keys=keys)
  return split, {"kind": "stratified", **{f"{k}_fraction": v for k, v in fractions.items()}}


def class_table(names: list[str]) -> labels_lib.LabelSet:
  """Classes in natural order of their names, with generated ids '/own/<slug>' (unique)."""
  ordered = sorted(set(names), key=labels_lib.natural_key)
  mids, used = [], set()
  for name in ordered:
    slug = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"
    mid, n = MID_PREFIX + slug, 2
    while mid in used:
      mid, n = f"{MID_PREFIX}{slug}_{n}", n + 1
    used.add(mid)
    mids.append(mid)
  return labels_lib.LabelSet(mids=tuple(mids), names=tuple(ordered))


def _durations(seconds: list[float]) -> dict[str, float]:
  if not seconds:
    return {}
  x = np.asarray(seconds)
  return {
    "min": float(x.min()),
    "p5": float(np.percentile(x, 5)),
    "median": float(np.median(x)),
    "mean": float(x.mean()),
    "p95": float(np.percentile(x, 95)),
    "max": float(x.max()),
    "total": float(x.sum()),
  }


def summarize(
  kept: list[tuple[Clip, audio.AudioInfo]],
  split: list[str],
  classes: labels_lib.LabelSet,
  skipped: list[dict[str, str]],
  source: dict[str, Any],
  rule: dict[str, Any],
  settings: dict[str, Any],
) -> dict[str, Any]:
  """summary.json's content (see `prepare`)."""
  per_class = {name: Counter() for name in classes.names}
  per_split = {s: {"clips": 0, "seconds": 0.0, "groups": set()} for s in splits_lib.SPLITS}
  for (clip, info), s in zip(kept, split):
    for name in clip.labels:
      per_class[name][s] += 1
    per_split[s]["clips"] += 1
    per_split[s]["seconds"] += info.seconds
    if clip.group is not None:
      per_split[s]["groups"].add(clip.group)
  folds = sorted({c.fold for c, _ in kept if c.fold}, key=labels_lib.natural_key)
  return {
    "source": source,
    "split_rule": rule,
    "settings": settings,
    "label_kind": "multi" if any(len(c.labels) > 1 for c, _ in kept) else "single",
    "num_classes": len(classes),
    "num_clips": len(kept),
    "classes": [
      {"index": i, "mid": mid, "name": name, "clips": {s: per_class[name][s] for s in per_split}}
      for i, (mid, name) in enumerate(zip(classes.mids, classes.names))
    ],
    "splits": {
      s: {"clips": v["clips"], "seconds": v["seconds"], "groups": len(v["groups"])}
      for s, v in per_split.items()
    },
    "folds": {fold: {"clips": sum(1 for c, _ in kept if c.fold == fold)} for fold in folds},
    "durations": _durations([info.seconds for _, info in kept]),
    "durations_by_split": {
      s: _durations([info.seconds for (_, info), t in zip(kept, split) if t == s])
      for s in per_split
    },
    "sample_rates": dict(Counter(str(info.sample_rate) for _, info in kept)),
    "channels": dict(Counter(str(info.channels) for _, info in kept)),
    "skipped": skipped,
  }


def write_dataset(
  folder: Path,
  kept: list[tuple[Clip, audio.AudioInfo]],
  split: list[str],
  classes: labels_lib.LabelSet,
  summary: dict[str, Any],
) -> None:
  """Writes the three datafiles, labels.csv and summary.json into `folder`."""
  mid_of = dict(zip(classes.names, classes.mids))
  for name in splits_lib.SPLITS:
    entries = [
      datafile_lib.Entry(
        wav=clip.path,
        labels=tuple(mid_of[n] for n in clip.labels),
        fold=clip.fold,
        group=clip.group,
      )
      for (clip, _), s in zip(kept, split)
      if s == name
    ]
    datafile_lib.write_datafile(folder / f"{name}.json", entries)
  labels_lib.write_label_csv(folder / LABELS_FILE, classes)
  files.write_json(folder / SUMMARY_FILE, summary)


def prepare(
  out: str | os.PathLike,
  *,
  folder: str | None = None,
  csv_file: str | None = None,
  tfds_name: str | None = None,
  columns: str | None = None,
  audio_root: str | None = None,
  tfds_data_dir: str | None = None,
  valid_fraction: float = 0.1,
  test_fraction: float = 0.1,
  seed: int = 0,
  test_fold: str | None = None,
  valid_fold: str | None = None,
  min_seconds: float = MIN_SECONDS,
  workers: int = 4,
  overwrite: bool = False,
) -> dict[str, Any]:
  """Imports one source (exactly one of folder, csv_file, tfds_name) into `out`; returns the
  summary written to out/summary.json.

  summary.json: {"source": {"kind", "path" | "name", ...}, "split_rule": {"kind": "given splits"
  | "folds" | "stratified", ...}, "settings": {the options}, "label_kind": "single" | "multi",
  "num_classes", "num_clips", "classes": [{"index", "mid", "name", "clips": {split: n}}],
  "splits": {split: {"clips", "seconds", "groups"}}, "folds": {fold: {"clips"}}, "durations" and
  "durations_by_split": {"min", "p5", "median", "mean", "p95", "max", "total"} seconds,
  "sample_rates": {rate: clips}, "channels": {count: clips}, "skipped": [{"path", "reason"}]}.
  """
  if sum(x is not None for x in (folder, csv_file, tfds_name)) != 1:
    raise ValueError("give exactly one of --folder, --csv and --tfds")
  for name, fraction in (("--valid-fraction", valid_fraction), ("--test-fraction", test_fraction)):
    if not 0.0 <= fraction < 1.0:
      raise ValueError(f"{name} must be in [0, 1), got {fraction}")
  settings = {
    "valid_fraction": valid_fraction,
    "test_fraction": test_fraction,
    "seed": seed,
    "min_seconds": min_seconds,
  }
  with files.atomic_folder(out, if_exists="replace" if overwrite else "error") as tmp:
    skipped: list[dict[str, str]] = []
    if folder is not None:
      clips, source = clips_from_folder(folder)
    elif csv_file is not None:
      clips, skipped, source = clips_from_csv(csv_file, parse_columns(columns), audio_root)
    else:
      clips, skipped, source = clips_from_tfds(tfds_name, tfds_data_dir, tmp / "audio")
    kept, bad = inspect_clips(clips, min_seconds, workers)
    skipped += bad
    if not kept:
      raise ValueError(f"no readable clips to import ({len(skipped)} left out: {skipped[:3]})")
    split, rule = choose_splits(
      [c for c, _ in kept],
      valid_fraction=valid_fraction,
      test_fraction=test_fraction,
      seed=seed,
      test_fold=test_fold,
      valid_fold=valid_fold,
    )
    classes = class_table([n for c, _ in kept for n in c.labels])
    summary = summarize(kept, split, classes, skipped, source, rule, settings)
    write_dataset(tmp, kept, split, classes, summary)
  # Paths written into the temporary folder now live under `out`.
  return summary


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m dass_jax.prepare",
    description="Import labelled recordings (a folder of class folders, a CSV, or a TFDS "
    "dataset) as train/valid/test datafiles, labels.csv and summary.json.",
  )
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--folder", help="a folder with one sub-folder of audio files per class")
  source.add_argument("--csv", help="a CSV with columns path,label[,fold|split][,group]")
  source.add_argument("--tfds", help="a prepared TFDS dataset name (ArrayRecord)")
  parser.add_argument("--out", required=True, help="the folder to create")
  parser.add_argument("--valid-fraction", type=float, default=0.1, help="default 0.1")
  parser.add_argument("--test-fraction", type=float, default=0.1, help="default 0.1")
  parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
  parser.add_argument(
    "--columns",
    help="CSV column names, e.g. path=filename,label=category,fold=fold,group=src_file",
  )
  parser.add_argument("--audio-root", help="folder the CSV's paths are relative to")
  parser.add_argument("--test-fold", help="with a fold column: the test fold (default: last)")
  parser.add_argument(
    "--valid-fold", help="with a fold column: the valid fold (default: the one before the test)"
  )
  parser.add_argument("--tfds-data-dir", help="TFDS data_dir of the --tfds dataset")
  parser.add_argument(
    "--min-seconds",
    type=float,
    default=MIN_SECONDS,
    help=f"shorter clips are left out (default {MIN_SECONDS})",
  )
  parser.add_argument("--workers", type=int, default=4, help="decoding threads (default 4)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  """Runs the CLI; returns 0, or 2 with a message for a bad option or source."""
  args = _parse_args(argv)
  try:
    summary = prepare(
      args.out,
      folder=args.folder,
      csv_file=args.csv,
      tfds_name=args.tfds,
      columns=args.columns,
      audio_root=args.audio_root,
      tfds_data_dir=args.tfds_data_dir,
      valid_fraction=args.valid_fraction,
      test_fraction=args.test_fraction,
      seed=args.seed,
      test_fold=args.test_fold,
      valid_fold=args.valid_fold,
      min_seconds=args.min_seconds,
      workers=args.workers,
      overwrite=args.overwrite,
    )
  except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  splits = ", ".join(f"{s} {v['clips']}" for s, v in summary["splits"].items())
  print(
    f"{args.out}: {summary['num_clips']} clips, {summary['num_classes']} classes "
    f"({summary['label_kind']}-label); {splits}; {len(summary['skipped'])} left out "
    f"(see {os.path.join(args.out, SUMMARY_FILE)})"
  )
  for item in summary["skipped"][:10]:
    print(f"  left out {item['path']}: {item['reason']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
