"""The encrypt-then-MAC container: IV || AES-256-CTR(plaintext) || Poly1305-AES(ciphertext).

Known answers come from restic's own tests (``internal/crypto/crypto_int_test.go``: the
Poly1305-AES vectors of Bernstein's paper and one full ciphertext) and from an independent
composition written here: AES-ECB counter blocks with a 128-bit wrap and a pure-Python Poly1305.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coffer.errors import FormatError, IntegrityError
from coffer.store.format import crypto
from coffer.store.format.crypto import CryptoKey

CLAMP = 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF

keys = st.binary(min_size=64, max_size=64).map(CryptoKey.from_bytes).filter(CryptoKey.valid)
ivs = st.one_of(
    st.binary(min_size=16, max_size=16).filter(any),
    st.just(b"\xff" * 16),  # the counter wraps to zero after the first block
    st.binary(min_size=14, max_size=14).map(lambda b: b"\x01" + b + b"\xff"),
)
plaintexts = st.binary(max_size=1024)


# --- independent reference composition ----------------------------------------------------------


def aes_ecb(key: bytes, block: bytes) -> bytes:
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)


def ctr_keystream(key: bytes, iv: bytes, n: int) -> bytes:
    """Go cipher.NewCTR: the IV is a 128-bit big-endian counter that wraps around."""
    ctr = int.from_bytes(iv, "big")
    blocks = [
        aes_ecb(key, ((ctr + i) % (1 << 128)).to_bytes(16, "big")) for i in range((n + 15) // 16)
    ]
    return b"".join(blocks)[:n]


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def poly1305_py(r: bytes, s: bytes, msg: bytes) -> bytes:
    """RFC 8439 Poly1305 in plain integers; ``r`` is clamped here, as the libraries do."""
    rr = int.from_bytes(r, "little") & CLAMP
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i : i + 16] + b"\x01", "little")) * rr % p
    return ((acc + int.from_bytes(s, "little")) % (1 << 128)).to_bytes(16, "little")


def reference_seal(key: CryptoKey, iv: bytes, plaintext: bytes) -> bytes:
    ct = xor(plaintext, ctr_keystream(key.encrypt, iv, len(plaintext)))
    return iv + ct + poly1305_py(key.mac_r, aes_ecb(key.mac_k, iv), ct)


# --- known answers --------------------------------------------------------------------------------

# restic internal/crypto/crypto_int_test.go, poly1305Tests (Poly1305-AES paper): msg, r, k, nonce, mac
POLY1305_AES_VECTORS = [
    ("f3f6", "851fc40c3467ac0be05cc20404f3f700", "ec074c835580741701425b623235add6",
     "fb447350c4e868c52ac3275cf9d4327e", "f4c633c3044fc145f84f335cb81953de"),
    ("", "a0f3080000f46400d0c7e9076c834403", "75deaa25c09f208e1dc4ce6b5cad3fbf",
     "61ee09218d29b0aaed7e154a2c5509cc", "dd3fab2251f11ac759f0887129cc2ee7"),
    ("663cea190ffb83d89593f3f476b6bc24d7e679107ea26adb8caf6652d0656136", "48443d0bb0d21109c89a100b5ce2c208",
     "6acb5f61a7176dd320c5c1eb2edcdc74", "ae212a55399729595dea458bc621ff0e", "0ee1c16bb73f0f4fd19881753c01cdbe"),
    ("ab0812724a7f1e342742cbed374d94d136c6b8795d45b3819830f2c04491faf0990c62e48b8018b2c3e4a0fa3134cb67"
     "fa83e158c994d961c4cb21095c1bf9", "12976a08c4426d0ce8a82407c4f48207", "e1a5668a4d5b66a5f68cc5424ed5982d",
     "9ae831e743978d3a23527c7128149e3a", "5154ad0d2cb26e01274fc51148491f1b"),
]

# restic internal/crypto/crypto_int_test.go, testValues
RESTIC_KEY = CryptoKey(
    bytes.fromhex("303e8687b1d7db18421bdc6bb8588ccadac4d59ee87b8ff70c44e635790cafef"),
    bytes.fromhex("ef4d8824cb80b2bcc5fbff8a9b12a42c"),
    bytes.fromhex("cc8d4b948ee0ebfe1d415de921d10353"),
)
RESTIC_CIPHERTEXT = bytes.fromhex(
    "69fb41c62d12def4593bd71757138606338f621aeaeb39da0fe4f99233f8037a54ea63338a813bcf3f75d8c3cc75dddf8750"
)
RESTIC_PLAINTEXT = b"Dies ist ein Test!"


def test_restic_ciphertext_vector_opens() -> None:
    assert crypto.open_(RESTIC_KEY, RESTIC_CIPHERTEXT) == RESTIC_PLAINTEXT
    assert crypto.verify(RESTIC_KEY, RESTIC_CIPHERTEXT)


def test_restic_ciphertext_vector_reproduced_by_seal() -> None:
    iv = RESTIC_CIPHERTEXT[: crypto.IV_SIZE]
    assert crypto.seal(RESTIC_KEY, RESTIC_PLAINTEXT, iv=iv) == RESTIC_CIPHERTEXT
    assert reference_seal(RESTIC_KEY, iv, RESTIC_PLAINTEXT) == RESTIC_CIPHERTEXT


def test_restic_vector_r_is_stored_unclamped() -> None:
    # The vector's r has bits the clamp clears: the library must clamp internally, and a key
    # with the clamped r gives the same tag (so clamping before the library does no harm).
    r = int.from_bytes(RESTIC_KEY.mac_r, "little")
    assert r & CLAMP != r
    clamped = CryptoKey(RESTIC_KEY.encrypt, RESTIC_KEY.mac_k, (r & CLAMP).to_bytes(16, "little"))
    assert crypto.open_(clamped, RESTIC_CIPHERTEXT) == RESTIC_PLAINTEXT


@pytest.mark.parametrize(("msg", "r", "k", "nonce", "mac"), POLY1305_AES_VECTORS)
def test_poly1305_aes_paper_vectors(msg: str, r: str, k: str, nonce: str, mac: str) -> None:
    m, rb, kb, iv, tag = (bytes.fromhex(x) for x in (msg, r, k, nonce, mac))
    # The library composition restic uses: one-time key r || AES-128-ECB(k, nonce).
    assert Poly1305.generate_tag(rb + aes_ecb(kb, iv), m) == tag
    assert poly1305_py(rb, aes_ecb(kb, iv), m) == tag
    # Through coffer: choose the plaintext whose CTR encryption is exactly ``m``.
    key = CryptoKey(bytes(range(1, 33)), kb, rb)
    plaintext = xor(m, ctr_keystream(key.encrypt, iv, len(m)))
    sealed = crypto.seal(key, plaintext, iv=iv)
    assert sealed == iv + m + tag
    assert crypto.open_(key, sealed) == plaintext


def test_fixed_iv_matches_library_composition() -> None:
    key = CryptoKey(bytes(range(32)), bytes(range(100, 116)), bytes(range(200, 216)))
    iv = bytes.fromhex("000102030405060708090a0b0c0d0eff")
    plaintext = b"restic-compatible container " * 5
    ct = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).encryptor().update(plaintext)
    tag = Poly1305.generate_tag(key.mac_r + aes_ecb(key.mac_k, iv), ct)
    assert crypto.seal(key, plaintext, iv=iv) == iv + ct + tag


@settings(max_examples=60)
@given(keys, ivs, st.binary(max_size=200))
def test_seal_matches_independent_reference(key: CryptoKey, iv: bytes, plaintext: bytes) -> None:
    assert crypto.seal(key, plaintext, iv=iv) == reference_seal(key, iv, plaintext)


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=100)
@given(keys, plaintexts)
def test_seal_open_round_trip(key: CryptoKey, plaintext: bytes) -> None:
    sealed = crypto.seal(key, plaintext)
    assert len(sealed) == len(plaintext) + crypto.OVERHEAD
    assert crypto.open_(key, sealed) == plaintext
    assert crypto.open_(key, bytearray(sealed)) == plaintext
    assert crypto.open_(key, memoryview(sealed)) == plaintext
    assert crypto.verify(key, sealed)


@settings(max_examples=30)
@given(keys, plaintexts)
def test_seal_accepts_buffer_types(key: CryptoKey, plaintext: bytes) -> None:
    iv = b"\x07" * 16
    expected = crypto.seal(key, plaintext, iv=iv)
    assert crypto.seal(key, bytearray(plaintext), iv=iv) == expected
    assert crypto.seal(key, memoryview(plaintext), iv=iv) == expected


def test_fresh_iv_each_time() -> None:
    key = CryptoKey.random()
    assert crypto.seal(key, b"same")[:16] != crypto.seal(key, b"same")[:16]


@settings(max_examples=100)
@given(keys, plaintexts, st.data())
def test_any_single_byte_tamper_is_detected(key: CryptoKey, plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(crypto.seal(key, plaintext))
    pos = data.draw(st.integers(0, len(sealed) - 1), label="pos")
    sealed[pos] ^= data.draw(st.integers(1, 255), label="mask")
    with pytest.raises(IntegrityError):
        crypto.open_(key, sealed)
    assert not crypto.verify(key, sealed)


@settings(max_examples=50)
@given(keys, plaintexts, st.data())
def test_truncation_or_extension_is_detected(key: CryptoKey, plaintext: bytes, data: st.DataObject) -> None:
    sealed = crypto.seal(key, plaintext)
    cut = data.draw(st.integers(0, len(sealed) - 1), label="cut")
    with pytest.raises(IntegrityError):
        crypto.open_(key, sealed[:cut])
    with pytest.raises(IntegrityError):
        crypto.open_(key, sealed + data.draw(st.binary(min_size=1, max_size=16), label="extra"))


@settings(max_examples=100)
@given(keys, keys, plaintexts)
def test_wrong_key_is_detected(k1: CryptoKey, k2: CryptoKey, plaintext: bytes) -> None:
    # Only the MAC half authenticates; r values equal after clamping give the same MAC.
    r1, r2 = (int.from_bytes(k.mac_r, "little") & CLAMP for k in (k1, k2))
    assume(k1.mac_k != k2.mac_k or r1 != r2)
    sealed = crypto.seal(k1, plaintext)
    with pytest.raises(IntegrityError):
        crypto.open_(k2, sealed)
    assert not crypto.verify(k2, sealed)


@given(keys)
def test_zero_iv_refused_on_seal(key: CryptoKey) -> None:
    with pytest.raises(FormatError):
        crypto.seal(key, b"x", iv=bytes(16))


@given(keys, st.binary(max_size=64))
def test_zero_iv_refused_on_open_even_with_a_valid_tag(key: CryptoKey, plaintext: bytes) -> None:
    forged = reference_seal(key, bytes(16), plaintext)  # a tag that verifies for IV 0
    with pytest.raises(IntegrityError):
        crypto.open_(key, forged)
    assert not crypto.verify(key, forged)


@pytest.mark.parametrize("iv", [b"", b"\x01" * 15, b"\x01" * 17])
def test_iv_of_wrong_length_refused(iv: bytes) -> None:
    with pytest.raises(FormatError):
        crypto.seal(CryptoKey.random(), b"x", iv=iv)


@pytest.mark.parametrize("n", [0, 1, 16, 31])
def test_too_short_is_integrity_error(n: int) -> None:
    key = CryptoKey.random()
    with pytest.raises(IntegrityError):
        crypto.open_(key, b"\x01" * n)
    assert not crypto.verify(key, b"\x01" * n)


def test_empty_plaintext() -> None:
    key = CryptoKey.random()
    sealed = crypto.seal(key, b"")
    assert len(sealed) == 32
    assert crypto.open_(key, sealed) == b""


# --- CryptoKey ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 32, 63, 65])
def test_key_from_bytes_needs_64(n: int) -> None:
    with pytest.raises(FormatError):
        CryptoKey.from_bytes(bytes(range(n)))


def test_key_part_lengths_checked() -> None:
    with pytest.raises(FormatError):
        CryptoKey(b"\x01" * 31, b"\x01" * 16, b"\x01" * 16)


@given(keys)
def test_key_json_round_trip(key: CryptoKey) -> None:
    obj = json.loads(json.dumps(key.to_json_obj()))
    assert list(obj) == ["mac", "encrypt"]
    assert list(obj["mac"]) == ["k", "r"]
    assert CryptoKey.from_json_obj(obj) == key


@pytest.mark.parametrize("part", ["encrypt", "k", "r"])
def test_key_with_zero_part_refused(part: str) -> None:
    key = CryptoKey(b"\x01" * 32, b"\x02" * 16, b"\x03" * 16)
    obj = key.to_json_obj()
    zero = "A" * 43 + "=" if part == "encrypt" else "A" * 22 + "=="
    if part == "encrypt":
        obj["encrypt"] = zero
    else:
        obj["mac"][part] = zero  # type: ignore[index]
    with pytest.raises(FormatError):
        CryptoKey.from_json_obj(obj)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.just("AQID"),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["mac", "k", "r", "encrypt", "x"]), c),
    max_leaves=12,
)


@settings(max_examples=100)
@given(json_values)
def test_key_from_hostile_json_only_format_error(obj: object) -> None:
    try:
        key = CryptoKey.from_json_obj(obj)
    except FormatError:
        return
    assert key.valid()
