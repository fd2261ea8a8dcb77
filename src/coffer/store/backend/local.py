"""A repository in a local directory (also how NFS and other mounted filesystems are used).

Saves go to a temporary name in the target directory, are fsynced, renamed into place, and the
directory is fsynced, so a crash leaves either the whole file or none under its final name.
Files are made read-only afterwards, as restic does.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from coffer.errors import BackendError, NoSpace, ObjectNotFound, PermissionDenied, ShortRead
from coffer.store.backend.base import Backend, BackendProperties, FileInfo, FileType, Handle

_TMP_MARK = "-tmp-"


def _translate(e: OSError, what: str, where: str) -> BackendError:
    code = e.errno
    msg = f"{where}: {what}: {e.strerror or e}"
    if code == errno.ENOENT:
        return ObjectNotFound(msg)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return NoSpace(msg, hint="free space on the repository's filesystem, then run the command again")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(msg, hint="check ownership and permissions of the repository directory")
    if code in (errno.EINTR, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE):
        return BackendError(msg, transient=True)
    return BackendError(msg)


class LocalBackend(Backend):
    FD_CACHE = 64

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.location = self.path
        # Ranged reads of the same pack (tree blobs, restore) reuse an open descriptor. Files are
        # immutable, so a descriptor of a file deleted meanwhile still reads the right bytes.
        self._fds: OrderedDict[str, list[int]] = OrderedDict()  # name -> [fd, users]
        self._fd_lock = threading.Lock()

    @property
    def properties(self) -> BackendProperties:
        return BackendProperties(connections=2, atomic_replace=True)

    def _dir(self, t: FileType) -> str:
        return self.path if t is FileType.CONFIG else os.path.join(self.path, t.dirname)

    def filename(self, h: Handle) -> str:
        if h.type is FileType.CONFIG:
            return os.path.join(self.path, "config")
        if h.type is FileType.PACK:
            return os.path.join(self.path, "data", h.name[:2], h.name)
        return os.path.join(self.path, h.type.dirname, h.name)

    def create(self) -> None:
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            for t in (FileType.KEY, FileType.SNAPSHOT, FileType.INDEX, FileType.LOCK, FileType.PACK):
                os.makedirs(self._dir(t), mode=0o700, exist_ok=True)
            for i in range(256):
                os.makedirs(os.path.join(self.path, "data", "%02x" % i), mode=0o700, exist_ok=True)
        except OSError as e:
            raise _translate(e, "create repository", self.path) from None

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        final = self.filename(h)
        d = os.path.dirname(final)
        tmp = f"{final}{_TMP_MARK}{secrets.token_hex(8)}"
        fd = -1
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                os.makedirs(d, mode=0o700, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            mv = memoryview(data)
            while mv:
                n = os.write(fd, mv)
                mv = mv[n:]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.chmod(tmp, 0o400)
            os.rename(tmp, final)
            _fsync_dir(d)
        except OSError as e:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _translate(e, f"save {h}", self.location) from None

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        fn = self.filename(h)
        try:
            if length is None:
                with open(fn, "rb", buffering=0) as f:
                    if offset:
                        f.seek(offset)
                    return f.read()
            cached = h.type is FileType.PACK
            fd = self._acquire_fd(fn) if cached else os.open(fn, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, length, offset)
                if len(data) < length:
                    # pread may return less on some filesystems; finish the read before giving up
                    parts = [data]
                    got = len(data)
                    while got < length:
                        more = os.pread(fd, length - got, offset + got)
                        if not more:
                            break
                        parts.append(more)
                        got += len(more)
                    data = b"".join(parts)
            finally:
                if cached:
                    self._release_fd(fn, fd)
                else:
                    os.close(fd)
            if len(data) != length:
                raise ShortRead(f"{self.location}: {h}: wanted {length} bytes at {offset}, got {len(data)}")
            return data
        except OSError as e:
            raise _translate(e, f"load {h}", self.location) from None

    def _acquire_fd(self, fn: str) -> int:
        with self._fd_lock:
            ent = self._fds.get(fn)
            if ent is not None:
                ent[1] += 1
                self._fds.move_to_end(fn)
                return ent[0]
        fd = os.open(fn, os.O_RDONLY | os.O_CLOEXEC)
        with self._fd_lock:
            ent = self._fds.get(fn)
            if ent is not None:  # another thread opened it meanwhile
                os.close(fd)
                ent[1] += 1
                return ent[0]
            self._fds[fn] = [fd, 1]
            for name in list(self._fds):  # evict idle descriptors beyond the cap
                if len(self._fds) <= self.FD_CACHE:
                    break
                victim = self._fds[name]
                if victim[1] == 0:
                    del self._fds[name]
                    os.close(victim[0])
        return fd

    def _release_fd(self, fn: str, fd: int) -> None:
        with self._fd_lock:
            ent = self._fds.get(fn)
            if ent is not None and ent[0] == fd:
                ent[1] -= 1
                return
        os.close(fd)  # evicted while we used it (cannot happen with refcounts, but never leak)

    def close(self) -> None:
        with self._fd_lock:
            for fd, _refs in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds.clear()

    def stat(self, h: Handle) -> FileInfo:
        try:
            return FileInfo(h.name, os.stat(self.filename(h)).st_size)
        except OSError as e:
            raise _translate(e, f"stat {h}", self.location) from None

    def remove(self, h: Handle) -> None:
        fn = self.filename(h)
        try:
            os.unlink(fn)
        except PermissionError:
            # some filesystems refuse to unlink read-only files; make it writable and retry
            try:
                os.chmod(fn, 0o600)
                os.unlink(fn)
            except OSError as e:
                raise _translate(e, f"remove {h}", self.location) from None
        except OSError as e:
            raise _translate(e, f"remove {h}", self.location) from None

    def list(self, t: FileType) -> Iterator[FileInfo]:
        if t is FileType.CONFIG:
            try:
                yield FileInfo("", os.stat(self.filename(Handle(t))).st_size)
            except FileNotFoundError:
                pass
            return
        base = self._dir(t)
        dirs = [base]
        if t is FileType.PACK:
            try:
                dirs = sorted(ent.path for ent in os.scandir(base) if ent.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                return
            except OSError as err:
                raise _translate(err, f"list {t.dirname}", self.location) from None
        for d in dirs:
            try:
                with os.scandir(d) as it:
                    for ent in it:
                        if _TMP_MARK in ent.name or not ent.is_file(follow_symlinks=False):
                            continue
                        try:
                            size = ent.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue
                        yield FileInfo(ent.name, size)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise _translate(e, f"list {t.dirname}", self.location) from None

    def remove_stale_temp_files(self, min_age: float = 0.0) -> int:
        """Temporary files left by a crash; safe to delete while nothing writes (exclusive lock).

        ``min_age`` (seconds) spares younger files: a writer whose lock lapsed while it was paused
        may still be in the middle of one, and should fail on its lost lock, not on a vanished file."""
        n = 0
        cutoff = time.time() - min_age
        for root, _dirs, files in os.walk(self.path):
            for f in files:
                if _TMP_MARK in f:
                    p = os.path.join(root, f)
                    try:
                        if min_age and os.lstat(p).st_mtime > cutoff:
                            continue
                        os.unlink(p)
                        n += 1
                    except OSError:
                        pass
        return n


def _fsync_dir(d: str) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot fsync a directory
            raise
    finally:
        os.close(fd)
