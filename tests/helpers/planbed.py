"""A test bed for plan-driven commands: a directory with sample data, a plan and its repositories.

Everything runs as real processes against real repositories; the bed only knows where things are.
Paths in the plan are relative to the plan file, so the plans in tests stay short.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

COFFER = str(Path(sys.executable).parent / "coffer")
PASSWORD = "plan test password"

REPOS = """\
host: testhost
catalog: state/catalog.db
repositories:
  - {name: nvme, url: repos/nvme, password_env: COFFER_TEST_PW, media: nvme}
  - {name: nfs, url: repos/nfs, password_env: COFFER_TEST_PW, media: nfs}
  - {name: offsite, url: repos/offsite, password_env: COFFER_TEST_PW, media: hdd, offsite: true}
"""


class Bed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "COFFER_"))}
        self.env.update(COFFER_TEST_PW=PASSWORD, COFFER_HOSTNAME="testhost", XDG_CACHE_HOME=str(root / "cache"))

    # ------------------------------------------------------------------ files
    def plan(self, datasets: str, name: str = "plan.yaml", repos: str = REPOS) -> Path:
        p = self.root / name
        p.write_text(repos + "datasets:\n" + textwrap.indent(textwrap.dedent(datasets), "  "))
        return p

    def data(self, name: str, files: int = 20, size: int = 30_000, seed: int = 1) -> Path:
        d = self.root / "data" / name
        d.mkdir(parents=True, exist_ok=True)
        rnd = random.Random(seed)
        for i in range(files):
            (d / f"f{i:03d}.bin").write_bytes(rnd.randbytes(rnd.randint(size // 2, size)))
        (d / "index.txt").write_text("\n".join(f"f{i:03d}.bin" for i in range(files)) + "\n")
        return d

    def repo(self, name: str) -> Path:
        return self.root / "repos" / name

    # ------------------------------------------------------------------ running
    def coffer(self, *args: str, ok: tuple[int, ...] | None = (0,),
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([COFFER, *args], env=self.env, cwd=self.root, capture_output=True, text=True,
                           timeout=timeout)
        if ok is not None and r.returncode not in ok:
            raise AssertionError(f"coffer {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def backup(self, repo: str, dataset: str, *, age: timedelta | None = None) -> str:
        """A snapshot of data/<dataset> straight into one repository, optionally backdated."""
        args = ["-r", str(self.repo(repo)), "backup", "--json", "-q", "--host", "testhost", "--tag",
                f"dataset={dataset}", str(self.root / "data" / dataset)]
        if age is not None:
            args += ["--time", (datetime.now() - age).strftime("%Y-%m-%d %H:%M:%S")]
        env = dict(self.env, RESTIC_PASSWORD=PASSWORD)
        r = subprocess.run([COFFER, *args], env=env, cwd=self.root, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return str(json.loads(r.stdout.strip().splitlines()[-1])["snapshot_id"])

    def snapshots(self, repo: str) -> list[dict[str, object]]:
        env = dict(self.env, RESTIC_PASSWORD=PASSWORD)
        r = subprocess.run([COFFER, "-r", str(self.repo(repo)), "snapshots", "--json"], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out: list[dict[str, object]] = json.loads(r.stdout)
        return out

    def status(self, *extra: str, plan: str = "plan.yaml") -> tuple[int, dict[str, object]]:
        r = self.coffer("status", "--plan", plan, "--json", *extra, ok=None)
        assert r.stdout.strip(), r.stderr
        return r.returncode, json.loads(r.stdout)

    def catalog(self):  # type: ignore[no-untyped-def]
        from coffer.state.catalog import Catalog

        return Catalog.open(str(self.root / "state" / "catalog.db"))

    # ------------------------------------------------------------------ damage
    def pack_of(self, repo: str, file: Path) -> tuple[Path, int]:
        """The pack file holding the data blob of ``file`` (stored as one blob), and the blob's middle."""
        from coffer.store.backend.local import LocalBackend
        from coffer.store.format.pack import BlobType
        from coffer.store.repository import Repository

        r = Repository.open(LocalBackend(str(self.repo(repo))), PASSWORD)
        r.load_index()
        bid = hashlib.sha256(file.read_bytes()).digest()
        loc = r.index.lookup(BlobType.DATA, bid)
        assert loc is not None, f"{file} is not stored as one blob"
        pid = loc.pack_id.hex()
        return self.repo(repo) / "data" / pid[:2] / pid, loc.blob.offset + loc.blob.length // 2

    def flip(self, pack: Path, offset: int) -> None:
        pack.chmod(0o600)
        data = bytearray(pack.read_bytes())
        data[offset] ^= 0x01
        pack.write_bytes(bytes(data))
