"""A stand-in for the Hugging Face hub on 127.0.0.1, speaking enough of its protocol for
``huggingface_hub`` itself (pointed at it with ``HF_ENDPOINT``) to download the tiny models.

What it answers, as the hub does:

* ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (the git blob
  hash of small files; for weights, LFS-style ``X-Linked-Etag`` = SHA-256 and ``X-Linked-Size``),
  ``Content-Length``, and ``Range: bytes=N-`` answered with ``206``;
* ``GET /api/models/{repo}[/revision/{revision}]``: ``sha`` and ``siblings``;
* a repo that is gone (or never existed): ``401`` + ``X-Error-Code: RepoNotFound``, which is what
  the hub tells an anonymous client; a missing file: ``404`` + ``EntryNotFound``.

Faults for tests: :meth:`StandInHub.cut` makes every download of one file stop half-way through
(the connection is dropped) until :meth:`StandInHub.heal`. Every request is logged.

Serve safetensors-only repos: a ``.bin``-only transformers repo makes transformers start a
conversion request to an outside service. (flair's NER model is a ``pytorch_model.bin`` by
nature; it is fetched with ``hf_hub_download`` and no transformers code sees it.)
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")


@dataclass
class _File:
    data: bytes
    etag: str  # git blob sha1 for small files, sha256 for LFS ones
    lfs: bool


@dataclass
class _Repo:
    files: dict[str, _File]
    commit: str
    revisions: set[str] = field(default_factory=lambda: {"main"})


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandInHub:
    """Serves folders as hub repos on ``self.url`` until :meth:`stop` (or the ``with`` block ends)."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.gone: set[str] = set()
        self.cuts: set[tuple[str, str]] = set()
        self.log: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(_Handler):
            stand_in = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, folder: Path, revisions: tuple[str, ...] = ("main",)) -> str:
        """Serve every file under ``folder`` as ``repo_id``; returns its commit hash."""
        files = {}
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            data = path.read_bytes()
            lfs = path.name.endswith(LFS_SUFFIXES)
            etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
            files[path.relative_to(folder).as_posix()] = _File(data, etag, lfs)
        commit = hashlib.sha1((repo_id + "".join(f.etag for f in files.values())).encode()).hexdigest()
        self.repos[repo_id] = _Repo(files, commit, set(revisions))
        return commit

    def remove(self, repo_id: str) -> None:
        """From now on ``repo_id`` is gone, as the withdrawn SD 2.x repos are."""
        self.gone.add(repo_id)

    def cut(self, repo_id: str, path: str) -> None:
        """Every download of ``path`` stops half-way (connection dropped) until :meth:`heal`."""
        self.cuts.add((repo_id, path))

    def heal(self) -> None:
        self.cuts.clear()

    def requests(self, method: str | None = None) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return [entry for entry in self.log if method is None or entry[0] == method]

    def start(self) -> StandInHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandInHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    stand_in: StandInHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # the hub's own log is StandInHub.log

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    # -- answers ---------------------------------------------------------------------------

    def _send(self, status: int, headers: dict[str, str], payload: bytes = b"", body: bool = True) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body and payload:
            self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str, body: bool) -> None:
        payload = json.dumps({"error": message}).encode()
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        self._send(status, headers, payload, body)

    def _repo(self, repo_id: str, body: bool) -> _Repo | None:
        repo = self.stand_in.repos.get(repo_id)
        if repo is None or repo_id in self.stand_in.gone:
            # The hub answers an anonymous client 401 for a repo that does not (or no longer) exist.
            self._error(401, "RepoNotFound", "Repository not found", body)
            return None
        return repo

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.stand_in._lock:
            self.stand_in.log.append((self.command, path, self.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts == [""]:
            self._send(200, {"Content-Type": "text/plain"}, b"stand-in hub\n", body)
        elif parts[:2] == ["api", "models"] and len(parts) >= 4:
            self._api(parts[2:], body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), body)
        else:
            self._error(404, "EntryNotFound", f"no route for {path}", body)

    def _api(self, parts: list[str], body: bool) -> None:
        repo_id = f"{parts[0]}/{parts[1]}"
        repo = self._repo(repo_id, body)
        if repo is None:
            return
        rest = parts[2:]
        revision = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
        if revision not in repo.revisions and revision != repo.commit:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
            return
        if rest[:1] == ["tree"]:
            # Listing a folder (transformers looks for chat templates): we serve no such folders.
            self._error(404, "EntryNotFound", "folder not found", body)
            return
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.commit,
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": name} for name in repo.files],
        }
        self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)

    def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
        repo = self._repo(repo_id, body)
        if repo is None:
            return
        if revision not in repo.revisions and revision != repo.commit:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
            return
        entry = repo.files.get(name)
        if entry is None:
            self._error(404, "EntryNotFound", f"{name} does not exist", body)
            return
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers |= {"X-Linked-Etag": f'"{entry.etag}"', "X-Linked-Size": str(len(entry.data))}
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and body:
            start = int(wanted[len("bytes=") :].split("-")[0] or 0)
        payload = entry.data[start:]
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(entry.data) - 1}/{len(entry.data)}"
        if body and (repo_id, name) in self.stand_in.cuts:
            # Announce the whole rest, send half of it, drop the connection.
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, headers, payload, body)


def add_to_cache(cache_dir: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """Lay ``folder`` out in a Hugging Face cache as ``repo_id`` would be after a download
    (blobs named by content hash, snapshot symlinks, ``refs/REVISION``); returns the snapshot."""
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    files = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        data = path.read_bytes()
        lfs = path.name.endswith(LFS_SUFFIXES)
        files[path.relative_to(folder).as_posix()] = (data, hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data))
    commit = hashlib.sha1((repo_id + "".join(etag for _, etag in files.values())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, (data, etag) in files.items():
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / etag)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit, encoding="utf-8")
    return snapshot
