"""The parent's side of the restore worker processes: deal files out, take their reports.

Files are dealt in contiguous pieces (files that share packs stay together), each piece to the
worker with the least work so far, so one large file is balanced by the pieces after it. A worker
may get many deals: while the parent still reads deeper trees it hands out the files of each level
as soon as their directories exist, so the workers write while planning goes on. ``finish`` tells
every worker that nothing more comes and waits for the last reports.

Blob locations are looked up here, straight into the plain tuples the workers get (no per-blob
objects, no pickled dataclasses: with tens of thousands of files that bookkeeping held the
workers up).
"""

from __future__ import annotations

import subprocess
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from coffer.store.format.crypto import OVERHEAD
from coffer.store.format.pack import BlobType

if TYPE_CHECKING:
    from coffer.engine.restore import _Dir, _Item, _Proc, _Restorer
    from coffer.engine.workerpool import ForkedProcess

DATA = BlobType.DATA
FILE_COST = 32 * 1024  # what finishing one file costs, in bytes written (for sharing work out)
PIECES_PER_WORKER = 16  # at most: pieces end at pack ends where they can, so at least a pack each
# Work per worker (bytes, plus FILE_COST per file) planned before it is dealt out
# (COFFER_RESTORE_DEAL_BYTES): smaller deals start the workers sooner but split a pack's reads into
# more requests, one per worker and deal.
DEAL_WEIGHT = 64 * 1024 * 1024


class _Worker:
    __slots__ = ("files", "inp", "load", "out", "popen")

    def __init__(self, popen: subprocess.Popen[bytes] | ForkedProcess, out: Connection, inp: Connection) -> None:
        self.popen, self.out, self.inp = popen, out, inp
        self.files: list[_Item] = []  # everything sent, at the index the worker reports it by
        self.load = 0


class Dispatcher:
    def __init__(self, restorer: _Restorer, procs: list[_Proc]):
        self.r = restorer
        self.workers = [_Worker(*p) for p in procs]
        self.live: dict[Connection, _Worker] = {w.inp: w for w in self.workers}
        self.lookup = restorer.repo.index.lookup_raw
        self.locs: dict[bytes, tuple[bytes, int, int, int, int]] = {}  # ID -> pack, offset, length, ulen, plain

    # ---------------------------------------------------------------- sending
    def deal(self, files: list[_Item]) -> None:
        """Hand ``files`` (pending, their directories created) out to the live workers.

        Pieces end where a pack ends when they can: a pack whose blobs go to two workers is read
        twice (and some servers read the whole object for every ranged GET)."""
        workers = [w for w in self.workers if w.inp in self.live]
        if not files:
            return
        if not workers:
            for f in files:
                self.r._fail(f, "no restore worker process is left to write it")
            return
        located: list[tuple[_Item, list[tuple[bytes, int, int, int, int]]]] = []
        for f in files:
            locs = self._locate(f)
            if locs is not None:
                located.append((f, locs))
        if not located:
            return
        total = sum(f.node.size + FILE_COST for f, _ in located)
        step = max(1, total // (PIECES_PER_WORKER * len(workers)))
        shares: dict[_Worker, list[tuple[_Item, list[tuple[bytes, int, int, int, int]]]]] = {}
        piece: list[tuple[_Item, list[tuple[bytes, int, int, int, int]]]] = []
        weight = 0
        for i, (f, locs) in enumerate(located):
            piece.append((f, locs))
            weight += f.node.size + FILE_COST
            nxt = located[i + 1][1] if i + 1 < len(located) else None
            at_pack_end = nxt is None or not locs or not nxt or locs[-1][0] != nxt[0][0]
            if nxt is None or (weight >= step and at_pack_end) or weight >= 4 * step:
                w = min(workers, key=lambda w: w.load)
                shares.setdefault(w, []).extend(piece)
                w.load += weight
                piece, weight = [], 0
        for w, share in shares.items():
            self._send(w, share)

    def _locate(self, f: _Item) -> list[tuple[bytes, int, int, int, int]] | None:
        """Where each blob of ``f`` is (pack, offset, length, ulen, plain length); None, with the
        file failed, when one is not in the index."""
        lookup, locs = self.lookup, self.locs
        out = []
        for bid in f.node.content or ():
            loc = locs.get(bid)
            if loc is None:
                raw = lookup(DATA, bid)
                if raw is None:
                    self.r._fail(f, f"data blob {bid.hex()} is not in the index (missing from the repository)")
                    return None
                pid, off, length, ulen = raw
                loc = locs[bid] = (pid, off, length, ulen, ulen or length - OVERHEAD)
            out.append(loc)
        return out

    def _send(self, w: _Worker, share: list[tuple[_Item, list[tuple[bytes, int, int, int, int]]]]) -> None:
        dirs: dict[_Dir, int] = {}
        dir_comps: list[list[bytes]] = []
        msg_files: list[tuple[Any, ...]] = []
        sent: list[_Item] = []
        blobs: dict[bytes, tuple[bytes, int, int, int]] = {}
        for f, locs in share:
            nd = f.node
            size = 0
            for bid, loc in zip(nd.content or (), locs):
                blobs[bid] = loc[:4]
                size += loc[4]
            f.size = size
            di = dirs.get(f.parent)
            if di is None:
                di = dirs[f.parent] = len(dir_comps)
                comps: list[bytes] = []
                cur: _Dir | None = f.parent
                while cur is not None and cur.parent is not None:
                    comps.append(cur.name)
                    cur = cur.parent
                dir_comps.append(comps[::-1])
            # dir index, name, location, (mode, uid, gid, mtime, atime, xattrs), content IDs
            msg_files.append((di, f.name, f.loc, (nd.mode, nd.uid, nd.gid, nd.mtime, nd.atime, nd.xattrs),
                              nd.content))
            sent.append(f)
        if not sent:
            return
        w.files.extend(sent)
        try:
            w.out.send({"dirs": dir_comps, "files": msg_files, "blobs": blobs})
        except OSError:
            self._dead(w)  # its files (these included) fail with the reason

    # ---------------------------------------------------------------- receiving
    def poll(self, timeout: float | None = 0) -> None:
        """Take the reports that are waiting (or the first to come within ``timeout``)."""
        for conn in wait(list(self.live), timeout):
            assert isinstance(conn, Connection)
            w = self.live[conn]
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                self._dead(w)
                continue
            if msg[0] == "files":
                self._take(w, msg)
            else:
                if msg[0] == "error":
                    self._fail_all(w, f"restore worker process {w.popen.pid}: {msg[1]}")
                del self.live[conn]

    def _take(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        from coffer.engine.restore import _PENDING

        r = self.r
        _, done, nbytes, errs = msg
        for loc, text in errs:
            r.error(loc, text)
        r.progress.add_bytes(nbytes)
        for idx, err in done:
            f = w.files[idx]
            if f.state != _PENDING:
                continue
            if err is None:
                r._done(f)
            else:
                r._fail(f, err, report=False)  # the worker sent its message

    def _dead(self, w: _Worker) -> None:
        self.live.pop(w.inp, None)
        rc = w.popen.poll()
        if rc is None:
            w.popen.kill()
            rc = w.popen.wait()
        why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        self._fail_all(w, f"restore worker process {w.popen.pid} died ({why})")

    def _fail_all(self, w: _Worker, msg: str) -> None:
        for f in w.files:
            self.r._fail(f, msg)

    # ---------------------------------------------------------------- the end
    def finish(self) -> None:
        """Nothing more comes: let every worker finish and take its last reports."""
        for w in list(self.live.values()):
            try:
                w.out.send(None)
            except OSError:
                self._dead(w)
        while self.live:
            self.poll(None)

    def close(self) -> None:
        """Stop whatever still runs (an error cut the restore short) and release the pipes."""
        from coffer.engine.restore import _PENDING

        for w in self.workers:
            if w.popen.poll() is None and any(f.state == _PENDING for f in w.files):
                w.popen.kill()
            w.out.close()
            w.inp.close()
            try:
                w.popen.wait(5)
            except subprocess.TimeoutExpired:
                w.popen.kill()
                w.popen.wait()
