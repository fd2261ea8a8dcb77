"""Where bytes meet objects: an opened repository reads and writes restic's format.

Write order keeps the repository consistent at every instant: packs are uploaded first, then the
index files that point into them, then the snapshot that references the trees. Anything a crash
leaves behind is unreferenced and harmless (prune removes it later).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from coffer import env
from coffer.errors import (
    BackendError,
    BlobNotFound,
    CofferError,
    FormatError,
    IntegrityError,
    NoKeyFound,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    UsageError,
)
from coffer.store.backend.base import Backend, FileInfo, FileType, Handle
from coffer.store.claims import ClaimTable, tree_claim
from coffer.store.format import compression, crypto, ids, kdf, keyfile, pack, tree
from coffer.store.format.config import RepoConfig
from coffer.store.format.index import IndexFile, IndexPack
from coffer.store.format.pack import BlobType, PackedBlob
from coffer.store.format.snapshot import Snapshot
from coffer.store.keyprefetch import KeyPrefetch
from coffer.store.master_index import MasterIndex
from coffer.util.failpoints import failpoint

_T = TypeVar("_T")

MAX_KEYS_TRIED = 20
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
INDEX_MAX_BLOBS = 50_000
MAX_UNPACKED_FILE = 256 * 1024 * 1024
_MERGE_GAP = 64 * 1024  # read neighbouring small blobs of one pack in one request ...
_MERGE_MAX = 4 * 1024 * 1024  # ... up to this many bytes


@dataclass(frozen=True, slots=True)
class PackHeader:
    pack_id: bytes
    size: int
    header_length: int
    blobs: list[PackedBlob]


class Repository:
    """An opened repository: config and master key are known, so it can read and write."""

    def __init__(self, backend: Backend, key: crypto.CryptoKey, config: RepoConfig, key_id: str) -> None:
        self.backend = backend
        self.key = key
        self.config = config
        self.key_id = key_id
        self.index = MasterIndex()
        self.index_loaded = False
        self.compression_level: int | None = compression.DEFAULT_LEVEL  # None = off (data blobs)
        self.pack_size = DEFAULT_PACK_SIZE
        self.lock_guard: Callable[[], None] | None = None  # raises LockLost before commits
        # How another process opens this repository's backend again (URL, options, dry run); set by
        # whoever opened it from a URL. None: the backup engine keeps all work in this process.
        self.backend_recipe: tuple[str, dict[str, str], bool] | None = None
        self._writer: BlobWriter | None = None

    # ---------------------------------------------------------------- creation and opening
    @property
    def version(self) -> int:
        return self.config.version

    @classmethod
    def init(
        cls, backend: Backend, password: str, *, version: int = 2, polynomial: int | None = None,
        params: kdf.ScryptParams = kdf.DEFAULT_PARAMS,
    ) -> Repository:
        if not password:
            raise UsageError("an empty password is not allowed")
        if backend.exists(Handle(FileType.CONFIG)):
            raise RepositoryExists(f"repository master key and config already initialized at {backend.location}")
        if polynomial is None:
            from coffer.store.chunker import random_polynomial

            polynomial = random_polynomial()
        config = RepoConfig.new(version, polynomial)
        master = crypto.CryptoKey.random()
        backend.create()
        kf = keyfile.new_keyfile(password, master, username=env.username(), hostname=env.hostname(), params=params)
        raw = kf.to_bytes()
        key_id = hashlib.sha256(raw).hexdigest()
        backend.save(Handle(FileType.KEY, key_id), raw)
        backend.save(Handle(FileType.CONFIG), crypto.seal(master, config.to_bytes()))
        return cls(backend, master, config, key_id)

    @classmethod
    def open(cls, backend: Backend, password: str, *, key_hint: str | None = None,
             prefetch: KeyPrefetch | None = None) -> Repository:
        """``prefetch``: the key derivation started before ``backend`` was open (see keyprefetch)."""
        try:
            raw_config = backend.load(Handle(FileType.CONFIG))
        except ObjectNotFound:
            raise RepositoryNotFound(
                f"unable to open repository at {backend.location}: config file does not exist",
                hint="check the repository location, or create one with `coffer init`",
            ) from None
        master, key_id = cls._find_key(backend, password, key_hint, prefetch)
        try:
            plain = crypto.open_(master, raw_config)
        except IntegrityError:
            raise IntegrityError("config file: authentication failed (damaged or not this repository's key)") from None
        return cls(backend, master, RepoConfig.from_bytes(plain), key_id)

    @staticmethod
    def _find_key(backend: Backend, password: str, key_hint: str | None,
                  prefetch: KeyPrefetch | None = None) -> tuple[crypto.CryptoKey, str]:
        names = [fi.name for fi in backend.list(FileType.KEY) if ids.is_id_hex(fi.name)]
        if prefetch is not None:
            got = prefetch.take(names)
            if got is not None:
                failpoint("key_prefetched")
                return got
            tried = prefetch.failed()
            names = [n for n in names if n not in tried]
        if key_hint:
            names.sort(key=lambda n: not n.startswith(key_hint))
        for name in names[:MAX_KEYS_TRIED]:
            try:
                kf = keyfile.KeyFile.from_bytes(backend.load(Handle(FileType.KEY, name)))
                return kf.open(password), name
            except (IntegrityError, FormatError):
                continue
        raise NoKeyFound("wrong password or no key found")

    # ---------------------------------------------------------------- unpacked files
    def load_unpacked(self, t: FileType, file_id: bytes) -> bytes:
        """Plaintext JSON of a snapshot/index/lock file, after checking its name and MAC."""
        h = Handle(t, file_id.hex())
        raw = self.backend.load(h)
        if len(raw) > MAX_UNPACKED_FILE:
            raise FormatError(f"{h}: file too large ({len(raw)} bytes)")
        if hashlib.sha256(raw).digest() != file_id:
            raise IntegrityError(f"{h}: content does not match its name (damaged file)")
        try:
            plain = crypto.open_(self.key, raw)
        except IntegrityError:
            raise IntegrityError(f"{h}: authentication failed (damaged file)") from None
        try:
            return compression.decode_unpacked(plain, self.version)
        except FormatError as e:
            raise FormatError(f"{h}: {e}") from None

    def save_unpacked(self, t: FileType, json_bytes: bytes) -> bytes:
        data = crypto.seal(self.key, compression.encode_unpacked(json_bytes, self.version))
        file_id = hashlib.sha256(data).digest()
        self.backend.save(Handle(t, file_id.hex()), data)
        return file_id

    def list_files(self, t: FileType) -> list[FileInfo]:
        return [fi for fi in self.backend.list(t) if ids.is_id_hex(fi.name)]

    def list_ids(self, t: FileType) -> list[bytes]:
        return [bytes.fromhex(fi.name) for fi in self.list_files(t)]

    def resolve_id(self, t: FileType, prefix: str) -> bytes:
        """A full ID from a unique prefix, as restic's CLI accepts."""
        prefix = prefix.lower()
        if len(prefix) == 64 and ids.is_id_hex(prefix):
            return bytes.fromhex(prefix)
        matches = [fi.name for fi in self.list_files(t) if fi.name.startswith(prefix)]
        if not matches:
            raise ObjectNotFound(f"no {t.dirname} file with ID prefix {prefix!r} found")
        if len(matches) > 1:
            raise UsageError(f"ID prefix {prefix!r} is ambiguous ({len(matches)} matches)")
        return bytes.fromhex(matches[0])

    # ---------------------------------------------------------------- snapshots
    def load_snapshot(self, snap_id: bytes) -> Snapshot:
        return Snapshot.from_json(self.load_unpacked(FileType.SNAPSHOT, snap_id), snap_id)

    def list_snapshots(self, on_error: Callable[[bytes, Exception], None] | None = None) -> list[Snapshot]:
        """All readable snapshots; damaged ones are reported to ``on_error`` (or raise)."""
        return [snap for _, snap in self._load_all(FileType.SNAPSHOT, self.load_snapshot, on_error)]

    def _load_all(
        self, t: FileType, load: Callable[[bytes], _T], on_error: Callable[[bytes, Exception], None] | None
    ) -> list[tuple[bytes, _T]]:
        """Load every file of a type over the backend's parallel connections, in listing order.

        A damaged or vanished file goes to ``on_error`` (or raises when there is none), so one bad
        file never hides the others.
        """
        ids_ = self.list_ids(t)

        def one(fid: bytes) -> _T | Exception:
            try:
                return load(fid)
            except (FormatError, BackendError) as e:
                return e

        out: list[tuple[bytes, _T]] = []
        with cf.ThreadPoolExecutor(max_workers=max(2, self.backend.properties.connections)) as ex:
            for fid, res in zip(ids_, ex.map(one, ids_)):
                if isinstance(res, Exception):
                    if on_error is None:
                        raise res
                    on_error(fid, res)
                else:
                    out.append((fid, res))
        return out

    def save_snapshot(self, snap: Snapshot) -> bytes:
        if self.lock_guard:
            self.lock_guard()
        failpoint("before_snapshot_put")
        snap.id = self.save_unpacked(FileType.SNAPSHOT, snap.to_json())
        failpoint("after_snapshot_put")
        return snap.id

    # ---------------------------------------------------------------- index
    def load_index_file(self, index_id: bytes) -> IndexFile:
        return IndexFile.from_json(self.load_unpacked(FileType.INDEX, index_id))

    def load_index(self, on_error: Callable[[bytes, Exception], None] | None = None) -> None:
        """Read every index file into memory. List snapshots *before* calling this."""
        idx = MasterIndex()
        for iid, f in self._load_all(FileType.INDEX, self.load_index_file, on_error):
            for p in f.packs:
                idx.add_pack(p.id, p.blobs)
            idx.index_ids.add(iid)
        self.index = idx
        self.index_loaded = True

    # ---------------------------------------------------------------- blobs
    def _require_index(self) -> None:
        if not self.index_loaded:
            raise RuntimeError("the index must be loaded first (Repository.load_index)")

    def has_blob(self, t: BlobType, blob_id: bytes) -> bool:
        return self.index.has(t, blob_id)

    def load_blob(self, t: BlobType, blob_id: bytes) -> bytes:
        self._require_index()
        loc = self.index.lookup(t, blob_id)
        if loc is None:
            raise BlobNotFound(f"{t.label} blob {blob_id.hex()} not found in the index")
        b = loc.blob
        raw = self.backend.load(Handle(FileType.PACK, loc.pack_id.hex()), b.offset, b.length)
        return self.decode_blob(loc.pack_id, b, raw)

    def decode_blob(self, pack_id: bytes, b: PackedBlob, raw: bytes | memoryview) -> bytes:
        """Verify, decrypt, decompress and hash-check one stored blob."""
        try:
            plain = crypto.open_(self.key, raw)
            if b.uncompressed_length:
                plain = compression.decompress_blob(plain, b.uncompressed_length)
        except FormatError as e:
            raise IntegrityError(
                f"pack {pack_id.hex()[:8]}: {b.type.label} blob {b.id.hex()[:8]}: {e}"
            ) from None
        if hashlib.sha256(plain).digest() != b.id:
            raise IntegrityError(f"pack {pack_id.hex()[:8]}: blob {b.id.hex()[:8]}: hash does not match its ID")
        return plain

    def load_tree(self, tree_id: bytes) -> list[tree.Node]:
        return tree.decode_tree(self.load_blob(BlobType.TREE, tree_id))

    def load_trees(self, tree_ids: Sequence[bytes]) -> list[list[tree.Node] | CofferError]:
        """Many trees at once, each its nodes or why it cannot be read (thread-safe).

        Tree blobs are small and packed side by side: reading neighbours in one request instead
        of one request per tree is what makes walking tens of thousands of directories cheap."""
        self._require_index()
        out: list[list[tree.Node] | CofferError] = []
        items: list[tuple[bytes, PackedBlob]] = []
        where: list[int] = []
        lookup = self.index.lookup
        for tid in tree_ids:
            loc = lookup(BlobType.TREE, tid)
            if loc is None:
                out.append(BlobNotFound(f"tree blob {tid.hex()} not found in the index"))
                continue
            where.append(len(out))
            out.append([])  # filled in below (an exception object per tree was measurable)
            items.append((loc.pack_id, loc.blob))
        for i, (pid, b), raw in zip(where, items, self.load_raw_blobs(items)):
            if isinstance(raw, BackendError):
                out[i] = raw
                continue
            try:
                out[i] = tree.decode_tree(self.decode_blob(pid, b, raw))
            except CofferError as e:
                out[i] = e
        return out

    def load_raw_blobs(self, items: Sequence[tuple[bytes, PackedBlob]]) -> list[memoryview | BackendError]:
        """The stored (still encrypted) bytes of each ``(pack ID, blob)``, in the order given.

        Blobs of one pack that lie close together are read in one request (up to _MERGE_MAX
        bytes, holes up to _MERGE_GAP); when such a request fails, its blobs are retried one by one
        so that one bad range does not hide its readable neighbours."""
        out: list[memoryview | BackendError] = [ObjectNotFound("not loaded")] * len(items)
        order = sorted(range(len(items)), key=lambda i: (items[i][0], items[i][1].offset))
        run: list[int] = []
        start = end = 0
        for i in order:
            pid, b = items[i]
            if run and pid == items[run[0]][0] and 0 <= b.offset - end <= _MERGE_GAP \
                    and b.offset + b.length - start <= _MERGE_MAX:
                run.append(i)
                end = b.offset + b.length
                continue
            if run:
                self._load_run(items, run, start, end, out)
            run, start, end = [i], b.offset, b.offset + b.length
        if run:
            self._load_run(items, run, start, end, out)
        return out

    def _load_run(
        self, items: Sequence[tuple[bytes, PackedBlob]], run: list[int], start: int, end: int,
        out: list[memoryview | BackendError],
    ) -> None:
        h = Handle(FileType.PACK, items[run[0]][0].hex())
        try:
            raw = memoryview(self.backend.load(h, start, end - start))
        except BackendError as e:
            if len(run) == 1 or isinstance(e, ObjectNotFound):
                for i in run:
                    out[i] = e
            else:  # e.g. a truncated pack: find out blob by blob which ones are still readable
                for i in run:
                    b = items[i][1]
                    self._load_run(items, [i], b.offset, b.offset + b.length, out)
            return
        for i in run:
            b = items[i][1]
            out[i] = raw[b.offset - start : b.offset - start + b.length]

    def read_pack_header(self, pack_id: bytes, size: int | None = None) -> PackHeader:
        """Decode a pack's own header (ground truth, independent of the index)."""
        h = Handle(FileType.PACK, pack_id.hex())
        if size is None:
            size = self.backend.stat(h).size
        if size < pack.MIN_PACK_SIZE:
            raise FormatError(f"pack {pack_id.hex()}: file too short ({size} bytes)")
        # Read the tail in one request: most headers are small, so guess generously first.
        guess = min(size, 64 * 1024)
        tail = self.backend.load(h, size - guess, guess)
        hlen = pack.header_length(tail[-4:], size)
        if hlen + 4 <= guess:
            enc = tail[guess - 4 - hlen : guess - 4]
        else:
            enc = self.backend.load(h, size - 4 - hlen, hlen)
        try:
            plain = crypto.open_(self.key, enc)
        except IntegrityError:
            raise IntegrityError(f"pack {pack_id.hex()}: header authentication failed") from None
        blobs = pack.decode_header(plain, self.version)
        pack.check_layout(blobs, hlen, size)
        return PackHeader(pack_id, size, hlen, blobs)

    # ---------------------------------------------------------------- writing blobs
    @property
    def writer(self) -> BlobWriter:
        if self._writer is None:
            self._require_index()
            self._writer = BlobWriter(self)
        return self._writer

    def save_blob(
        self, t: BlobType, data: bytes, blob_id: bytes | None = None, *, store_duplicate: bool = False,
    ) -> tuple[bytes, bool]:
        """Store a blob unless the repository has it; thread-safe. Returns (ID, newly stored).

        ``store_duplicate`` stores it even when the index knows a copy (prune's repacking moves
        blobs out of packs that are about to be deleted)."""
        return self.writer.save(t, data, blob_id, store_duplicate=store_duplicate)

    def save_tree(self, nodes: list[tree.Node]) -> bytes:
        return self.save_blob(BlobType.TREE, tree.encode_tree(nodes))[0]

    def flush(self) -> None:
        """Upload every pending pack and write the index for them."""
        if self._writer is not None:
            self._writer.flush()

    def abort_writes(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def close(self) -> None:
        self.abort_writes()
        self.backend.close()


class _Packer:
    __slots__ = ("blobs", "buf", "type")

    def __init__(self, t: BlobType) -> None:
        self.type = t
        self.buf = bytearray()
        self.blobs: list[PackedBlob] = []


@dataclass(slots=True)
class WriterStats:
    blobs: int = 0
    data_blobs: int = 0
    tree_blobs: int = 0
    bytes_plain: int = 0  # plaintext bytes of new blobs
    bytes_stored: int = 0  # bytes of new blobs as stored (compressed + encrypted)
    packs: int = 0
    index_files: int = 0


class BlobWriter:
    """Collects new blobs into packs, uploads packs in parallel, and indexes them afterwards.

    Memory is bounded: at most ``connections + 1`` full packs are in flight; a caller that
    produces faster than the backend accepts blocks in ``save``.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.key = repo.key
        self.compress_data = repo.version >= 2 and repo.compression_level is not None
        self.compress_trees = repo.version >= 2
        self.level = repo.compression_level or compression.DEFAULT_LEVEL
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self.claims: ClaimTable | None = None  # shared dedup with the backup's worker processes
        self._packers = {BlobType.DATA: _Packer(BlobType.DATA), BlobType.TREE: _Packer(BlobType.TREE)}
        conns = max(1, repo.backend.properties.connections)
        self._pool = cf.ThreadPoolExecutor(max_workers=conns, thread_name_prefix="upload")
        self._slots = threading.BoundedSemaphore(conns + 1)
        self._futures: set[cf.Future[None]] = set()
        self._unindexed: list[IndexPack] = []
        self._unindexed_blobs = 0
        self._error: BaseException | None = None
        self.stats = WriterStats()
        self.on_pack_uploaded: Callable[[bytes, int], None] | None = None
        # Set to a list to collect every uploaded pack with its blobs (prune writes them into its
        # compact index); None keeps a long backup from holding a second copy of its index.
        self.record_packs: list[IndexPack] | None = None

    def _key(self, t: BlobType, blob_id: bytes) -> bytes:
        return blob_id if t == BlobType.DATA else b"T" + blob_id

    def _is_known(self, t: BlobType, blob_id: bytes) -> bool:
        """Whether a copy exists or is being stored elsewhere (called under the writer's lock)."""
        if self.repo.index.has(t, blob_id):
            return True
        if self.claims is None:
            return False
        return not self.claims.claim(blob_id if t == BlobType.DATA else tree_claim(blob_id))

    def share_claims(self, claims: ClaimTable) -> list[bytes]:
        """From now on, new data blobs are claimed in ``claims`` (shared with other processes).
        Returns the data blob IDs this writer is storing right now, for the caller to seed."""
        with self._lock:
            self.claims = claims
            return [k for k in self._pending if len(k) == 32]

    def adopt_packs(self, packs: list[IndexPack], delta: WriterStats) -> None:
        """Index packs that another process uploaded for this writer's repository (the backup's
        worker processes): they go into this writer's next index file, like its own packs."""
        with self._lock:
            for p in packs:
                self.repo.index.add_pack(p.id, p.blobs)
                self._unindexed.append(p)
                self._unindexed_blobs += len(p.blobs)
                if self.record_packs is not None:
                    self.record_packs.append(p)
            st = self.stats
            st.packs += len(packs)
            st.blobs += delta.blobs
            st.data_blobs += delta.data_blobs
            st.tree_blobs += delta.tree_blobs
            st.bytes_plain += delta.bytes_plain
            st.bytes_stored += delta.bytes_stored
        self.maybe_write_index()

    def save(
        self, t: BlobType, data: bytes, blob_id: bytes | None = None, *, store_duplicate: bool = False,
    ) -> tuple[bytes, bool]:
        if self._error is not None:
            raise self._error
        if blob_id is None:
            blob_id = hashlib.sha256(data).digest()
        k = self._key(t, blob_id)
        with self._lock:
            if k in self._pending or (not store_duplicate and self._is_known(t, blob_id)):
                return blob_id, False
            self._pending.add(k)
        compress = self.compress_trees if t == BlobType.TREE else self.compress_data
        if compress and data:
            payload: bytes = compression.compress(data, self.level)
            ulen = len(data)
        else:
            payload, ulen = data, 0
        sealed = crypto.seal_buffer(self.key, payload)
        self._append(t, blob_id, sealed, ulen, len(data))
        return blob_id, True

    def save_sealed(self, t: BlobType, blob_id: bytes, sealed: bytes | memoryview, uncompressed_length: int) -> None:
        """Add a blob exactly as it is stored elsewhere (already verified by the caller).

        Repacking copies the encrypted bytes instead of decrypting and re-encrypting them: a blob is
        its own sealed container, so the same bytes are valid in any pack."""
        if self._error is not None:
            raise self._error
        with self._lock:
            self._pending.add(self._key(t, blob_id))
        plain = uncompressed_length or len(sealed) - crypto.OVERHEAD
        self._append(t, blob_id, sealed, uncompressed_length, plain)

    def _append(
        self, t: BlobType, blob_id: bytes, sealed: bytes | bytearray | memoryview, ulen: int, plain_len: int
    ) -> None:
        full: _Packer | None = None
        with self._lock:
            p = self._packers[t]
            p.blobs.append(PackedBlob(t, blob_id, len(p.buf), len(sealed), ulen))
            p.buf += sealed
            st = self.stats
            st.blobs += 1
            if t == BlobType.DATA:
                st.data_blobs += 1
            else:
                st.tree_blobs += 1
            st.bytes_plain += plain_len
            st.bytes_stored += len(sealed)
            if len(p.buf) >= self.repo.pack_size:
                full = p
                self._packers[t] = _Packer(t)
        if full is not None:
            self._submit(full)
            self.maybe_write_index()

    def _submit(self, p: _Packer) -> None:
        self._slots.acquire()
        if self._error is not None:
            self._slots.release()
            raise self._error
        header = crypto.seal(self.key, pack.encode_header(p.blobs))
        p.buf += header
        p.buf += pack.trailer(len(header))
        fut = self._pool.submit(self._upload, p)
        with self._lock:
            self._futures.add(fut)
        fut.add_done_callback(self._done)

    def _upload(self, p: _Packer) -> None:
        data = p.buf
        pack_id = hashlib.sha256(data).digest()
        failpoint("before_pack_put")
        self.repo.backend.save(Handle(FileType.PACK, pack_id.hex()), data)
        failpoint("after_pack_put")
        with self._lock:
            self.repo.index.add_pack(pack_id, p.blobs)
            for b in p.blobs:
                self._pending.discard(self._key(b.type, b.id))
            self._unindexed.append(IndexPack(pack_id, p.blobs))
            self._unindexed_blobs += len(p.blobs)
            if self.record_packs is not None:
                self.record_packs.append(IndexPack(pack_id, p.blobs))
            self.stats.packs += 1
        if self.on_pack_uploaded:
            self.on_pack_uploaded(pack_id, len(data))

    def _done(self, fut: cf.Future[None]) -> None:
        with self._lock:
            self._futures.discard(fut)
        self._slots.release()
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def maybe_write_index(self) -> None:
        """Write an intermediate index once enough packs are waiting (crash recovery keeps them)."""
        if self._unindexed_blobs >= INDEX_MAX_BLOBS:
            self._write_index()

    def _write_index(self) -> None:
        with self._lock:
            packs, self._unindexed = self._unindexed, []
            self._unindexed_blobs = 0
        if not packs:
            return
        if self.repo.lock_guard:
            self.repo.lock_guard()
        failpoint("before_index_put")
        iid = self.repo.save_unpacked(FileType.INDEX, IndexFile(packs).to_json())
        failpoint("after_index_put")
        self.repo.index.index_ids.add(iid)
        self.stats.index_files += 1

    def flush(self) -> None:
        if self._error is not None:
            raise self._error
        with self._lock:
            rest = [p for p in self._packers.values() if p.blobs]
            self._packers = {BlobType.DATA: _Packer(BlobType.DATA), BlobType.TREE: _Packer(BlobType.TREE)}
        for p in rest:
            self._submit(p)
        while True:
            with self._lock:
                futs = list(self._futures)
            if not futs:
                break
            cf.wait(futs)
        if self._error is not None:
            raise self._error
        self._write_index()

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

