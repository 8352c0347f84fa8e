"""Published checkpoints converted once, on first use, into the user's cache.

    folder = converted_folder("dass-small-47.2")                     # a published name
    folder = converted_folder("hf://me/my-finetuned-dass", "dass")   # any source + its converter

This is what `dass_jax.load_model(name)` calls for a name, a hub id or a URL. The folder is
`dass_jax.cache.cache_dir("converted")/<key>` (config.json + params/, as `python -m convert_torch`
writes it). The key names what the folder was made from and how: the published name (or the hub
id / URL made file-name safe), the converter and its `version` (`convert_torch.converter`), and a
short hash of all of it with the converter's options, e.g. `dass-small-47.2-dass-v1-3f2a9c1b0d4e`.
So a converter whose mapping changed (its version bumped), another converter or other options
convert the source anew instead of reusing a folder they did not write; the same ones reuse it
without asking the network. The folder is built in a temporary sibling and renamed into place
when complete, so a failed or interrupted conversion leaves nothing behind. A source that moves
(hf://OWNER/NAME follows `main`) is converted once: pin a revision (`@<commit>`) or delete the
folder to convert a newer one.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convert_torch import published
from convert_torch.sources import SourceError
from dass_jax.cache import cache_dir
from dass_jax.files import atomic_folder

CONFIG_FILE = "config.json"


def cache_key(
  source: str, converter: str, version: int, options: Mapping[str, Any] | None = None
) -> str:
  """The cache folder name of a conversion (see the module docstring)."""
  entry = published.find(source)
  if entry is not None:
    base = entry.name
  else:
    base = re.sub(r"[^\w.-]+", "_", source.split("://", 1)[-1]).strip("._")[-60:]
  what = {"source": source, "converter": converter, "version": version, "options": options or {}}
  digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
  return f"{base}-{converter}-v{version}-{digest}"


def converted_folder(
  source: str, converter: str | None = None, options: Mapping[str, Any] | None = None
) -> Path:
  """The converted checkpoint folder of `source`, converting it on first use.

  Args:
    source: a published name, `hf://OWNER/NAME[@REVISION]` or an `https://` URL.
    converter: the `python -m convert_torch` subcommand that reads it; optional for published
      names (the table says), required otherwise.
    options: the converter's options (`python -m convert_torch CONVERTER --help`), as keywords.

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
  try:
    module = importlib.import_module(SUBCOMMANDS[converter])
  except ModuleNotFoundError as e:
    raise SourceError(
      f"the {converter} converter is not available here ({e}); it needs the [torch] extra"
    ) from e
  options = dict(options or {})
  folder = cache_dir("converted") / cache_key(source, converter, module.CONVERTER.version, options)
  if (folder / CONFIG_FILE).is_file():
    return folder
  if folder.exists():  # no config.json: not written by this function, which renames whole folders
    raise SourceError(f"{folder} exists but holds no converted checkpoint; remove it")
  # Built in a temporary sibling and renamed into place whole; another process converting the
  # same source first wins ("keep").
  with atomic_folder(folder, if_exists="keep") as tmp:
    _, summary = module.CONVERTER.convert_to(source, tmp, **options)
  print(summary.replace(str(tmp.absolute()), str(folder.absolute())), file=sys.stderr)
  return folder
