"""One exception hierarchy for the whole program.

Every class knows the process exit code it maps to (restic's where they overlap) and may carry a
hint: the next thing a person should try. Front-ends print ``message`` and ``hint`` and exit with
``exit_code``; nothing else needs to know the mapping.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_PARTIAL = 3  # snapshot written, but some sources could not be read
EXIT_NO_REPOSITORY = 10
EXIT_LOCK = 11
EXIT_WRONG_PASSWORD = 12
EXIT_INTERRUPTED = 130


class CofferError(Exception):
    """Base class: an error a person can act on."""

    exit_code: int = EXIT_FATAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(CofferError):
    """The command line or its arguments are wrong."""


class Interrupted(CofferError):
    exit_code = EXIT_INTERRUPTED


# --- repository-level -------------------------------------------------------------------------


class RepositoryError(CofferError):
    """Something about the repository as a whole."""


class RepositoryNotFound(RepositoryError):
    exit_code = EXIT_NO_REPOSITORY


class RepositoryExists(RepositoryError):
    """``init`` refuses to overwrite an existing repository."""


class WrongPassword(RepositoryError):
    exit_code = EXIT_WRONG_PASSWORD


class NoKeyFound(WrongPassword):
    """No key file could be opened with the password (or there are none)."""


class LockError(RepositoryError):
    exit_code = EXIT_LOCK


class LockConflict(LockError):
    """Another process holds a lock that conflicts with ours."""


class LockLost(LockError):
    """Our own lock could not be kept fresh; we must stop writing."""


# --- data integrity and format ----------------------------------------------------------------


class FormatError(CofferError):
    """Bytes that do not decode as the restic format says they should."""


class IntegrityError(FormatError):
    """Authentication or hash verification failed: the data was damaged or tampered with."""


class BlobNotFound(FormatError):
    """A blob a snapshot needs is not in the index."""


# --- backends ---------------------------------------------------------------------------------


class BackendError(CofferError):
    """Storage failed. ``transient`` tells the retry wrapper whether trying again can help."""

    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None, transient: bool | None = None) -> None:
        super().__init__(message, hint=hint)
        if transient is not None:
            self.transient = transient


class ObjectNotFound(BackendError):
    """The named object does not exist."""


class ObjectExists(BackendError):
    """An all-or-nothing save found the object already present."""


class ShortRead(BackendError):
    """Fewer bytes came back than were asked for."""

    transient = True


class NoSpace(BackendError):
    """The storage is full (ENOSPC, HTTP 507)."""


class PermissionDenied(BackendError):
    """The storage refused access (EACCES, HTTP 401/403)."""


class TransientBackendError(BackendError):
    transient = True


# --- sources, plan, actions -------------------------------------------------------------------


class SourceError(CofferError):
    """A backup source (file tree, database, stream) could not be read."""


class ConfigError(CofferError):
    """The plan file is invalid."""


class RestoreError(CofferError):
    """A restore could not complete."""


class UnsafePath(RestoreError):
    """A snapshot asked to write outside the restore target."""
