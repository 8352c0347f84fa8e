"""Published checkpoints converted once, on first use, into the user's cache.

    folder = converted_folder("dass-small-47.2")                     # a published name
    folder = converted_folder("hf://me/my-finetuned-dass", "dass")   # any source + its converter

This is what `dass_jax.load_model(name)` calls for a name, a hub id or a URL. The folder is
`dass_jax.cache.cache_dir("converted")/<key>` (config.json + params/, as `python -m convert_torch`
writes it), where the key is the published name, or the hub id / URL made file-name safe with a
short hash of it. It is built in a temporary sibling and renamed into place when complete, so a
failed or interrupted conversion leaves nothing behind; later calls reuse it without asking the
network. A source that moves (hf://OWNER/NAME follows `main`) is converted once: pin a revision
(`@<commit>`) or delete the folder to convert a newer one.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
from pathlib import Path

from convert_torch import published
from convert_torch.sources import SourceError
from dass_jax.cache import cache_dir
from dass_jax.files import atomic_folder

CONFIG_FILE = "config.json"


def cache_key(source: str) -> str:
  """The cache folder name of a source: its published name, else a safe name + short hash."""
  entry = published.find(source)
  if entry is not None:
    return entry.name
  safe = re.sub(r"[^\w.-]+", "_", source.split("://", 1)[-1]).strip("._")[-60:]
  return f"{safe}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def converted_folder(source: str, converter: str | None = None) -> Path:
  """The converted checkpoint folder of `source`, converting it on first use.

  Args:
    source: a published name, `hf://OWNER/NAME[@REVISION]` or an `https://` URL.
    converter: the `python -m convert_torch` subcommand that reads it; optional for published
      names (the table says), required otherwise.

  Raises:
    SourceError: the converter is unknown or missing, or the source cannot be fetched.
    ConversionError: the checkpoint does not fit the converter's architecture.
  """
  from convert_torch.__main__ import SUBCOMMANDS

  entry = published.find(source)
  converter = converter or (entry.converter if entry else None)
  if converter is None:
    raise SourceError(
      f"{source} is not a published name (python -m convert_torch --list): say which converter "
      f"reads it, e.g. load_model({source!r}, converter='dass'); one of {', '.join(SUBCOMMANDS)}"
    )
  if converter not in SUBCOMMANDS:
    raise SourceError(f"unknown converter {converter!r}; one of {', '.join(SUBCOMMANDS)}")
  if converter == "vmamba":
    raise SourceError(
      f"{source}: an ImageNet VMamba checkpoint is a DASS initialisation with a new head, not a "
      "model to load: `python -m convert_torch vmamba SOURCE OUT_DIR --num-classes N`"
    )
  root = cache_dir("converted")
  folder = root / cache_key(source)
  if (folder / CONFIG_FILE).is_file():
    return folder
  try:
    module = importlib.import_module(SUBCOMMANDS[converter])
  except ModuleNotFoundError as e:
    raise SourceError(
      f"the {converter} converter is not available here ({e}); it needs the [torch] extra"
    ) from e
  if folder.exists():  # no config.json: not written by this function, which renames whole folders
    raise SourceError(f"{folder} exists but holds no converted checkpoint; remove it")
  # Built in a temporary sibling and renamed into place whole; another process converting the
  # same source first wins ("keep").
  with atomic_folder(folder, if_exists="keep") as tmp:
    _, summary = module.convert_to(source, tmp)
  print(summary.replace(str(tmp.absolute()), str(folder.absolute())), file=sys.stderr)
  return folder
