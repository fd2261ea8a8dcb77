"""S3 upload details seen at the server: Content-MD5 on every PUT, the storage class on packs only."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from coffer.store.backend.base import FileType, Handle
from coffer.store.backend.s3 import S3Backend
from fixtures.servers import Servers, unique

pytestmark = pytest.mark.integration


def test_content_md5_and_storage_class(servers: Servers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s3 = servers.moto.get()
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    bucket = unique("opts")
    b = S3Backend(s3.url(bucket, "r"), {"s3.storage-class": "STANDARD_IA"})
    sent: list[dict[str, Any]] = []
    b.client.meta.events.register("before-send.s3.PutObject", lambda request, **kw: sent.append(dict(request.headers)))
    b.create()
    pack = b"pack bytes" * 1000
    hp = Handle(FileType.PACK, hashlib.sha256(pack).hexdigest())
    hi = Handle(FileType.INDEX, hashlib.sha256(b"index").hexdigest())
    b.save(hp, pack)
    b.save(hi, b"index")
    assert [h["Content-MD5"] for h in sent] == [base64.b64encode(hashlib.md5(d).digest()) for d in (pack, b"index")]
    c = s3.client()
    assert c.head_object(Bucket=bucket, Key=f"r/{hp}")["StorageClass"] == "STANDARD_IA"
    assert c.head_object(Bucket=bucket, Key=f"r/{hi}").get("StorageClass", "STANDARD") == "STANDARD"
    b.close()
