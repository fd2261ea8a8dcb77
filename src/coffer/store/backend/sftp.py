"""A repository on an SSH server, over SFTP (paramiko).

``sftp:user@host:/abs/path``, ``sftp:user@host:rel/path`` (relative to the login directory) and
``sftp://user@host:port//abs/path``. Host keys are checked against ``known_hosts`` (``-o
sftp.known-hosts=FILE``, else ``~/.ssh/known_hosts``); an unknown or changed host key is refused,
since the first connection is exactly when a man in the middle would be believed, unless the user
says ``-o sftp.insecure-accept-host-key=true``. The key comes from ``-o sftp.key=FILE``, else the
agent and ``~/.ssh/id_*``.

A save writes ``<name>-tmp-<random>`` and renames it into place with the POSIX rename extension,
so a connection cut mid-upload leaves a temporary file that listings skip, never a partial object.
Each parallel connection is its own SSH session: paramiko drives one transport from one thread, so
separate sessions are what lets uploads overlap.
"""

from __future__ import annotations

import errno
import os
import queue
import secrets
import stat as st
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

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

_TMP_MARK = "-tmp-"
DEFAULT_CONNECTIONS = 3


@dataclass(frozen=True, slots=True)
class SFTPLocation:
    user: str | None
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> SFTPLocation:
        if url.startswith("sftp://"):
            u = urlsplit(url)
            if not u.hostname:
                raise UsageError(f"invalid SFTP URL {url!r}", hint="use sftp://user@host:port//absolute/path")
            path = u.path[1:] if u.path.startswith("/") else u.path  # "//abs" -> "/abs", "/rel" -> "rel"
            return cls(unquote(u.username) if u.username else None, u.hostname, u.port or 22, path or ".")
        rest = url[5:] if url.startswith("sftp:") else url
        userhost, sep, path = rest.partition(":")
        if not sep or not userhost:
            raise UsageError(f"invalid SFTP URL {url!r}", hint="use sftp:user@host:/path")
        user, _, host = userhost.rpartition("@")
        return cls(user or None, host.strip("[]"), 22, path or ".")


class SFTPBackend(Backend):
    def __init__(self, url: str, options: dict[str, str] | None = None) -> None:
        options = options or {}
        self.loc = SFTPLocation.parse(url)
        self.location = url
        self.root = self.loc.path.rstrip("/") or "/"
        self.key_file = options.get("sftp.key") or None
        kh = options.get("sftp.known-hosts")
        self.known_hosts = os.path.expanduser(kh) if kh else None
        self.insecure = options.get("sftp.insecure-accept-host-key", "").lower() in ("1", "true", "yes")
        try:
            self.connections = max(1, int(options.get("sftp.connections", DEFAULT_CONNECTIONS)))
            self.timeout = float(options.get("sftp.timeout", 30))
        except ValueError as e:
            raise UsageError(f"invalid SFTP option: {e}") from None
        self._idle: queue.LifoQueue[tuple[Any, Any]] = queue.LifoQueue()
        self._closed = False
        self._known_dirs: set[str] = set()

    @property
    def properties(self) -> BackendProperties:
        return BackendProperties(connections=self.connections, atomic_replace=True, read_size=REMOTE_READ_SIZE)

    # ---------------------------------------------------------------- connections
    def _connect(self) -> tuple[Any, Any]:
        import paramiko

        client = paramiko.SSHClient()
        try:
            if self.known_hosts:
                if os.path.exists(self.known_hosts):
                    client.load_host_keys(self.known_hosts)
            else:
                client.load_system_host_keys()
        except (OSError, paramiko.SSHException) as e:
            raise BackendError(f"{self.location}: cannot read known_hosts: {e}") from None
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if self.insecure else paramiko.RejectPolicy())
        where = f"{self.location}: connect to {self.loc.host}:{self.loc.port}"
        try:
            client.connect(
                self.loc.host, port=self.loc.port, username=self.loc.user, key_filename=self.key_file,
                look_for_keys=self.key_file is None, allow_agent=self.key_file is None, timeout=self.timeout,
                banner_timeout=self.timeout, auth_timeout=self.timeout,
            )
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.timeout * 4)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise PermissionDenied(f"{where}: HOST KEY MISMATCH for {e.hostname}",
                                   hint="the server's key changed: verify it, then fix known_hosts") from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise PermissionDenied(f"{where}: authentication failed ({e})",
                                   hint="give the key with -o sftp.key=FILE, or check authorized_keys") from None
        except paramiko.SSHException as e:
            client.close()
            if "known_hosts" in str(e):
                raise PermissionDenied(
                    f"{where}: unknown host key ({e})",
                    hint="add the host to known_hosts (ssh-keyscan), give -o sftp.known-hosts=FILE, or accept it "
                         "with -o sftp.insecure-accept-host-key=true",
                ) from None
            raise TransientBackendError(f"{where}: {e}") from None
        except FileNotFoundError as e:
            client.close()
            raise UsageError(f"{where}: key file not found: {e.filename}") from None
        except (OSError, EOFError) as e:
            client.close()
            raise TransientBackendError(f"{where}: {e}") from None
        return client, sftp

    @contextmanager
    def _sftp(self) -> Iterator[Any]:
        """An SFTP session from the pool; one that failed at the transport level is dropped."""
        try:
            pair = self._idle.get_nowait()
        except queue.Empty:
            pair = self._connect()
        ok = False
        try:
            yield pair[1]
            ok = True
        except OSError as e:  # SFTP status errors (missing file, ...) leave the session usable
            ok = not isinstance(e, (TimeoutError, ConnectionError))
            raise
        finally:
            transport = pair[0].get_transport()
            if ok and transport is not None and transport.is_active() and not self._closed:
                self._idle.put(pair)
            else:
                pair[0].close()

    def _path(self, h: Handle) -> str:
        return f"{self.root}/{h}"

    def _dir(self, t: FileType) -> str:
        return self.root if t is FileType.CONFIG else f"{self.root}/{t.dirname}"

    def _translate(self, e: BaseException, what: str) -> BackendError:
        import paramiko

        where = f"{self.location}: {what}"
        if isinstance(e, BackendError):
            return e
        if isinstance(e, (EOFError, paramiko.SSHException, TimeoutError, ConnectionError)):
            return TransientBackendError(f"{where}: connection failed: {e}")
        if isinstance(e, OSError):
            code = e.errno
            text = e.strerror or str(e)
            if code == errno.ENOENT:
                return ObjectNotFound(f"{where}: not found")
            if code in (errno.EACCES, errno.EPERM):
                return PermissionDenied(f"{where}: permission denied ({text})",
                                        hint="check ownership and permissions on the server")
            if code in (errno.ENOSPC, errno.EDQUOT):
                return NoSpace(f"{where}: no space left ({text})")
            if "closed" in text.lower() or "eof" in text.lower():
                return TransientBackendError(f"{where}: connection failed: {text}")
            return BackendError(f"{where}: {text}")
        return BackendError(f"{where}: {type(e).__name__}: {e}")

    def _mkdirs(self, sftp: Any, d: str) -> None:
        if d in self._known_dirs:
            return
        parts = d.split("/")
        cur = "/" if d.startswith("/") else ""
        for p in parts:
            if not p:
                continue
            cur = f"{cur}{p}" if cur in ("", "/") else f"{cur}/{p}"
            try:
                sftp.mkdir(cur, 0o700)
            except OSError:
                try:
                    if not st.S_ISDIR(sftp.stat(cur).st_mode or 0):
                        raise BackendError(f"{self.location}: {cur} exists and is not a directory") from None
                except FileNotFoundError:
                    raise
        self._known_dirs.add(d)

    # ---------------------------------------------------------------- operations
    def create(self) -> None:
        # data/xx shards are made on first use: 256 mkdir round trips would make init slow
        dirs = [self.root] + [self._dir(t) for t in FileType if t is not FileType.CONFIG]
        try:
            with self._sftp() as sftp:
                for d in dirs:
                    self._mkdirs(sftp, d)
        except Exception as e:
            raise self._translate(e, "create repository") from None

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        final = self._path(h)
        tmp = f"{final}{_TMP_MARK}{secrets.token_hex(8)}"
        try:
            with self._sftp() as sftp:
                try:
                    self._write(sftp, tmp, data)
                except FileNotFoundError:
                    self._mkdirs(sftp, final.rsplit("/", 1)[0])
                    self._write(sftp, tmp, data)
                try:
                    sftp.posix_rename(tmp, final)
                except Exception:
                    try:
                        sftp.remove(tmp)
                    except Exception:
                        pass
                    raise
        except Exception as e:
            raise self._translate(e, f"save {h}") from None

    @staticmethod
    def _write(sftp: Any, path: str, data: bytes | bytearray | memoryview) -> None:
        with sftp.open(path, "wb") as f:
            f.set_pipelined(True)
            mv = memoryview(data)
            step = 1 << 20
            for i in range(0, len(mv), step):
                f.write(mv[i: i + step])
            # closing waits for every pipelined write to be acknowledged

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(h)
        try:
            with self._sftp() as sftp, sftp.open(path, "rb") as f:
                if length is None:
                    length = max(0, f.stat().st_size - offset)
                if length == 0:
                    return b""
                data = b"".join(f.readv([(offset, length)]))
        except Exception as e:
            raise self._translate(e, f"load {h}") from None
        if len(data) != length:
            raise ShortRead(f"{self.location}: load {h}: wanted {length} bytes at {offset}, got {len(data)}",
                            transient=False)
        return data

    def stat(self, h: Handle) -> FileInfo:
        try:
            with self._sftp() as sftp:
                return FileInfo(h.name, int(sftp.stat(self._path(h)).st_size or 0))
        except Exception as e:
            raise self._translate(e, f"stat {h}") from None

    def remove(self, h: Handle) -> None:
        try:
            with self._sftp() as sftp:
                sftp.remove(self._path(h))
        except Exception as e:
            raise self._translate(e, f"remove {h}") from None

    def list(self, t: FileType) -> Iterator[FileInfo]:
        if t is FileType.CONFIG:
            try:
                yield self.stat(Handle(t))
            except ObjectNotFound:
                pass
            return
        try:
            with self._sftp() as sftp:
                dirs = [self._dir(t)]
                if t is FileType.PACK:
                    try:
                        dirs = sorted(f"{dirs[0]}/{a.filename}" for a in sftp.listdir_attr(dirs[0])
                                      if st.S_ISDIR(a.st_mode or 0))
                    except FileNotFoundError:
                        return
                out: list[FileInfo] = []
                for d in dirs:
                    try:
                        entries = sftp.listdir_attr(d)
                    except FileNotFoundError:
                        continue
                    out.extend(FileInfo(a.filename, int(a.st_size or 0)) for a in entries
                               if _TMP_MARK not in a.filename and st.S_ISREG(a.st_mode or 0))
        except Exception as e:
            raise self._translate(e, f"list {t.dirname}") from None
        yield from out

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                client, _ = self._idle.get_nowait()
            except queue.Empty:
                return
            client.close()


def from_url(url: str, options: dict[str, str]) -> Backend:
    return SFTPBackend(url, options)
