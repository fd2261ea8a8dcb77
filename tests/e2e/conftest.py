"""Fixtures shared by the end-to-end tests (a module's own fixture of the same name wins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffer.store.backend.local import LocalBackend
from coffer.store.repository import Repository
from conftest import PASSWORD


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty local repository (version 2) with the tests' password."""
    r = tmp_path / "repo"
    Repository.init(LocalBackend(str(r)), PASSWORD)
    return r
