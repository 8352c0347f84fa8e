"""Checkpoint sources: a local path, a Hugging Face hub id, an https:// URL or a published name.

Every converter turns what the user typed into a local path with `resolve(source, converter)`:

  SOURCE                               local path returned              cached under cache_dir(...)
  path/to/file.pth, path/to/folder     itself                           -
  hf://OWNER/NAME[@REVISION]           the snapshot folder holding      hub/ (huggingface_hub's
                                       the converter's hub_files        layout, below)
  hf://OWNER/NAME[@REVISION]/PATH      that one file of the repository  hub/
  https://HOST/PATH[#sha256=HEX]       the downloaded file              downloads/<key>/
  a published name                     as for its hub id or URL         as above

(`cache_dir` is `dass_jax.cache.cache_dir`: `$DASS_JAX_CACHE` or `~/.cache/dass_jax`.) Published
names are listed in `convert_torch.published`. The hub cache is huggingface_hub's layout:
`models--OWNER--NAME/blobs/<hash>`, `snapshots/<commit>/<file>` (links to the blobs) and
`refs/<revision>` (the commit of a branch or tag), so a cache filled elsewhere by huggingface_hub
with `cache_dir` pointing there works here too.

Verification, before anything is converted:
  * hub: huggingface_hub names every blob after the hub's hash of the file (sha256 for LFS files,
    i.e. the weights; the git blob sha1 for small files such as `config.json`) and checks the
    size while downloading. Each file is hashed again here and compared with its blob name; a
    mismatch (a corrupted or truncated download, or a damaged cache) is refused and the bad blob
    removed, so that the next online run fetches it anew.
  * URL: the byte count must equal the server's Content-Length (when sent), and the sha256 the
    one pinned with `#sha256=HEX` or in the published-models table (when known). The download is
    streamed into a temporary folder beside the cache entry and renamed into place only once
    verified: an interrupted or refused download leaves nothing behind. `record.json` beside the
    file keeps its size and sha256, and a cached file is checked against them on every use.
  * Google Drive view links (`drive.google.com/file/d/ID/...`) are requested as Drive's direct
    download with the large-file confirmation already given. An HTML page where a weight file
    was expected (a Drive confirmation, quota or sign-in page) is refused with a message saying
    how to fetch the file by hand.

Offline: with `HF_HUB_OFFLINE=1` nothing is requested; cached hub files and URLs are used and
anything else fails at once, naming what is missing. Without network a request fails after at
most TIMEOUT_S seconds without an answer (at once when the name does not resolve), with a message
naming the source and how to pass a local copy instead. `HF_ENDPOINT` (a hub mirror) is read on
every call. Loading stays `torch.load(weights_only=True)` / safetensors in `convert_torch.io`.
"""

from __future__ import annotations

import dataclasses
import email.message
import hashlib
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from http.client import HTTPException
from pathlib import Path

from dass_jax.cache import cache_dir
from dass_jax.files import atomic_folder

TIMEOUT_S = 10.0
CHUNK_BYTES = 1 << 20
HUB_PREFIX = "hf://"
# The files a hub folder must hold for the DASS and AST converters: each entry lists
# alternatives, the first one the repository has is fetched.
DEFAULT_HUB_FILES = (("model.safetensors", "pytorch_model.bin"), ("config.json",))
RECORD_FILE = "record.json"
HUB_PACKAGE = "huggingface_hub==2.4.0"

_HUB_RE = re.compile(
  r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"
  r"(?:@(?P<revision>refs/pr/\d+|[^/@]+))?(?:/(?P<file>[^@]+))?$"
)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DRIVE_RE = re.compile(
  r"^https://drive\.google\.com/(?:file/d/|open\?id=|uc\?(?:[^#]*&)?id=)(?P<id>[\w-]+)"
)
_DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_TRUE = ("1", "ON", "YES", "TRUE")
_HEADERS = {"User-Agent": "dass-jax"}


class SourceError(OSError):
  """A source that cannot be used: unknown, unreachable or failing verification.

  The message names the source and what to do instead (usually: pass a local copy).
  """


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A source made local.

  Attributes:
    path: the file or folder the converter reads.
    source: what the converted checkpoint records as its origin: the absolute local path,
      `hf://OWNER/NAME@<commit>[/FILE]`, or the URL with `#sha256=<hex>` of the bytes read.
  """

  path: Path
  source: str


def offline() -> bool:
  """Whether HF_HUB_OFFLINE is set (read on each call; huggingface_hub reads it at import)."""
  return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def is_remote(source: str | os.PathLike) -> bool:
  """Whether `source` is a hub id or a URL (not a local path or a published name)."""
  return os.fspath(source).startswith((HUB_PREFIX, "https://", "http://"))


def resolve(
  source: str | os.PathLike,
  converter: str,
  hub_files: Sequence[Sequence[str]] = DEFAULT_HUB_FILES,
  timeout_s: float = TIMEOUT_S,
) -> Resolved:
  """Makes a checkpoint source local, fetching and verifying it when it is remote.

  Args:
    source: a local file or folder, `hf://OWNER/NAME[@REVISION][/FILE]`, an `https://` URL
      (optionally ending in `#sha256=HEX`), or a name from `convert_torch.published`.
    converter: the `python -m convert_torch` subcommand asking (a published name must belong to
      it; error messages show the command to run with a local copy).
    hub_files: for a hub folder, the files to fetch: each entry lists alternatives, of which the
      first present in the repository is fetched. Ignored for `hf://…/FILE`.
    timeout_s: seconds to wait for a server's answer before giving up.

  Returns:
    The local path and the string to record as the checkpoint's source.

  Raises:
    FileNotFoundError: a local path that does not exist and is no known name.
    SourceError: a remote source that cannot be fetched or fails verification, or a published
      name of another converter.
  """
  from convert_torch import published

  text = os.fspath(source)
  if not is_remote(text) and Path(text).exists():
    return Resolved(Path(text), str(Path(text).absolute()))
  entry = published.find(text)
  if entry is not None and entry.converter != converter:
    raise SourceError(
      f"{text} is a {entry.converter} checkpoint, not {converter}: run "
      f"`python -m convert_torch {entry.converter} {entry.name} OUT_DIR`"
    )
  remote = entry.source if entry is not None else text
  if remote.startswith(HUB_PREFIX):
    return fetch_hub(remote, converter, hub_files, timeout_s)
  if remote.startswith(("https://", "http://")):
    return fetch_url(
      remote,
      converter,
      sha256=entry.sha256 if entry else None,
      size=entry.size if entry else None,
      filename=entry.filename if entry else None,
      timeout_s=timeout_s,
    )
  raise FileNotFoundError(
    f"checkpoint not found: {text} is not a local file or folder, an hf://OWNER/NAME hub id, an "
    "https:// URL or a published model name (`python -m convert_torch --list`)"
  )


def local_copy_hint(source: str, converter: str) -> str:
  """How to go on without network: fetch `source` elsewhere and pass the local copy."""
  hub = source.startswith(HUB_PREFIX)
  how = f"hf download {source[len(HUB_PREFIX) :]} --local-dir DIR" if hub else "curl -L -o FILE URL"
  return (
    f"To work without network, fetch it where there is network (e.g. `{how}`) and pass the local "
    f"copy: `python -m convert_torch {converter} LOCAL_FILE_OR_FOLDER OUT_DIR`; or copy a cache "
    f"filled elsewhere to {cache_dir('hub' if hub else 'downloads')} and set HF_HUB_OFFLINE=1."
  )


def _file_sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
  """The git object id of a file: sha1 of `blob <size>\\0` + its bytes."""
  digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
  with open(path, "rb") as f:
    while chunk := f.read(CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def _check_hub_blob(path: Path, spec: str) -> None:
  """Hashes a fetched hub file and compares it with its blob name (the hub's hash)."""
  blob = Path(os.path.realpath(path))
  if blob.parent.name != "blobs":  # a copy instead of a link (no symlinks here): no name to check
    return
  expected = blob.name
  if len(expected) == 64:
    kind, got = "sha256", _file_sha256(blob)
  elif len(expected) == 40:
    kind, got = "git sha1", _git_blob_sha1(blob)
  else:
    return
  if got != expected:
    size = blob.stat().st_size
    blob.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    raise SourceError(
      f"{spec}: {path.name} is corrupted or truncated ({size} bytes with {kind} {got}, the hub's "
      f"is {expected}); it was removed from the cache, run again to fetch it anew"
    )


def _hub_download(repo: str, name: str, revision: str | None, timeout_s: float) -> Path:
  from huggingface_hub import hf_hub_download

  return Path(
    hf_hub_download(
      repo,
      name,
      revision=revision,
      cache_dir=cache_dir("hub"),
      local_files_only=offline(),
      etag_timeout=timeout_s,
      endpoint=os.environ.get("HF_ENDPOINT") or None,
    )
  )


def _hub_endpoint() -> str:
  from huggingface_hub import constants

  return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _check_hub_reachable(spec: str, converter: str, timeout_s: float) -> None:
  """Fails at once when the hub does not answer (huggingface_hub itself retries for ~25 s)."""
  endpoint = _hub_endpoint()
  request = urllib.request.Request(endpoint + "/", method="HEAD", headers=_HEADERS)
  try:
    urllib.request.urlopen(request, timeout=timeout_s).close()
  except urllib.error.HTTPError:  # an answer, whatever it says
    return
  except (urllib.error.URLError, TimeoutError, HTTPException, ConnectionError) as e:
    raise SourceError(
      f"could not fetch {spec}: the hub at {endpoint} could not be reached "
      f"({getattr(e, 'reason', None) or e}). " + local_copy_hint(spec, converter)
    ) from e


def _hub_cached(repo: str, names: Sequence[str], revision: str | None) -> bool:
  from huggingface_hub import try_to_load_from_cache

  return any(
    isinstance(try_to_load_from_cache(repo, name, cache_dir("hub"), revision), str)
    for name in names
  )


def _hub_file(
  spec: str, repo: str, revision: str | None, names: Sequence[str], converter: str, timeout_s
) -> Path:
  """Fetches the first of `names` that the repository (or, offline, the cache) holds."""
  from huggingface_hub import errors

  for name in names:
    try:
      return _hub_download(repo, name, revision, timeout_s)
    except errors.LocalEntryNotFoundError as e:
      if not offline():  # the hub stopped answering and the cache lacks the file
        reason = e.__cause__ or e
        raise SourceError(
          f"could not fetch {spec} ({name}): {reason}. " + local_copy_hint(spec, converter)
        ) from e
    except errors.EntryNotFoundError:  # not in the repository: try the next alternative
      continue
    except errors.RepositoryNotFoundError as e:
      raise SourceError(
        f"{spec}: repository {repo} not found on the hub (a private or gated one needs "
        "`hf auth login` first)"
      ) from e
    except errors.RevisionNotFoundError as e:
      raise SourceError(f"{spec}: revision {revision!r} not found in {repo}") from e
    except (errors.HfHubHTTPError, OSError, ValueError) as e:
      raise SourceError(
        f"could not fetch {spec} ({name}): {e}. " + local_copy_hint(spec, converter)
      ) from e
  if offline():
    raise SourceError(
      f"{spec}: HF_HUB_OFFLINE is set and the cache {cache_dir('hub')} holds none of "
      f"{', '.join(names)} for it. " + local_copy_hint(spec, converter)
    )
  raise SourceError(f"{spec}: the repository holds none of {', '.join(names)}")


def fetch_hub(
  spec: str,
  converter: str,
  hub_files: Sequence[Sequence[str]] = DEFAULT_HUB_FILES,
  timeout_s: float = TIMEOUT_S,
) -> Resolved:
  """Fetches `hf://OWNER/NAME[@REVISION][/FILE]` into the hub cache; see the module docstring."""
  match = _HUB_RE.match(spec)
  if match is None:
    raise SourceError(f"{spec}: not a hub id; expected hf://OWNER/NAME[@REVISION][/FILE]")
  repo, revision, file = match["repo"], match["revision"], match["file"]
  try:
    import huggingface_hub  # noqa: F401  (only to report a missing optional dependency)
  except ImportError as e:
    raise SourceError(
      f"{spec}: hub ids need the optional package huggingface_hub (pip install {HUB_PACKAGE}). "
      + local_copy_hint(spec, converter)
    ) from e
  if not file and not hub_files:
    raise SourceError(
      f"{spec}: name the file, hf://{repo}[@REVISION]/FILE: the {converter} converter reads one "
      "weight file"
    )
  groups = [(file,)] if file else hub_files
  if not offline() and not _hub_cached(repo, groups[0], revision):
    _check_hub_reachable(spec, converter, timeout_s)
  paths = []
  for names in groups:
    path = _hub_file(spec, repo, revision, names, converter, timeout_s)
    snapshot = next(p for p in path.parents if p.parent.name == "snapshots")
    revision = snapshot.name  # the commit: every later file comes from the same snapshot
    paths.append(path)
  for path in paths:
    _check_hub_blob(path, spec)
  record = f"{HUB_PREFIX}{repo}@{revision}" + (f"/{file}" if file else "")
  return Resolved(paths[0] if file else snapshot, record)


def _split_pin(url: str) -> tuple[str, str | None]:
  """`URL#sha256=HEX` -> (URL, HEX); a URL without a pin -> (URL, None)."""
  base, _, fragment = url.partition("#")
  if not fragment:
    return base, None
  key, _, value = fragment.partition("=")
  if key != "sha256" or not _SHA256_RE.match(value.lower()):
    raise SourceError(f"{url}: the only fragment understood is #sha256=<64 hex digits>")
  return base, value.lower()


def _download_url(url: str) -> str:
  """The URL actually requested: Google Drive view links become direct-download links."""
  drive = _DRIVE_RE.match(url)
  return _DRIVE_DOWNLOAD.format(id=drive["id"]) if drive else url


def _file_name(url: str, headers, given: str | None) -> str:
  """The cached file's name: given, else Content-Disposition, else the URL's last segment."""
  name = given
  if name is None and headers.get("Content-Disposition"):
    message = email.message.Message()
    message["Content-Disposition"] = headers["Content-Disposition"]
    name = message.get_filename()
  if not name:
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rstrip("/").rsplit("/", 1)[-1])
  name = re.sub(r"[^\w.+-]", "_", Path(name).name).lstrip(".")
  return name or "checkpoint"


def _read_record(entry: Path) -> dict | None:
  try:
    record = json.loads((entry / RECORD_FILE).read_text())
  except (OSError, ValueError):
    return None
  ok = isinstance(record, dict) and {"url", "file", "size", "sha256"} <= set(record)
  return record if ok else None


def _check_cached(entry: Path, record: dict, url: str, sha256: str | None, size) -> Path | None:
  """The cached file if it still matches its record and the expected hash; else removes it."""
  path = entry / record["file"]
  problem = None
  if not path.is_file():
    problem = "its file is missing"
  elif path.stat().st_size != record["size"]:
    problem = f"{path.stat().st_size} bytes where {record['size']} were stored"
  elif _file_sha256(path) != record["sha256"]:
    problem = "its bytes changed since they were stored"
  elif sha256 is not None and record["sha256"] != sha256:
    problem = f"sha256 {record['sha256']} where {sha256} is expected"
  elif size is not None and record["size"] != size:
    problem = f"{record['size']} bytes where {size} are expected"
  if problem is None:
    return path
  print(f"cached {url} in {entry} is unusable ({problem}); fetching it again", file=sys.stderr)
  shutil.rmtree(entry, ignore_errors=True)
  return None


def _stream(response, path: Path) -> tuple[int, str]:
  """Writes the response body into `path`; returns (bytes, sha256)."""
  count, digest = 0, hashlib.sha256()
  with open(path, "wb") as f:
    while chunk := response.read(CHUNK_BYTES):
      f.write(chunk)
      digest.update(chunk)
      count += len(chunk)
  return count, digest.hexdigest()


def fetch_url(
  url: str,
  converter: str,
  sha256: str | None = None,
  size: int | None = None,
  filename: str | None = None,
  timeout_s: float = TIMEOUT_S,
) -> Resolved:
  """Downloads `url` (once) into the cache and verifies it; see the module docstring.

  Args:
    url: `https://…` (plain `http://` only for a loopback host), optionally `#sha256=HEX`.
    converter: the asking subcommand, for the messages.
    sha256, size: expected values when known (published-models table); the URL's pin wins.
    filename: the cached file's name when the URL does not end in it.
    timeout_s: seconds to wait for the server's answer.
  """
  base, pinned = _split_pin(url)
  sha256 = pinned or sha256
  parsed = urllib.parse.urlparse(base)
  if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK_HOSTS:
    raise SourceError(f"{base}: plain http is refused for remote hosts; use https://")
  root = cache_dir("downloads")
  entry = root / hashlib.sha256(base.encode()).hexdigest()[:24]
  record = _read_record(entry)
  if record is not None:
    cached = _check_cached(entry, record, base, sha256, size)
    if cached is not None:
      return Resolved(cached, f"{base}#sha256={record['sha256']}")
  if offline():
    raise SourceError(
      f"{base}: HF_HUB_OFFLINE is set and the file is not in the cache {root}. "
      + local_copy_hint(base, converter)
    )
  if entry.exists():  # no usable record: an entry left incomplete by hand
    shutil.rmtree(entry)
  # Another process storing the same URL first wins ("keep"): the file is the same.
  with atomic_folder(entry, if_exists="keep") as tmp:
    request = urllib.request.Request(_download_url(base), headers=_HEADERS)
    try:
      with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if response.headers.get_content_type() == "text/html":
          raise SourceError(
            f"{base}: the server sent a web page instead of the file (for Google Drive: a "
            "confirmation or sign-in page, which cannot be answered from here). Download the "
            "file in a browser and pass the local copy: "
            f"`python -m convert_torch {converter} LOCAL_FILE OUT_DIR`"
          )
        name = _file_name(response.url, response.headers, filename)
        announced = response.headers.get("Content-Length")
        count, digest = _stream(response, tmp / name)
    except urllib.error.HTTPError as e:
      raise SourceError(f"could not fetch {base}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, HTTPException, ConnectionError) as e:
      reason = getattr(e, "reason", None) or e
      raise SourceError(
        f"could not fetch {base}: {type(e).__name__}: {reason}. " + local_copy_hint(base, converter)
      ) from e
    problems = []
    if announced is not None and count != int(announced):
      problems.append(f"truncated: {count} of the {announced} bytes the server announced")
    if size is not None and count != size:
      problems.append(f"{count} bytes where {size} are expected")
    if sha256 is not None and digest != sha256:
      problems.append(f"sha256 {digest} where {sha256} is expected")
    if problems:
      raise SourceError(f"{base}: download refused, nothing was kept: " + "; ".join(problems))
    record = {"url": base, "file": name, "size": count, "sha256": digest}
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
  record = _read_record(entry)
  if record is None:
    raise SourceError(f"{base}: {entry} holds no download record after storing it")
  print(f"fetched {base}: {record['size']:,} bytes, sha256 {record['sha256']}", file=sys.stderr)
  return Resolved(entry / record["file"], f"{base}#sha256={record['sha256']}")
