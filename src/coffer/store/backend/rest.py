"""restic's REST protocol, version 2 (rest-server, `rclone serve restic`), over requests.

``rest:http(s)://[user:pass@]host:port/path``. The server owns atomicity (it writes to a temporary
file and renames), sharding of ``data/`` and the storage layout; the client only speaks HTTP:
``POST /?create=true``, ``GET|HEAD|POST|DELETE /<type>/<name>`` and ``GET /<type>/`` with the v2
``Accept`` header for listings with sizes.

One ``requests.Session`` per thread: a session's connection pool is not documented as thread-safe,
and per-thread sessions keep each upload thread on its own kept-alive connection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from coffer.errors import (
    BackendError,
    NoSpace,
    ObjectNotFound,
    PermissionDenied,
    ShortRead,
    TransientBackendError,
    UsageError,
)
from coffer.store.backend.base import REMOTE_READ_SIZE, Backend, BackendProperties, FileInfo, FileType, Handle

V2 = "application/vnd.x.restic.rest.v2"
DEFAULT_CONNECTIONS = 5


class RestBackend(Backend):
    def __init__(self, url: str, options: dict[str, str] | None = None) -> None:
        options = options or {}
        raw = url[5:] if url.startswith("rest:") else url
        u = urlsplit(raw)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UsageError(f"invalid REST URL {url!r}", hint="use rest:http(s)://[user:pass@]host:port/path")
        self.auth = (unquote(u.username or ""), unquote(u.password or "")) if u.username else None
        netloc = u.hostname + (f":{u.port}" if u.port else "")
        if ":" in u.hostname:  # IPv6 literal
            netloc = f"[{u.hostname}]" + (f":{u.port}" if u.port else "")
        self.base = urlunsplit((u.scheme, netloc, u.path.rstrip("/") + "/", "", ""))
        self.location = "rest:" + self.base  # never shows the password
        try:
            self.connections = max(1, int(options.get("rest.connections", DEFAULT_CONNECTIONS)))
        except ValueError as e:
            raise UsageError(f"invalid rest.connections: {e}") from None
        self.verify: str | bool = options.get("rest.ca-cert") or True
        self.timeout = (float(options.get("rest.connect-timeout", 10)), float(options.get("rest.read-timeout", 120)))
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._mu = threading.Lock()

    @property
    def properties(self) -> BackendProperties:
        return BackendProperties(connections=self.connections, atomic_replace=True, read_size=REMOTE_READ_SIZE)

    # ---------------------------------------------------------------- plumbing
    def _session(self) -> Any:
        s = getattr(self._local, "session", None)
        if s is None:
            import requests
            from requests.adapters import HTTPAdapter

            s = requests.Session()
            s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0))
            s.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0))
            s.auth = self.auth
            s.verify = self.verify
            self._local.session = s
            with self._mu:
                self._sessions.append(s)
        return s

    def _url(self, h: Handle | None = None, t: FileType | None = None) -> str:
        if h is not None:
            if h.type is FileType.CONFIG:
                return self.base + "config"
            return self.base + f"{h.type.dirname}/{quote(h.name)}"
        assert t is not None
        return self.base + f"{t.dirname}/"

    def _request(self, method: str, url: str, what: str, **kw: Any) -> Any:
        import requests

        try:
            resp = self._session().request(method, url, timeout=self.timeout, **kw)
        except requests.exceptions.SSLError as e:
            raise BackendError(f"{self.location}: {what}: TLS error: {e}",
                               hint="use -o rest.ca-cert=FILE for a private CA") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError, OSError) as e:
            raise TransientBackendError(f"{self.location}: {what}: connection failed: {_reason(e)}") from None
        except requests.exceptions.RequestException as e:
            raise BackendError(f"{self.location}: {what}: {e}") from None
        if resp.status_code >= 300:
            raise self._status_error(resp, what)
        return resp

    def _status_error(self, resp: Any, what: str) -> BackendError:
        code = resp.status_code
        body = (resp.text or "").strip().splitlines()[:1]
        where = f"{self.location}: {what}: HTTP {code}" + (f" ({body[0][:200]})" if body else "")
        if code == 404:
            return ObjectNotFound(where)
        if code in (401, 403):
            return PermissionDenied(where, hint="check the user and password in the URL (rest:http://user:pass@...), "
                                                "or whether the server is append-only")
        if code == 416:
            return ShortRead(where, transient=False)
        if code == 507:
            return NoSpace(where, hint="free space on the REST server")
        if code >= 500 or code in (408, 429):
            return TransientBackendError(where)
        return BackendError(where)

    # ---------------------------------------------------------------- operations
    def create(self) -> None:
        self._request("POST", self.base + "?create=true", "create repository")

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        body = bytes(data) if not isinstance(data, bytes) else data
        try:
            self._request("POST", self._url(h), f"save {h}", data=body,
                          headers={"Content-Type": "application/octet-stream"})
        except PermissionDenied:
            # rest-server refuses to overwrite (403): a retried save whose first try landed is done.
            try:
                if self.stat(h).size == len(body):
                    return
            except BackendError:
                pass
            raise

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            self.stat(h)
            return b""
        headers = {"Accept-Encoding": "identity"}
        if length is not None:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        import requests

        resp = self._request("GET", self._url(h), f"load {h}", headers=headers, stream=True)
        try:
            # urllib3 enforces Content-Length: a body cut off early raises here, and is retried
            data: bytes = resp.content
        except (requests.exceptions.RequestException, OSError) as e:
            raise ShortRead(f"{self.location}: load {h}: body cut off: {e}") from None
        finally:
            resp.close()
        if offset and resp.status_code == 200:  # server ignored the range
            data = data[offset: offset + length if length is not None else None]
        if length is not None and len(data) != length:
            raise ShortRead(f"{self.location}: load {h}: wanted {length} bytes at {offset}, got {len(data)}",
                            transient=False)
        return data

    def stat(self, h: Handle) -> FileInfo:
        resp = self._request("HEAD", self._url(h), f"stat {h}")
        size = resp.headers.get("Content-Length")
        if size is None or not size.isdigit():
            raise BackendError(f"{self.location}: stat {h}: no Content-Length in the answer")
        return FileInfo(h.name, int(size))

    def remove(self, h: Handle) -> None:
        self._request("DELETE", self._url(h), f"remove {h}")

    def list(self, t: FileType) -> Iterator[FileInfo]:
        if t is FileType.CONFIG:
            try:
                yield self.stat(Handle(t))
            except ObjectNotFound:
                pass
            return
        resp = self._request("GET", self._url(t=t), f"list {t.dirname}", headers={"Accept": V2})
        try:
            items = resp.json()
        except ValueError:
            raise TransientBackendError(f"{self.location}: list {t.dirname}: answer is not JSON") from None
        if not isinstance(items, list):
            raise BackendError(f"{self.location}: list {t.dirname}: unexpected answer")
        v2 = resp.headers.get("Content-Type", "").startswith(V2)
        for it in items:
            if isinstance(it, dict) and v2:
                yield FileInfo(str(it.get("name", "")), int(it.get("size", 0)))
            elif isinstance(it, str):  # a v1 server: names only
                yield FileInfo(it, self.stat(Handle(t, it)).size)

    def close(self) -> None:
        with self._mu:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()


def _reason(e: BaseException) -> str:
    """The cause worth showing ("[Errno 111] Connection refused"), not urllib3's wrapping of it."""
    inner = e.args[0] if e.args else None
    reason = getattr(inner, "reason", None)
    text = str(reason if reason is not None else e)
    return text.rsplit(": ", 1)[-1] if "Errno" in text else text


def from_url(url: str, options: dict[str, str]) -> Backend:
    return RestBackend(url, options)
