"""`python -m convert_torch SUBCOMMAND SOURCE OUT_DIR [options]`: one subcommand per module.

  dass     DASS checkpoint (.pth / .safetensors / Hugging Face folder)  -> convert_torch.dass
  vmamba   ImageNet VMamba checkpoint -> DASS initialisation          -> convert_torch.vmamba
  ast      AST teacher checkpoint                                      -> convert_torch.ast
  dasheng  Dasheng encoder / Hugging Face folder / AudioSet classifier -> convert_torch.dasheng
  aum      Audio Mamba (AuM) checkpoint                                -> convert_torch.aum
  sslam    SSLAM / EAT classifier (fairseq .pt or Hugging Face folder) -> convert_torch.sslam

SOURCE is a local file or folder, hf://OWNER/NAME[@REVISION], an https:// URL (optionally ending
in #sha256=HEX), or a published name; `python -m convert_torch --list` prints the published names.
Remote sources are fetched into the user's cache ($DASS_JAX_CACHE or ~/.cache/dass_jax) and
verified before conversion; with HF_HUB_OFFLINE=1 only the cache is used.

Each subcommand module declares a `convert_torch.converter.Converter` (`CONVERTER`: its name,
version, options and `read` function, built on a `convert_torch.mapping` table) and exposes its
`main(argv) -> int` (the CLI) and `convert_to(source, out_dir, **options) -> (folder, summary)`
(used by `dass_jax.load_model` for published names); it is imported only when chosen.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
  "dass": "convert_torch.dass",
  "vmamba": "convert_torch.vmamba",
  "ast": "convert_torch.ast",
  "dasheng": "convert_torch.dasheng",
  "aum": "convert_torch.aum",
  "sslam": "convert_torch.sslam",
}
USAGE = (
  "usage: python -m convert_torch {" + ",".join(SUBCOMMANDS) + "} SOURCE OUT_DIR [options]\n"
  "       python -m convert_torch SUBCOMMAND --help\n"
  "       python -m convert_torch --list"
)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ("-h", "--help"):
    print(__doc__.strip() + "\n\n" + USAGE, file=sys.stdout if argv else sys.stderr)
    return 0 if argv else 2
  if argv[0] == "--list":
    from convert_torch.published import format_table

    print(format_table())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in SUBCOMMANDS:
    print(f"error: unknown subcommand {name!r}\n{USAGE}", file=sys.stderr)
    return 2
  try:
    module = importlib.import_module(SUBCOMMANDS[name])
  except ModuleNotFoundError as e:
    if e.name != SUBCOMMANDS[name]:
      raise
    print(f"error: the {name!r} converter is not available ({e})", file=sys.stderr)
    return 2
  return module.main(rest)


if __name__ == "__main__":
  sys.exit(main())
