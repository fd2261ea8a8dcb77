"""S3 and S3-compatible object storage (AWS, Ceph RGW, MinIO, ...) through botocore.

Layout is restic's: ``<prefix>/config``, ``<prefix>/keys/<id>``, ``<prefix>/data/<id[:2]>/<id>``,
so restic and coffer share one bucket. A PUT is atomic on every S3 implementation, which is all
the all-or-nothing ``save`` needs: packs stay far below the 5 GiB single-PUT limit, so there are no
multipart uploads whose leftovers could linger. Every PUT carries Content-MD5, so a body damaged on
the way is refused by the server instead of stored.

botocore directly, not boto3: a boto3 session only wraps botocore's for clients, and importing boto3
(and s3transfer with it) costs every process, restore workers included, about a tenth of a second.

botocore's own retries are switched off: the retry wrapper is the one place that retries, and a
permanent error (wrong key, missing bucket) must reach the user at once, not after a minute.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from coffer.errors import (
    BackendError,
    NoSpace,
    ObjectNotFound,
    PermissionDenied,
    RepositoryNotFound,
    ShortRead,
    TransientBackendError,
    UsageError,
)
from coffer.store.backend.base import REMOTE_READ_SIZE, Backend, BackendProperties, FileInfo, FileType, Handle

DEFAULT_CONNECTIONS = 5
_TRANSIENT_CODES = {
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "BadDigest",
    "OperationAborted", "IncompleteBody",
}
_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "TokenRefreshRequired",
}
_CRED_HINT = ("check the S3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
              "AWS_SHARED_CREDENTIALS_FILE, and the bucket policy")


class BucketNotFound(BackendError, RepositoryNotFound):
    """The bucket itself is missing: no repository can be there (exit code 10, never retried)."""


@dataclass(frozen=True, slots=True)
class S3Location:
    endpoint: str | None  # None = AWS, chosen by region
    bucket: str
    prefix: str
    aws: bool

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """restic's forms: ``s3:https://host[:port]/bucket[/prefix]``, ``s3:host/bucket[/prefix]``."""
        rest = url[3:] if url.startswith("s3:") else url
        if "://" not in rest:
            rest = "https://" + rest
        u = urlsplit(rest)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise UsageError(f"invalid S3 URL {url!r}", hint="use s3:https://host[:port]/bucket[/prefix]")
        parts = [p for p in u.path.split("/") if p]
        if not parts:
            raise UsageError(f"S3 URL {url!r} names no bucket", hint="use s3:https://host[:port]/bucket[/prefix]")
        host = u.hostname or ""
        aws = host == "amazonaws.com" or host.endswith(".amazonaws.com")
        endpoint = None if host in ("s3.amazonaws.com", "amazonaws.com") else f"{u.scheme}://{u.netloc}"
        return cls(endpoint, parts[0], "/".join(parts[1:]), aws)


_loaders: dict[Any, Any] = {}
_loaders_lock = threading.Lock()


def _shared_loader(session: Any) -> Any:
    """One botocore data loader per data path for the whole process: it keeps the parsed service
    model and endpoint rules, so the second client costs half the first; restore workers forked
    after a first client start with them parsed. (Sessions stay per backend: credentials and
    profiles are resolved afresh each time.)"""
    from botocore.loaders import create_loader

    path = session.get_config_variable("data_path")
    with _loaders_lock:
        loader = _loaders.get(path)
        if loader is None:
            loader = _loaders[path] = create_loader(path)
        return loader


class S3Backend(Backend):
    def __init__(self, url: str, options: dict[str, str] | None = None) -> None:
        import botocore.session
        from botocore.config import Config

        options = options or {}
        self.loc = S3Location.parse(url)
        self.location = url
        self.bucket = self.loc.bucket
        self.prefix = self.loc.prefix.strip("/")
        try:
            self.connections = max(1, int(options.get("s3.connections", DEFAULT_CONNECTIONS)))
            self.page_size = max(1, min(1000, int(options.get("s3.list-page-size", 1000))))
        except ValueError as e:
            raise UsageError(f"invalid S3 option: {e}") from None
        self.storage_class = options.get("s3.storage-class", "")
        region = (options.get("s3.region") or os.environ.get("AWS_DEFAULT_REGION")
                  or os.environ.get("AWS_REGION") or "us-east-1")
        lookup = options.get("s3.bucket-lookup", "auto")
        if lookup not in ("auto", "path", "dns"):
            raise UsageError(f"invalid s3.bucket-lookup {lookup!r} (use auto, path or dns)")
        # Non-AWS servers rarely have wildcard DNS for buckets: path-style unless told otherwise.
        style = {"path": "path", "dns": "virtual"}.get(lookup, "virtual" if self.loc.aws else "path")
        verify: str | bool | None = options.get("s3.ca-cert") or None  # None: AWS_CA_BUNDLE or the system store
        config = Config(
            region_name=region,
            # The body's SHA-256 in the signature would be a second pass over every pack (botocore
            # signs payloads over plain HTTP): the signed Content-MD5 already makes the server
            # refuse a changed body, and every pack is named by its own SHA-256 and authenticated.
            s3={"addressing_style": style, "payload_signing_enabled": False},
            retries={"total_max_attempts": 1},
            max_pool_connections=max(10, 2 * self.connections),
            connect_timeout=float(options.get("s3.connect-timeout", 10)),
            read_timeout=float(options.get("s3.read-timeout", 60)),
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
        )
        try:
            session = botocore.session.Session(profile=options.get("s3.profile") or None)
            session.register_component("data_loader", _shared_loader(session))
            self.client: Any = session.create_client("s3", endpoint_url=self.loc.endpoint, config=config,
                                                     verify=verify)
        except Exception as e:  # a missing profile, an unreadable config file, a bad endpoint
            raise self._translate(e, "open") from None
        self._created = threading.Event()

    @property
    def properties(self) -> BackendProperties:
        return BackendProperties(connections=self.connections, atomic_replace=True, read_size=REMOTE_READ_SIZE)

    # ---------------------------------------------------------------- naming
    def key(self, h: Handle) -> str:
        return f"{self.prefix}/{h}" if self.prefix else str(h)

    def _dir_key(self, t: FileType) -> str:
        return f"{self.prefix}/{t.dirname}/" if self.prefix else f"{t.dirname}/"

    # ---------------------------------------------------------------- errors
    def _translate(self, e: Exception, what: str) -> BackendError:
        from botocore import exceptions as bx

        where = f"{self.location}: {what}"
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            detail = f"{code or status}: {err.get('Message') or 'no message'}"
            if code == "NoSuchBucket":
                return BucketNotFound(
                    f"{where}: bucket {self.bucket!r} does not exist",
                    hint="check the bucket name and endpoint, or create the repository with `coffer init`",
                )
            if code in ("NoSuchKey", "NotFound") or status == 404:
                return ObjectNotFound(f"{where}: not found")
            if code in _AUTH_CODES or status in (401, 403):
                return PermissionDenied(f"{where}: access denied ({detail})", hint=_CRED_HINT)
            if code == "InvalidRange" or status == 416:
                return ShortRead(f"{where}: range not satisfiable ({detail})", transient=False)
            if status == 507 or code in ("QuotaExceeded", "EntityTooLarge"):
                return NoSpace(f"{where}: storage full ({detail})")
            if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
                return TransientBackendError(f"{where}: {detail}")
            return BackendError(f"{where}: {detail}")
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return PermissionDenied(f"{where}: no S3 credentials found", hint=_CRED_HINT)
        if isinstance(e, bx.ProfileNotFound):
            return PermissionDenied(f"{where}: {e}", hint=_CRED_HINT)
        if isinstance(e, bx.SSLError):
            return BackendError(f"{where}: TLS error: {e}",
                                hint="use -o s3.ca-cert=FILE or AWS_CA_BUNDLE for a private CA")
        if isinstance(e, bx.EndpointConnectionError) and "Could not connect" in str(e):
            return TransientBackendError(f"{where}: cannot connect to {self.loc.endpoint or 'AWS'}: {e}")
        if isinstance(e, (bx.HTTPClientError, bx.IncompleteReadError, bx.ResponseStreamingError, OSError)):
            return TransientBackendError(f"{where}: connection failed: {e}")
        return BackendError(f"{where}: {type(e).__name__}: {e}")

    # ---------------------------------------------------------------- operations
    def create(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except Exception as e:
            err = self._translate(e, f"check bucket {self.bucket}")
            if not isinstance(err, (ObjectNotFound, BucketNotFound)):
                raise err from None
        kw: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if self.loc.aws and region and region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kw)
        except Exception as e:
            from botocore.exceptions import ClientError

            if isinstance(e, ClientError) and e.response.get("Error", {}).get("Code") in (
                "BucketAlreadyOwnedByYou", "BucketAlreadyExists"
            ):
                return
            raise self._translate(e, f"create bucket {self.bucket}") from None

    def save(self, h: Handle, data: bytes | bytearray | memoryview) -> None:
        body = bytes(data) if not isinstance(data, bytes) else data
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        kw: dict[str, Any] = {
            "Bucket": self.bucket, "Key": self.key(h), "Body": body, "ContentMD5": md5,
            "ContentLength": len(body), "ContentType": "application/octet-stream",
        }
        if self.storage_class and h.type is FileType.PACK:
            kw["StorageClass"] = self.storage_class  # metadata stays readable at once
        try:
            self.client.put_object(**kw)
        except Exception as e:
            raise self._translate(e, f"save {h}") from None

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            self.stat(h)
            return b""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(h)}
        if length is not None:
            kw["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            kw["Range"] = f"bytes={offset}-"
        try:
            resp = self.client.get_object(**kw)
            data: bytes = resp["Body"].read()
        except Exception as e:
            raise self._translate(e, f"load {h}") from None
        if length is not None and len(data) != length:
            # The server sent the whole (shorter) object range it has: retrying gives the same answer.
            raise ShortRead(f"{self.location}: load {h}: wanted {length} bytes at {offset}, got {len(data)}",
                            transient=False)
        return data

    def stat(self, h: Handle) -> FileInfo:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self.key(h))
        except Exception as e:
            raise self._translate(e, f"stat {h}") from None
        return FileInfo(h.name, int(resp["ContentLength"]))

    def remove(self, h: Handle) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(h))
        except Exception as e:
            raise self._translate(e, f"remove {h}") from None

    def list(self, t: FileType) -> Iterator[FileInfo]:
        if t is FileType.CONFIG:
            try:
                yield self.stat(Handle(t))
            except ObjectNotFound:
                pass
            return
        prefix = self._dir_key(t)
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": self.page_size}
            if token:
                kw["ContinuationToken"] = token
            try:
                page = self.client.list_objects_v2(**kw)
            except Exception as e:
                raise self._translate(e, f"list {t.dirname}") from None
            for obj in page.get("Contents", ()):
                key: str = obj["Key"]
                rel = key[len(prefix):]
                if not rel or rel.endswith("/"):
                    continue
                name = rel.rsplit("/", 1)[-1]
                if t is not FileType.PACK and "/" in rel:
                    continue
                yield FileInfo(name, int(obj["Size"]))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise TransientBackendError(
                    f"{self.location}: list {t.dirname}: truncated page without a continuation token"
                )

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def from_url(url: str, options: dict[str, str]) -> Backend:
    return S3Backend(url, options)
