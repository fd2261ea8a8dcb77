"""Each driver's failures land in the right BackendError class, transient or permanent."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError, NoCredentialsError, ReadTimeoutError

from coffer.errors import (
    BackendError,
    NoSpace,
    ObjectNotFound,
    PermissionDenied,
    RepositoryNotFound,
    ShortRead,
    TransientBackendError,
)
from coffer.store.backend.rest import RestBackend
from coffer.store.backend.s3 import BucketNotFound, S3Backend
from coffer.store.backend.sftp import SFTPBackend


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> S3Backend:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    return S3Backend("s3:http://127.0.0.1:9/bkt", {})


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize(("code", "status", "cls", "transient"), [
    ("NoSuchKey", 404, ObjectNotFound, False),
    ("404", 404, ObjectNotFound, False),
    ("NoSuchBucket", 404, BucketNotFound, False),
    ("AccessDenied", 403, PermissionDenied, False),
    ("InvalidAccessKeyId", 403, PermissionDenied, False),
    ("SignatureDoesNotMatch", 403, PermissionDenied, False),
    ("InvalidRange", 416, ShortRead, False),
    ("InternalError", 500, TransientBackendError, True),
    ("SlowDown", 503, TransientBackendError, True),
    ("RequestTimeout", 400, TransientBackendError, True),
    ("TooManyRequests", 429, TransientBackendError, True),
    ("", 507, NoSpace, False),
    ("InvalidArgument", 400, BackendError, False),
])
def test_s3_client_errors(s3: S3Backend, code: str, status: int, cls: type, transient: bool) -> None:
    e = s3._translate(_client_error(code, status), "load config")
    assert type(e) is cls and e.transient is transient
    assert "s3:http://127.0.0.1:9/bkt: load config" in e.message


def test_s3_missing_bucket_is_a_missing_repository(s3: S3Backend) -> None:
    e = s3._translate(_client_error("NoSuchBucket", 404), "load config")
    assert isinstance(e, RepositoryNotFound) and e.exit_code == 10 and "'bkt'" in e.message


def test_s3_transport_errors(s3: S3Backend) -> None:
    assert type(s3._translate(ReadTimeoutError(endpoint_url="u"), "load x")) is TransientBackendError
    e = s3._translate(NoCredentialsError(), "load x")
    assert type(e) is PermissionDenied and e.hint and "AWS_ACCESS_KEY_ID" in e.hint


@pytest.mark.parametrize(("status", "cls", "transient"), [
    (401, PermissionDenied, False), (403, PermissionDenied, False), (404, ObjectNotFound, False),
    (416, ShortRead, False), (500, TransientBackendError, True), (503, TransientBackendError, True),
    (429, TransientBackendError, True), (507, NoSpace, False), (400, BackendError, False),
])
def test_rest_status_codes(status: int, cls: type, transient: bool) -> None:
    b = RestBackend("rest:http://127.0.0.1:9/r", {})
    e = b._status_error(SimpleNamespace(status_code=status, text="why"), "load config")
    assert type(e) is cls and e.transient is transient and f"HTTP {status}" in e.message


@pytest.mark.parametrize(("exc", "cls", "transient"), [
    (FileNotFoundError(errno.ENOENT, "No such file"), ObjectNotFound, False),
    (PermissionError(errno.EACCES, "Permission denied"), PermissionDenied, False),
    (OSError(errno.ENOSPC, "No space left on device"), NoSpace, False),
    (EOFError(), TransientBackendError, True),
    (ConnectionResetError(errno.ECONNRESET, "reset"), TransientBackendError, True),
    (OSError("Socket is closed"), TransientBackendError, True),
    (OSError("Failure"), BackendError, False),
])
def test_sftp_errors(exc: BaseException, cls: type, transient: bool) -> None:
    b = SFTPBackend("sftp:u@h:/r", {})
    e = b._translate(exc, "save data/ab/x")
    assert type(e) is cls and e.transient is transient and "sftp:u@h:/r: save data/ab/x" in e.message
