"""Shared fixtures: run coffer and restic as real processes against real repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
COFFER = str(Path(sys.executable).parent / "coffer")
PASSWORD = "correct horse battery staple"

# In CI every tool a test needs must be present: a missing one is a failure, not a skip.
REQUIRE_ALL = os.environ.get("COFFER_REQUIRE_ALL") == "1"


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if REQUIRE_ALL:
            pytest.fail(f"{name} is required in CI but is not installed")
        pytest.skip(f"{name} is not installed")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("restic") and shutil.which("restic") is None and not REQUIRE_ALL:
            item.add_marker(pytest.mark.skip(reason="restic is not installed"))


Runner = Callable[..., subprocess.CompletedProcess[bytes]]


def _env(repo: Path | str | None, password: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    # COFFER_{BACKUP,RESTORE,CHECK}_PROCESS* pass through: `COFFER_BACKUP_PROCESS_THRESHOLD=0 pytest` runs
    # every backup through the worker processes, `COFFER_BACKUP_PROCESSES=0 pytest` through threads only.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RESTIC_", "COFFER_")) or k.startswith(("COFFER_BACKUP_PROCESS",
                                                                         "COFFER_RESTORE_PROCESS",
                                                                         "COFFER_CHECK_PROCESSES",
                                                                         "COFFER_WORKER_FORK"))}
    env["COFFER_HOSTNAME"] = "testhost"
    if repo is not None:
        env["RESTIC_REPOSITORY"] = str(repo)
    if password is not None:
        env["RESTIC_PASSWORD"] = password
    env["RESTIC_CACHE_DIR"] = env.get("RESTIC_CACHE_DIR", "/tmp/coffer-test-restic-cache")
    if extra:
        env.update(extra)
    return env


def _runner(binary: str, name: str) -> Runner:
    def run(*args: str, repo: Path | str | None = None, password: str | None = PASSWORD,
            input: bytes | None = None, env: dict[str, str] | None = None, check: bool = True,
            cwd: Path | str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        r = subprocess.run([binary, *args], env=_env(repo, password, env), input=input, capture_output=True,
                           cwd=cwd, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}")
        return r

    return run


@pytest.fixture
def coffer() -> Runner:
    """Run the coffer CLI: coffer(*args, repo=..., password=..., input=b"", env={}, check=True)."""
    return _runner(COFFER, "coffer")


@pytest.fixture
def restic() -> Runner:
    """Run the real restic binary with the same conventions as ``coffer``."""
    return _runner(need_tool("restic"), "restic")
