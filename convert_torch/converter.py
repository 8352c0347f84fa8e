"""What every converter shares: fetch the source, read it, save the folder, and the CLI.

A converter module (`convert_torch.dass`, `.ast`, ...) holds its model-specific part, a `read`
function that turns a local file or folder into a `Conversion` (through its mapping table,
`convert_torch.mapping`), and declares itself as

    CONVERTER = Converter(name="aum", version=1, read=read, options=(Option("max_length"), ...),
                          description=..., input_help=...)
    convert_to = CONVERTER.convert_to      # (source, out_dir, **options) -> (folder, summary)
    main = CONVERTER.main                  # python -m convert_torch aum SOURCE OUT [--max-length T]

`convert_to` refuses an `out_dir` that already holds a checkpoint, makes the source local
(`convert_torch.sources.resolve`: a path, hf:// id, URL or published name), reads it and saves
the folder with `dass_jax.checkpoint.save_converted` (atomically; nothing is written on an error).
`main` parses SOURCE, OUT_DIR and the options, prints the summary and returns 0, or prints
`error: ...` (no traceback) and returns 1 for a checkpoint that does not fit, a source that cannot
be fetched, a missing file or an existing output.

`version` is part of the key under which `convert_torch.converted` caches a source's conversion:
bump it whenever a change makes the converter write different params or config for the same file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convert_torch.io import ConversionError
from convert_torch.params import count_params
from convert_torch.sources import DEFAULT_HUB_FILES, SourceError, resolve
from dass_jax.checkpoint import refuse_existing, save_converted
from dass_jax.models import ModelConfig

# Attention heads are not in a checkpoint's shapes; the ViT / DeiT convention is 64 per head.
DEFAULT_HEAD_DIM = 64
# What the CLI reports as `error: ...` with exit status 1.
USER_ERRORS = (ConversionError, SourceError, FileNotFoundError, FileExistsError, IsADirectoryError)


@dataclasses.dataclass(frozen=True)
class Conversion:
  """A converted checkpoint before it is saved.

  Attributes:
    config: the model config.
    params: the Flax params tree (numpy float32).
    source_format: recorded in the folder's metadata (e.g. 'ast/original', 'dass-dataparallel').
    layout: how the summary names what was read (e.g. 'classifier layout').
    details: one line on the architecture for the summary.
  """

  config: ModelConfig
  params: dict[str, Any]
  source_format: str
  layout: str
  details: str


@dataclasses.dataclass(frozen=True)
class Option:
  """A converter option: a keyword of `convert_to` and a `--flag` of the CLI (`_` -> `-`)."""

  name: str
  help: str
  type: type = int
  default: Any = None
  required: bool = False

  @property
  def flag(self) -> str:
    return "--" + self.name.replace("_", "-")


def heads_option() -> Option:
  """`--num-heads` of the ViT converters: config.json's, else hidden size / DEFAULT_HEAD_DIM."""
  return Option(
    "num_heads", f"attention heads (default: config.json, else hidden size / {DEFAULT_HEAD_DIM})"
  )


@dataclasses.dataclass(frozen=True)
class Converter:
  """One `python -m convert_torch` subcommand; see the module docstring.

  Attributes:
    name: the subcommand (also what `convert_torch.sources.resolve` is told).
    version: bumped whenever the converter's output for a given file changes.
    read: (local path, **options) -> Conversion.
    description, input_help: the CLI's description and SOURCE help.
    options: keyword options of `read`, also CLI flags.
    hub_files: what to fetch for a hub folder (`sources.resolve`); () for converters that read one
      file, which must then be named (hf://OWNER/NAME/FILE).
  """

  name: str
  version: int
  read: Callable[..., Conversion]
  description: str
  input_help: str
  options: tuple[Option, ...] = ()
  hub_files: Sequence[Sequence[str]] = DEFAULT_HUB_FILES

  def convert_to(
    self, source: str | os.PathLike, out_dir: str | os.PathLike, **options
  ) -> tuple[Path, str]:
    """Fetches (if remote), converts and saves `source` into the new folder `out_dir`.

    Args:
      source: a local file or folder, hf://OWNER/NAME[@REVISION][/FILE], an https:// URL or a
        published name (`python -m convert_torch --list`).
      out_dir: new folder; refused (FileExistsError), untouched, when it holds a checkpoint.
      **options: the converter's options (`self.options`); None means the default.

    Returns:
      (the output folder, a summary of what was converted). Nothing is written on an error.
    """
    known = {option.name for option in self.options}
    unknown = sorted(set(options) - known)
    if unknown:
      raise TypeError(f"the {self.name} converter has no option {unknown}; it has {sorted(known)}")
    refuse_existing(out_dir)
    fetched = resolve(source, self.name, hub_files=self.hub_files)
    conversion = self.read(fetched.path, **options)
    out = save_converted(
      out_dir,
      conversion.config,
      conversion.params,
      extra={"source": fetched.source, "source_format": conversion.source_format},
    )
    return out, (
      f"converted {fetched.source} ({conversion.layout}) -> {out}\n"
      f"  {count_params(conversion.params):,} params; {conversion.details}"
    )

  def parser(self) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
      prog=f"python -m convert_torch {self.name}", description=self.description
    )
    parser.add_argument("input", help=self.input_help)
    parser.add_argument("output_dir", help="new folder for the converted checkpoint")
    for option in self.options:
      parser.add_argument(
        option.flag,
        dest=option.name,
        type=option.type,
        default=option.default,
        required=option.required,
        help=option.help,
      )
    return parser

  def main(self, argv: list[str] | None = None) -> int:
    """`python -m convert_torch NAME SOURCE OUT_DIR [options]`; returns the exit status."""
    args = self.parser().parse_args(argv)
    options = {option.name: getattr(args, option.name) for option in self.options}
    try:
      _, summary = self.convert_to(args.input, args.output_dir, **options)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    print(summary)
    return 0
