"""Repository URL -> backend driver, with restic's URL forms."""

from __future__ import annotations

from collections.abc import Callable

from coffer.errors import UsageError
from coffer.store.backend.base import Backend
from coffer.store.backend.local import LocalBackend

_REMOTE = ("s3", "rest", "sftp", "rclone", "b2", "azure", "gs", "swift")


def local_path(url: str) -> str | None:
    """The directory of a local repository URL (None for remote ones)."""
    if url.startswith("local:"):
        return url[len("local:"):]
    scheme = url.split(":", 1)[0]
    return None if scheme in _REMOTE and ":" in url else url


def open_backend(url: str, options: dict[str, str] | None = None,
                 warn: Callable[[str], None] | None = None) -> Backend:
    """Create the driver for ``url``. Remote drivers import lazily so a local run loads none of them.

    Remote drivers come wrapped in the retry wrapper (``-o retry.attempts=N`` etc.); a local
    directory does not, because its errors are not the kind that go away by waiting.
    """
    options = options or {}
    if not url:
        raise UsageError("no repository given", hint="use -r/--repo or set COFFER_REPOSITORY / RESTIC_REPOSITORY")
    if url.startswith("local:"):
        return LocalBackend(url[len("local:"):])
    scheme = url.split(":", 1)[0]
    if scheme in _REMOTE and ":" in url:
        try:
            import importlib

            mod = importlib.import_module(f"coffer.store.backend.{scheme}")
        except ImportError:
            raise UsageError(f"backend {scheme!r} is not supported yet") from None
        factory = getattr(mod, "from_url", None)
        if factory is None:
            raise UsageError(f"backend {scheme!r} is not supported yet")
        backend: Backend = factory(url, options)
        from coffer.store.backend.retry import RetryBackend, RetryPolicy

        return RetryBackend(backend, RetryPolicy.from_options(options), warn=warn)
    return LocalBackend(url)
