"""scrypt parameters (bounded before any work) and key files (the wrapped master key)."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError, IntegrityError
from coffer.store.format import crypto, kdf, keyfile
from coffer.store.format.crypto import CryptoKey
from coffer.store.format.keyfile import KeyFile

FAST = kdf.ScryptParams(n=1024, r=8, p=1)
SALT = bytes(range(64))


def keyfile_json(**over: object) -> bytes:
    obj: dict[str, object] = {
        "created": "2022-08-01T10:11:12.123456789+02:00", "username": "root", "hostname": "vm",
        "kdf": "scrypt", "N": 1024, "r": 8, "p": 1,
        "salt": base64.b64encode(SALT).decode(), "data": base64.b64encode(b"\x01" * 80).decode(),
    }
    obj.update(over)
    return json.dumps({k: v for k, v in obj.items() if v is not None}, separators=(",", ":")).encode()


def assert_fast(fn: object, *args: object) -> None:
    t0 = time.monotonic()
    with pytest.raises(FormatError):
        fn(*args)  # type: ignore[operator]
    assert time.monotonic() - t0 < 0.5


# --- kdf ------------------------------------------------------------------------------------------


def test_rfc7914_vector() -> None:
    out = kdf.derive(b"password", b"NaCl", kdf.ScryptParams(1024, 8, 16), 64)
    assert out.hex() == (
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
    )


def test_derive_matches_hashlib() -> None:
    assert kdf.derive(b"pw", SALT, FAST) == hashlib.scrypt(b"pw", salt=SALT, n=1024, r=8, p=1, dklen=64)


def test_restic_sized_params_accepted() -> None:
    # restic 0.14 calibrated N=32768 r=8 p=5 on the fixture machine; hashlib's default maxmem
    # would refuse it. Only check (deriving costs ~0.5 s).
    kdf.ScryptParams(1 << 15, 8, 5).check()
    kdf.DEFAULT_PARAMS.check()


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        (1 << 40, 8, 1),  # T33: a terabyte of memory
        (1 << 20, 1 << 20, 1),  # r*N far too big
        (1 << 16, 8, 1 << 20),  # too much work
        (1 << 30, 8, 1),
        (0, 8, 1), (1, 8, 1), (3, 8, 1), (1000, 8, 1), (-1024, 8, 1),  # N must be a power of two > 1
        (1024, 0, 1), (1024, 8, 0), (1024, -8, 1),
        (1 << 16, 1, 1),  # RFC 7914: N < 2^(16 r); OpenSSL refuses, so must we (with a FormatError)
        (1 << 17, 1, 1),
    ],
)
def test_bad_params_refused_before_deriving(n: int, r: int, p: int) -> None:
    params = kdf.ScryptParams(n, r, p)
    assert_fast(params.check)
    assert_fast(kdf.derive, b"pw", SALT, params)


@pytest.mark.parametrize("bad", [1024.0, "1024", None, True])
def test_non_integer_params_refused(bad: object) -> None:
    with pytest.raises(FormatError):
        kdf.ScryptParams(bad, 8, 1).check()  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.integers(-4, 70).map(lambda e: (1 << e) if e >= 0 else e), st.integers(-2, 40), st.integers(-2, 1 << 40))
def test_check_never_raises_anything_else(n: int, r: int, p: int) -> None:
    params = kdf.ScryptParams(n, r, p)
    try:
        params.check()
    except FormatError:
        return
    assert params.memory <= kdf.MAX_MEMORY and n * r * p <= kdf.MAX_WORK


# --- key files ------------------------------------------------------------------------------------

passwords = st.text(max_size=30)
names = st.text(max_size=20)


@settings(max_examples=20, deadline=None)
@given(passwords, names, names)
def test_keyfile_build_open_round_trip(password: str, user: str, host: str) -> None:
    master = CryptoKey.random()
    kf = keyfile.new_keyfile(password, master, username=user, hostname=host, params=FAST)
    raw = kf.to_bytes()
    again = KeyFile.from_bytes(raw)
    assert again == kf
    assert again.to_bytes() == raw
    assert again.open(password) == master


@settings(max_examples=10, deadline=None)
@given(passwords, passwords)
def test_keyfile_wrong_password(pw: str, other: str) -> None:
    if pw == other:
        return
    kf = keyfile.new_keyfile(pw, CryptoKey.random(), username="u", hostname="h", params=FAST)
    with pytest.raises(IntegrityError):
        KeyFile.from_bytes(kf.to_bytes()).open(other)


def test_keyfile_json_layout_is_restics() -> None:
    kf = keyfile.new_keyfile("pw", CryptoKey.random(), username="ro<o>t", hostname="h&h", params=FAST)
    raw = kf.to_bytes()
    obj = json.loads(raw)
    assert list(obj) == ["created", "username", "hostname", "kdf", "N", "r", "p", "salt", "data"]
    assert obj["kdf"] == "scrypt" and (obj["N"], obj["r"], obj["p"]) == (1024, 8, 1)
    assert len(base64.b64decode(obj["salt"])) == 64
    master_json_len = len('{"mac":{"k":"","r":""},"encrypt":""}') + 24 + 24 + 44  # compact, b64 of 16/16/32
    assert len(base64.b64decode(obj["data"])) == crypto.OVERHEAD + master_json_len
    assert b"\\u003c" in raw and b"\\u0026" in raw and b" " not in raw
    # the wrapped plaintext is restic's master-key JSON
    plain = crypto.open_(kf.user_key("pw"), kf.data)
    assert list(json.loads(plain)) == ["mac", "encrypt"]


def test_keyfile_user_key_is_scrypt_split() -> None:
    kf = keyfile.new_keyfile("pw", CryptoKey.random(), username="u", hostname="h", params=FAST)
    raw = hashlib.scrypt(b"pw", salt=kf.salt, n=1024, r=8, p=1, dklen=64)
    assert kf.user_key("pw") == CryptoKey(raw[:32], raw[32:48], raw[48:])


def test_keyfile_password_is_utf8() -> None:
    kf = keyfile.new_keyfile("pässwörd", CryptoKey.random(), username="u", hostname="h", params=FAST)
    raw = hashlib.scrypt("pässwörd".encode(), salt=kf.salt, n=1024, r=8, p=1, dklen=64)
    assert kf.user_key("pässwörd").encrypt == raw[:32]


def test_keyfile_garbage_master_key_json() -> None:
    user = CryptoKey.from_bytes(kdf.derive(b"pw", SALT, FAST))
    kf = KeyFile("", "", "", FAST, SALT, crypto.seal(user, b"not json"))
    with pytest.raises(IntegrityError):
        kf.open("pw")
    zero_k = CryptoKey(b"\x01" * 32, bytes(16), b"\x01" * 16)  # restic refuses an all-zero part
    kf = KeyFile("", "", "", FAST, SALT, crypto.seal(user, json.dumps(zero_k.to_json_obj()).encode()))
    with pytest.raises(FormatError):
        kf.open("pw")


@pytest.mark.parametrize(
    ("n", "r", "p"), [(1 << 40, 8, 1), (1 << 62, 8, 1), (1 << 20, 1 << 30, 1), (32768, 8, 1 << 40), (3, 8, 1)]
)
def test_keyfile_hostile_kdf_refused_quickly(n: int, r: int, p: int) -> None:
    """T33: bounded before any derivation; from_bytes must not even start scrypt."""
    assert_fast(KeyFile.from_bytes, keyfile_json(N=n, r=r, p=p))


@pytest.mark.parametrize(
    "raw",
    [
        keyfile_json(kdf="argon2"),
        keyfile_json(kdf=None),
        keyfile_json(N=None),
        keyfile_json(salt=None),
        keyfile_json(data=None),
        keyfile_json(salt=base64.b64encode(b"\x01" * 32).decode()),  # restic insists on 64 bytes
        keyfile_json(salt="not base64!"),
        keyfile_json(data="%%%"),
        keyfile_json(N="abc"),
        keyfile_json(N=[1024]),
        keyfile_json(N={"a": 1}),
        b"[]",
        b'"key"',
        b"null",
        b"",
        b"{",
        b"\xff\xfe",
        keyfile_json(N=1024).replace(b'"N":1024', b'"N":Infinity'),
        keyfile_json(N=1024).replace(b'"N":1024', b'"N":NaN'),
        keyfile_json(N=1024).replace(b'"N":1024', b'"N":1e999'),
        keyfile_json(N=1024).replace(b'"N":1024', b'"N":' + b"1" * 1_000_000),
        keyfile_json(N=1024).replace(b'"N":1024', b'"N":' + b"1" * 400 + b".5"),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b" " * (keyfile.MAX_KEYFILE_SIZE + 1),
        keyfile_json(username="x" * keyfile.MAX_KEYFILE_SIZE),
    ],
)
def test_keyfile_malformed(raw: bytes) -> None:
    t0 = time.monotonic()
    with pytest.raises(FormatError):
        KeyFile.from_bytes(raw)
    assert time.monotonic() - t0 < 0.5


def test_keyfile_minimal_fields_parse() -> None:
    kf = KeyFile.from_bytes(keyfile_json(created=None, username=None, hostname=None))
    assert (kf.created, kf.username, kf.hostname) == ("", "", "")
    assert kf.params == FAST and kf.salt == SALT


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)
field_values = st.one_of(
    json_values, st.integers(-2, 1 << 64), st.sampled_from(["scrypt", base64.b64encode(SALT).decode(), "AQID"])
)


@settings(max_examples=200)
@given(st.fixed_dictionaries({}, optional={k: field_values for k in ("kdf", "N", "r", "p", "salt", "data", "created")}))
def test_keyfile_fuzz_only_format_error(obj: dict[str, object]) -> None:
    raw = json.dumps(obj).encode()
    try:
        kf = KeyFile.from_bytes(raw)
    except FormatError:
        return
    kf.params.check()
    assert len(kf.salt) == 64
