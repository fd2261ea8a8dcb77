"""restic's URL forms and the drivers' options, checked without a server."""

from __future__ import annotations

import pytest

from coffer.errors import UsageError
from coffer.store.backend.registry import open_backend
from coffer.store.backend.rest import RestBackend
from coffer.store.backend.retry import RetryBackend
from coffer.store.backend.s3 import S3Backend, S3Location
from coffer.store.backend.sftp import SFTPBackend, SFTPLocation


@pytest.mark.parametrize(("url", "endpoint", "bucket", "prefix", "aws"), [
    ("s3:s3.amazonaws.com/bucket/some/prefix", None, "bucket", "some/prefix", True),
    ("s3:https://s3.eu-west-1.amazonaws.com/b", "https://s3.eu-west-1.amazonaws.com", "b", "", True),
    ("s3:http://127.0.0.1:9000/bucket", "http://127.0.0.1:9000", "bucket", "", False),
    ("s3:https://minio.example:9443/bkt/p/q/", "https://minio.example:9443", "bkt", "p/q", False),
    ("s3:ceph.internal/bkt", "https://ceph.internal", "bkt", "", False),
])
def test_s3_url_forms(url: str, endpoint: str | None, bucket: str, prefix: str, aws: bool) -> None:
    loc = S3Location.parse(url)
    assert (loc.endpoint, loc.bucket, loc.prefix, loc.aws) == (endpoint, bucket, prefix, aws)


@pytest.mark.parametrize("url", ["s3:http://host:9000", "s3:ftp://host/b", "s3:"])
def test_bad_s3_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        S3Location.parse(url)


def test_s3_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    b = S3Backend("s3:http://127.0.0.1:9/bkt/pre", {"s3.connections": "9", "s3.region": "eu-central-1"})
    assert b.properties.connections == 9
    assert b.client.meta.region_name == "eu-central-1"
    assert b.client.meta.config.s3["addressing_style"] == "path"  # non-AWS endpoint: path-style
    aws = S3Backend("s3:s3.amazonaws.com/bkt", {})
    assert aws.client.meta.config.s3["addressing_style"] == "virtual"
    forced = S3Backend("s3:http://127.0.0.1:9/bkt", {"s3.bucket-lookup": "dns"})
    assert forced.client.meta.config.s3["addressing_style"] == "virtual"
    with pytest.raises(UsageError):
        S3Backend("s3:http://127.0.0.1:9/bkt", {"s3.bucket-lookup": "sideways"})
    with pytest.raises(UsageError):
        S3Backend("s3:http://127.0.0.1:9/bkt", {"s3.connections": "many"})


@pytest.mark.parametrize(("url", "user", "host", "port", "path"), [
    ("sftp:alice@backup.example:/srv/restic", "alice", "backup.example", 22, "/srv/restic"),
    ("sftp:backup.example:repo", None, "backup.example", 22, "repo"),
    ("sftp://alice@backup.example:2222//srv/restic", "alice", "backup.example", 2222, "/srv/restic"),
    ("sftp://alice@backup.example/relative/repo", "alice", "backup.example", 22, "relative/repo"),
])
def test_sftp_url_forms(url: str, user: str | None, host: str, port: int, path: str) -> None:
    loc = SFTPLocation.parse(url)
    assert (loc.user, loc.host, loc.port, loc.path) == (user, host, port, path)


def test_sftp_options() -> None:
    b = SFTPBackend("sftp:u@h:/r", {"sftp.connections": "4", "sftp.insecure-accept-host-key": "true"})
    assert b.properties.connections == 4 and b.insecure


def test_rest_url_hides_the_password() -> None:
    b = RestBackend("rest:https://user:pa%40ss@rest.example:8000/repo/", {"rest.connections": "3"})
    assert b.auth == ("user", "pa@ss")
    assert "pa" not in b.location and b.location == "rest:https://rest.example:8000/repo/"
    assert b.properties.connections == 3


def test_registry_wraps_remote_drivers_in_retry_only() -> None:
    assert isinstance(open_backend("rest:http://127.0.0.1:9/r"), RetryBackend)
    assert not isinstance(open_backend("/tmp/some/local/repo"), RetryBackend)
