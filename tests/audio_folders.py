"""Tiny labelled recordings for the import, recipe, probe and TFDS tests: one folder per class of
short tones (each class its own pitch, each clip its own length and noise), and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

CLASSES = ("low", "mid", "high")
PITCH = {"low": 300.0, "mid": 900.0, "high": 2500.0}


def tone(name: str, index: int, rate: int = 8000, seconds: float | None = None) -> np.ndarray:
  rng = np.random.default_rng([index, len(name)])
  seconds = seconds or 0.15 + 0.05 * (index % 4)
  t = np.arange(int(rate * seconds)) / rate
  freq = PITCH.get(name, 600.0) * (1.0 + 0.02 * (index % 3))
  return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(
    np.float32
  )


def class_folder(
  root: Path, classes=CLASSES, per_class: int = 10, rate: int = 8000, ext: str = ".wav"
) -> Path:
  """root/<class>/<i>.wav: `per_class` tones of each class; returns root."""
  for name in classes:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
      sf.write(folder / f"{name}_{i}{ext}", tone(name, i, rate), rate)
  return root


def bad_files(folder: Path) -> dict[str, str]:
  """Writes an unreadable, an empty and a too-short file into `folder`; {name: reason fragment}."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "garbage.wav").write_bytes(b"this is not audio at all")
  (folder / "empty.wav").write_bytes(b"")
  sf.write(folder / "short.wav", np.zeros(40, np.float32), 8000)  # 5 ms
  return {"garbage.wav": "cannot decode", "empty.wav": "empty file", "short.wav": "too short"}
