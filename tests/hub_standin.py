"""A stand-in for the Hugging Face hub on 127.0.0.1: one model repository served through the part of the
hub's API that ``huggingface_hub``'s downloads use.

Served, as the hub serves them (what ``snapshot_download`` and ``hf_hub_download`` ask for):

- ``GET /api/models/{repo}/revision/{rev}``: the repository's commit (``sha``) and files (``siblings``);
- ``GET /api/models/{repo}/tree/{rev}``: every file with its size, git blob id and, for weights, its LFS
  SHA-256 (what ``snapshot_download`` lists and filters with ``allow_patterns``);
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{file}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` (LFS files also ``X-Linked-Etag`` / ``X-Linked-Size``: their SHA-256 names the blob);
- errors with the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).

Every request is recorded (method and path) so a test can tell what was fetched.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".pt")
"""Files stored through git LFS on the hub (weights); the others are plain git blobs."""


@dataclass(frozen=True)
class HubFile:
    """One file of the repository as the hub describes it."""

    path: str
    data: bytes

    @property
    def blob_id(self) -> str:
        """The git blob id (what the hub's ``oid`` and a plain file's ``ETag`` are)."""
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    def tree_entry(self) -> dict:
        """The file's entry in ``/api/models/{repo}/tree/{rev}``."""
        entry = {"type": "file", "path": self.path, "size": len(self.data), "oid": self.blob_id}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return entry

    def headers(self) -> dict[str, str]:
        """Metadata headers of ``/resolve`` (besides ``X-Repo-Commit``)."""
        headers = {"ETag": f'"{self.blob_id}"', "Content-Length": str(len(self.data))}
        if self.lfs:
            headers.update({"X-Linked-Etag": f'"{self.sha256}"', "X-Linked-Size": str(len(self.data))})
        return headers


@dataclass
class StandInHub:
    """One model repository (``repo_id`` at commit ``commit``) served on 127.0.0.1 until :meth:`close`."""

    repo_id: str
    files: dict[str, HubFile]
    commit: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """What ``HF_ENDPOINT`` is set to."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fetched(self, method: str = "GET") -> set[str]:
        """The repository files requested with ``method`` from ``/resolve``."""
        prefix = f"/{self.repo_id}/resolve/"
        return {path[len(prefix):].split("/", 1)[1] for m, path in self.requests
                if m == method and path.startswith(prefix)}

    def close(self) -> None:
        """Stop serving (idempotent): later connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None


def serve_folder(folder: Path, repo_id: str, extra: dict[str, bytes] | None = None) -> StandInHub:
    """Serve the files of ``folder`` (and ``extra``: name -> content) as the repository ``repo_id``.

    The commit id is a hash of the contents, so the same files give the same snapshot folder.
    """
    contents = {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()} | dict(extra or {})
    files = {name: HubFile(name, data) for name, data in sorted(contents.items())}
    commit = hashlib.sha1("".join(f.blob_id for f in files.values()).encode()).hexdigest()
    hub = StandInHub(repo_id, files, commit)
    hub._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub._server.daemon_threads = True
    hub._thread = threading.Thread(target=hub._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    hub._thread.start()
    return hub


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``hub``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # seconds an idle keep-alive connection is held

        def do_HEAD(self) -> None:  # noqa: N802  (http.server's naming)
            self._answer(body=False)

        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            self._answer(body=True)

        def log_message(self, format: str, *args) -> None:  # noqa: A002  (the overridden signature)
            pass  # quiet: the test reads ``hub.requests`` instead

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            status, headers, data = _route(hub, path)
            self.send_response(status)
            for key, value in {"Content-Length": str(len(data)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


def _route(hub: StandInHub, path: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a request for ``path``."""
    api, resolve = f"/api/models/{hub.repo_id}/", f"/{hub.repo_id}/resolve/"
    if path.startswith(api):
        kind, _, rev = path[len(api):].partition("/")
        return _api(hub, kind, rev.rstrip("/"))
    if path.startswith(resolve):
        rev, _, name = path[len(resolve):].partition("/")
        return _resolve(hub, rev, name)
    return _error(404, "RepoNotFound", "Repository not found")


def _api(hub: StandInHub, kind: str, rev: str) -> tuple[int, dict[str, str], bytes]:
    """The repository's description (``revision``) or file listing (``tree``) at ``rev``."""
    if rev not in ("main", hub.commit):
        return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
    if kind == "revision":
        return _json({"id": hub.repo_id, "modelId": hub.repo_id, "sha": hub.commit, "private": False,
                      "siblings": [{"rfilename": name} for name in hub.files]})
    if kind == "tree":
        return _json([f.tree_entry() for f in hub.files.values()])
    return _error(404, "RepoNotFound", f"no such API route: {kind}")


def _resolve(hub: StandInHub, rev: str, name: str) -> tuple[int, dict[str, str], bytes]:
    """The file ``name`` at ``rev`` with its metadata headers."""
    if rev not in ("main", hub.commit):
        return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
    if name not in hub.files:
        status, headers, body = _error(404, "EntryNotFound", f"{name} does not exist on {rev}")
        return status, {**headers, "X-Repo-Commit": hub.commit}, body
    file = hub.files[name]
    headers = {"X-Repo-Commit": hub.commit, "Content-Type": "application/octet-stream", **file.headers()}
    return 200, headers, file.data


def _json(value) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}, \
        json.dumps({"error": message}).encode()
