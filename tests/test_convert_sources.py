"""Checkpoint sources by name (convert_torch.sources), all without network.

Checked here, for each converter (dass, ast, vmamba):
  * hub ids: a cache laid out as huggingface_hub lays it out (models--OWNER--NAME/blobs,
    snapshots/<commit>/…, refs/main) converts with HF_HUB_OFFLINE=1, by hub id and by published
    name; a loopback server speaking the hub's download protocol fills that cache online;
  * URLs: a loopback HTTP server (127.0.0.1, stopped by the fixture) serves the checkpoint; the
    converted params equal those of the local file; a second conversion sends no request;
  * refused without anything left in the cache or the output folder: a truncated download
    (fewer bytes than Content-Length), bytes not matching a pinned sha256, a corrupted hub blob,
    an HTML page instead of the file; a corrupted cached file is fetched again;
  * the failure messages: an unreachable hub or host, HF_HUB_OFFLINE with an empty cache, a
    silent server (timeout), HTTP errors, a published name given to the wrong converter;
  * conversion on first use (convert_torch.converted): once, then reused without a request; a
    failed conversion leaves nothing in the cache; `dass_jax.load_model` and `predict
    --checkpoint` take a published name (tests/test_imports.py: without torch too).
"""

import dataclasses
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

from dass_checkpoints import SMALL, hf_state_dict, small_state_dict

import dass_jax
from convert_torch import published, sources
from convert_torch.__main__ import SUBCOMMANDS
from convert_torch.__main__ import main as cli_main
from convert_torch.converted import converted_folder
from convert_torch.dass import torch_to_flax
from convert_torch.io import ConversionError
from dass_jax.checkpoint import is_source_name, load_model
from dass_jax.predict import main as predict_main
from torch_reference.dass_torch import DassTorch, perturb_

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HF_DASS_CONFIG = {
  "model_type": "dass",
  "depths": list(SMALL["depths"]),
  "dims": list(SMALL["dims"]),
  "num_classes": SMALL["num_classes"],
}


def _pth_bytes(state_dict) -> bytes:
  buffer = io.BytesIO()
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, buffer)
  return buffer.getvalue()


def _safetensors_bytes(state_dict) -> bytes:
  from safetensors.numpy import save

  return save({k: np.ascontiguousarray(v) for k, v in state_dict.items()})


def _git_sha1(data: bytes) -> str:
  return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def _etag(name: str, data: bytes) -> str:
  """The hub's hash of a file: sha256 for LFS files (weights), the git blob sha1 otherwise."""
  lfs = name.endswith((".safetensors", ".bin", ".pth", ".pt"))
  return hashlib.sha256(data).hexdigest() if lfs else _git_sha1(data)


def fill_hub_cache(root: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
  """Writes `files` into a huggingface_hub cache at `root`; returns the snapshot folder."""
  folder = root / ("models--" + repo.replace("/", "--"))
  snapshot = folder / "snapshots" / commit
  for name, data in files.items():
    blob = folder / "blobs" / _etag(name, data)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = snapshot / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
  (folder / "refs").mkdir(parents=True, exist_ok=True)
  (folder / "refs" / "main").write_text(commit)
  return snapshot


class LoopbackServer:
  """An HTTP server on 127.0.0.1 with fixed routes; it records every request.

  routes: path -> (status, headers, body, bytes actually sent or None for all).
  """

  def __init__(self):
    self.routes: dict[str, tuple[int, dict[str, str], bytes, int | None]] = {}
    self.requests: list[tuple[str, str]] = []
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def _answer(self, with_body: bool):
        server.requests.append((self.command, self.path))
        status, headers, body, sent = server.routes.get(self.path, (404, {}, b"not found", None))
        self.send_response(status)
        headers = {"Content-Type": "application/octet-stream", **headers}
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
          self.send_header(key, value)
        self.end_headers()
        if with_body:
          self.wfile.write(body[:sent])
        if sent is not None:
          self.close_connection = True

      def do_GET(self):
        self._answer(True)

      def do_HEAD(self):
        self._answer(False)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

  def url(self, path: str) -> str:
    return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

  def serve(self, path: str, body: bytes, headers=None, status=200, sent=None) -> str:
    self.routes[path] = (status, headers or {}, body, sent)
    return self.url(path)

  def serve_hub_repo(self, repo: str, files: dict[str, bytes], corrupt: str = "") -> None:
    """Answers huggingface_hub's HEAD/GET for `repo`'s files (as main and as COMMIT).

    The file named `corrupt` is sent with one byte changed (its hash still the right one).
    """
    self.serve("/", b"")
    for name, data in files.items():
      etag = _etag(name, data)
      headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}
      if len(etag) == 64:
        headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
      body = data[:-1] + bytes([data[-1] ^ 1]) if name == corrupt else data
      for revision in ("main", COMMIT):
        self.serve(f"/{repo}/resolve/{revision}/{name}", body, headers)

  def gets(self) -> int:
    return sum(method == "GET" for method, _ in self.requests)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
  """A private DASS_JAX_CACHE, online mode, no proxy for the loopback server."""
  root = tmp_path / "cache"
  monkeypatch.setenv("DASS_JAX_CACHE", str(root))
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
  return root


@pytest.fixture
def server():
  loopback = LoopbackServer()
  loopback.thread.start()
  try:
    yield loopback
  finally:
    loopback.httpd.shutdown()
    loopback.httpd.server_close()


@pytest.fixture(scope="module")
def dass_sd():
  return small_state_dict()


@pytest.fixture(scope="module")
def dass_reference(dass_sd):
  return torch_to_flax(dass_sd)[1]


@pytest.fixture(scope="module")
def dass_hub_files(dass_sd) -> dict[str, bytes]:
  """A DASS hub repository: model.safetensors in the hub layout + config.json."""
  return {
    "model.safetensors": _safetensors_bytes(hf_state_dict(dass_sd)),
    "config.json": json.dumps(HF_DASS_CONFIG).encode(),
  }


@pytest.fixture(scope="module")
def ast_hub_files(tmp_path_factory) -> dict[str, bytes]:
  """A tiny transformers AST classifier as saved with save_pretrained."""
  config = transformers.ASTConfig(
    hidden_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    intermediate_size=96,
    max_length=100,
    num_labels=5,
  )
  torch.manual_seed(0)
  folder = tmp_path_factory.mktemp("ast")
  transformers.ASTForAudioClassification(config).save_pretrained(folder)
  return {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json")}


@pytest.fixture(scope="module")
def vmamba_pth() -> bytes:
  """A 3-channel VSSM (ImageNet layout) saved as {'model': state_dict}."""
  torch.manual_seed(3)
  vssm = DassTorch(num_classes=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), in_chans=3).v
  perturb_(vssm, seed=4)
  buffer = io.BytesIO()
  torch.save({"model": vssm.state_dict()}, buffer)
  return buffer.getvalue()


def _assert_same_params(folder: Path, reference) -> None:
  import jax

  _, params, _ = load_model(folder)
  got = jax.tree_util.tree_flatten_with_path(params)[0]
  want = jax.tree_util.tree_flatten_with_path(reference)[0]
  assert [p for p, _ in got] == [p for p, _ in want]
  for (path, x), (_, y) in zip(got, want):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def _meta(folder: Path) -> dict:
  return json.loads((folder / "config.json").read_text())


def _downloads_left(cache: Path) -> list[str]:
  root = cache / "downloads"
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ---------------------------------------------------------------- hub ids


def test_dass_hub_id_converts_offline_from_a_prefilled_cache(
  cache, monkeypatch, tmp_path, dass_hub_files, dass_reference
):
  fill_hub_cache(cache / "hub", "owner/tiny-dass", dass_hub_files)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  for i, source in enumerate(["hf://owner/tiny-dass", f"hf://owner/tiny-dass@{COMMIT}"]):
    out = tmp_path / f"out{i}"
    assert cli_main(["dass", source, str(out)]) == 0
    _assert_same_params(out, dass_reference)
    assert _meta(out)["source"] == f"hf://owner/tiny-dass@{COMMIT}"
    assert _meta(out)["source_format"] == "hf-dass"


def test_published_name_resolves_to_its_hub_id_offline(
  cache, monkeypatch, tmp_path, capsys, dass_hub_files, dass_reference
):
  entry = published.find(published.DEFAULT_DASS)
  fill_hub_cache(cache / "hub", entry.source[len("hf://") :], dass_hub_files)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  assert cli_main(["dass", entry.name, str(tmp_path / "out")]) == 0
  _assert_same_params(tmp_path / "out", dass_reference)
  assert _meta(tmp_path / "out")["source"].startswith(entry.source + "@")
  assert cli_main(["ast", entry.name, str(tmp_path / "out2")]) == 1
  err = capsys.readouterr().err
  assert f"python -m convert_torch dass {entry.name}" in err
  assert not (tmp_path / "out2").exists()


def test_ast_and_vmamba_take_hub_ids(cache, monkeypatch, tmp_path, ast_hub_files, vmamba_pth):
  fill_hub_cache(cache / "hub", "owner/tiny-ast", ast_hub_files)
  fill_hub_cache(cache / "hub", "owner/vmamba", {"ckpt/vssm.pth": vmamba_pth})
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  assert cli_main(["ast", "hf://owner/tiny-ast", str(tmp_path / "ast")]) == 0
  assert _meta(tmp_path / "ast")["num_classes"] == 5
  assert _meta(tmp_path / "ast")["source_format"] == "ast/transformers_legacy"
  source = "hf://owner/vmamba/ckpt/vssm.pth"
  assert cli_main(["vmamba", source, str(tmp_path / "vm"), "--num-classes", "3"]) == 0
  assert _meta(tmp_path / "vm")["source"] == f"hf://owner/vmamba@{COMMIT}/ckpt/vssm.pth"
  with pytest.raises(sources.SourceError, match="name the file"):
    sources.resolve("hf://owner/vmamba", "vmamba", hub_files=())


def test_hub_download_fills_the_cache_then_offline_works(
  cache, monkeypatch, tmp_path, server, dass_hub_files, dass_reference
):
  server.serve_hub_repo("owner/tiny-dass", dass_hub_files)
  monkeypatch.setenv("HF_ENDPOINT", server.url(""))
  assert cli_main(["dass", "hf://owner/tiny-dass", str(tmp_path / "online")]) == 0
  _assert_same_params(tmp_path / "online", dass_reference)
  assert server.gets() == 2  # model.safetensors and config.json, once each
  blobs = sorted(p.name for p in (cache / "hub/models--owner--tiny-dass/blobs").iterdir())
  assert blobs == sorted(_etag(n, d) for n, d in dass_hub_files.items())
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  requests = len(server.requests)
  assert cli_main(["dass", "hf://owner/tiny-dass", str(tmp_path / "offline")]) == 0
  assert len(server.requests) == requests
  _assert_same_params(tmp_path / "offline", dass_reference)


def test_corrupted_hub_download_is_refused_and_removed(
  cache, monkeypatch, tmp_path, capsys, server, dass_hub_files
):
  server.serve_hub_repo("owner/tiny-dass", dass_hub_files, corrupt="model.safetensors")
  monkeypatch.setenv("HF_ENDPOINT", server.url(""))
  out = tmp_path / "out"
  assert cli_main(["dass", "hf://owner/tiny-dass", str(out)]) == 1
  err = capsys.readouterr().err
  assert "model.safetensors is corrupted or truncated" in err and "fetch it anew" in err
  assert not out.exists()
  sha = _etag("model.safetensors", dass_hub_files["model.safetensors"])
  assert not (cache / "hub/models--owner--tiny-dass/blobs" / sha).exists()


def test_corrupted_hub_cache_is_refused_offline(cache, monkeypatch, tmp_path, dass_hub_files):
  snapshot = fill_hub_cache(cache / "hub", "owner/tiny-dass", dass_hub_files)
  blob = (snapshot / "config.json").resolve()
  blob.write_bytes(blob.read_bytes().replace(b"dass", b"DASS"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(sources.SourceError, match=r"config\.json is corrupted"):
    sources.resolve("hf://owner/tiny-dass", "dass")
  assert not blob.exists()


def test_hub_failures_name_the_source_and_the_way_out(cache, monkeypatch):
  probe = socket.create_server(("127.0.0.1", 0))
  port = probe.getsockname()[1]
  probe.close()  # nothing listens there now: connections are refused at once
  monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
  with pytest.raises(sources.SourceError) as info:
    sources.resolve("hf://owner/missing", "dass")
  message = str(info.value)
  assert "hf://owner/missing" in message and "could not be reached" in message
  assert "python -m convert_torch dass LOCAL_FILE_OR_FOLDER OUT_DIR" in message
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(sources.SourceError) as info:
    sources.resolve("hf://owner/missing", "ast")
  message = str(info.value)
  assert "HF_HUB_OFFLINE" in message and "model.safetensors, pytorch_model.bin" in message
  assert "python -m convert_torch ast LOCAL_FILE_OR_FOLDER OUT_DIR" in message


# ---------------------------------------------------------------- URLs


def test_url_converts_once_and_is_reused(cache, tmp_path, server, dass_sd, dass_reference):
  data = _pth_bytes(dass_sd)
  url = server.serve("/release/DASS_small.pth", data)
  assert cli_main(["dass", url, str(tmp_path / "a")]) == 0
  _assert_same_params(tmp_path / "a", dass_reference)
  sha = hashlib.sha256(data).hexdigest()
  assert _meta(tmp_path / "a")["source"] == f"{url}#sha256={sha}"
  assert server.gets() == 1
  assert cli_main(["dass", f"{url}#sha256={sha}", str(tmp_path / "b")]) == 0
  assert server.gets() == 1  # served from the cache
  entry = next((cache / "downloads").iterdir())
  assert sorted(p.name for p in entry.iterdir()) == ["DASS_small.pth", "record.json"]


def test_ast_and_vmamba_take_urls(cache, tmp_path, server, ast_hub_files, vmamba_pth):
  url = server.serve("/ast/model.safetensors", ast_hub_files["model.safetensors"])
  assert cli_main(["ast", url, str(tmp_path / "ast"), "--num-heads", "4"]) == 0
  assert _meta(tmp_path / "ast")["num_heads"] == 4
  url = server.serve("/vmamba/vssm.pth", vmamba_pth)
  assert cli_main(["vmamba", url, str(tmp_path / "vm"), "--num-classes", "3"]) == 0
  assert _meta(tmp_path / "vm")["num_classes"] == 3


def test_redirect_is_followed_and_the_file_named_from_the_answer(cache, server, dass_sd):
  server.serve("/assets/DASS_medium_v2.pth", _pth_bytes(dass_sd))
  url = server.serve("/download", b"", {"Location": "/assets/DASS_medium_v2.pth"}, status=302)
  fetched = sources.resolve(url, "dass")
  assert fetched.path.name == "DASS_medium_v2.pth"
  assert fetched.source.startswith(url + "#sha256=")


@pytest.mark.parametrize("kind", ["truncated", "wrong_sha256"])
def test_bad_download_is_refused_leaving_nothing(cache, tmp_path, capsys, server, dass_sd, kind):
  data = _pth_bytes(dass_sd)
  if kind == "truncated":
    url = server.serve("/DASS_small.pth", data, sent=len(data) // 2)
    expected = f"truncated: {len(data) // 2} of the {len(data)} bytes"
  else:
    url = server.serve("/DASS_small.pth", data) + "#sha256=" + "0" * 64
    expected = f"sha256 {hashlib.sha256(data).hexdigest()} where {'0' * 64} is expected"
  out = tmp_path / "out"
  assert cli_main(["dass", url, str(out)]) == 1
  err = capsys.readouterr().err
  assert "download refused, nothing was kept" in err and expected in err
  assert not out.exists()
  assert _downloads_left(cache) == []


def test_corrupted_cached_file_is_fetched_again(cache, server, dass_sd):
  url = server.serve("/DASS_small.pth", _pth_bytes(dass_sd))
  path = sources.resolve(url, "dass").path
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  again = sources.resolve(url, "dass").path
  assert server.gets() == 2
  assert again.read_bytes() == _pth_bytes(dass_sd)


def test_html_page_instead_of_the_file_is_refused(cache, server):
  url = server.serve("/file/d/abc/view", b"<html>confirm</html>", {"Content-Type": "text/html"})
  with pytest.raises(sources.SourceError, match="sent a web page instead of the file"):
    sources.resolve(url, "aum")
  assert _downloads_left(cache) == []


def test_url_failures_name_the_source(cache, monkeypatch, server):
  url = server.url("/missing.pth")
  with pytest.raises(sources.SourceError, match=r"could not fetch .*missing\.pth: HTTP 404"):
    sources.resolve(url, "dass")
  silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
  try:
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.pth"
    with pytest.raises(sources.SourceError, match="timed out") as info:
      sources.fetch_url(url, "dass", timeout_s=0.3)
    assert "python -m convert_torch dass LOCAL_FILE_OR_FOLDER OUT_DIR" in str(info.value)
  finally:
    silent.close()
  with pytest.raises(sources.SourceError, match="plain http is refused"):
    sources.resolve("http://example.org/x.pth", "dass")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(sources.SourceError, match="HF_HUB_OFFLINE is set and the file is not"):
    sources.resolve(server.url("/never-fetched.pth"), "dass")
  assert server.requests == [("GET", "/missing.pth")]


def test_offline_url_uses_the_cache(cache, monkeypatch, server, dass_sd):
  url = server.serve("/DASS_small.pth", _pth_bytes(dass_sd))
  first = sources.resolve(url, "dass")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  assert sources.resolve(url, "dass") == first
  assert server.gets() == 1


def test_local_paths_and_the_table(tmp_path, capsys):
  with pytest.raises(FileNotFoundError, match="checkpoint not found"):
    sources.resolve(tmp_path / "nope.pth", "dass")
  assert sources.resolve(tmp_path, "dass").path == tmp_path
  assert cli_main(["--list"]) == 0
  listing = capsys.readouterr().out
  assert "dass-small-47.2" in listing and "hf://saurabhati/DASS_small_AudioSet_47.2" in listing
  for model in published.MODELS:
    assert model.converter in SUBCOMMANDS, model
    assert model.source.startswith(("hf://", "https://")), model
    assert published.find(model.name) is model and published.find(model.source) is model


# ---------------------------------------------------------------- converted on first use


def test_converted_folder_converts_once_then_reuses(cache, server, dass_sd, dass_reference):
  url = server.serve("/DASS_small.pth", _pth_bytes(dass_sd))
  folder = converted_folder(url, "dass")
  assert folder.parent == cache / "converted"
  _assert_same_params(folder, dass_reference)
  stamp = (folder / "config.json").stat().st_mtime_ns
  assert converted_folder(url, "dass") == folder
  assert (folder / "config.json").stat().st_mtime_ns == stamp
  assert server.gets() == 1


def test_converted_folder_is_keyed_on_converter_version_and_options(
  cache, server, dass_sd, monkeypatch
):
  from convert_torch import dass as dass_converter

  url = server.serve("/DASS_small.pth", _pth_bytes(dass_sd))
  first = converted_folder(url, "dass")
  assert converted_folder(url, "dass") == first  # the same conversion reuses its folder
  # Another converter reading the same source (here the same module under a second name).
  monkeypatch.setitem(SUBCOMMANDS, "dass-copy", "convert_torch.dass")
  other = converted_folder(url, "dass-copy")
  # Other options for the same converter.
  with_options = converted_folder(url, "dass", {"num_classes": SMALL["num_classes"]})
  # The converter's mapping changed: its version was bumped.
  bumped = dataclasses.replace(
    dass_converter.CONVERTER, version=dass_converter.CONVERTER.version + 1
  )
  monkeypatch.setattr(dass_converter, "CONVERTER", bumped)
  newer = converted_folder(url, "dass")
  folders = {first, other, with_options, newer}
  assert len(folders) == 4 and all((f / "config.json").is_file() for f in folders)
  assert sorted(p.name for p in (cache / "converted").iterdir()) == sorted(f.name for f in folders)
  assert f"-dass-v{bumped.version}-" in newer.name
  stamp = (newer / "config.json").stat().st_mtime_ns
  assert (
    converted_folder(url, "dass") == newer and (newer / "config.json").stat().st_mtime_ns == stamp
  )


def test_converted_folder_failures_leave_nothing(cache, server, dass_sd):
  broken = {k: v for k, v in dass_sd.items() if not k.endswith("classifier.head.bias")}
  url = server.serve("/broken.pth", _pth_bytes(broken))
  with pytest.raises(ConversionError, match=r"classifier\.head\.bias"):
    converted_folder(url, "dass")
  assert list((cache / "converted").iterdir()) == []
  with pytest.raises(sources.SourceError, match="say which converter"):
    converted_folder("hf://owner/unknown")
  with pytest.raises(sources.SourceError, match="--num-classes"):
    converted_folder("vmamba-tiny-s1l8")


def test_load_model_and_predict_take_a_published_name(
  cache, monkeypatch, tmp_path, capsys, dass_hub_files, dass_reference
):
  entry = published.find(published.DEFAULT_DASS)
  fill_hub_cache(cache / "hub", entry.source[len("hf://") :], dass_hub_files)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  assert is_source_name(entry.name) and not is_source_name(cache)
  _, _, config = dass_jax.load_model(entry.name)
  assert config.num_classes == SMALL["num_classes"]
  (folder,) = (cache / "converted").iterdir()  # named after the published name and converter
  assert folder.name.startswith(f"{entry.name}-dass-v")
  _assert_same_params(folder, dass_reference)
  shutil.rmtree(cache / "hub")  # later uses need nothing fetched
  x = np.random.default_rng(0).standard_normal((40, 128)).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  assert predict_main(["--checkpoint", entry.name, str(tmp_path / "x.npy"), "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["num_classes"] == SMALL["num_classes"]
