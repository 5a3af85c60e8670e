"""Public keys, DNS labels, keypairs and seed files against the pkarr/pkdns vectors."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkdns.errors import DecodeError, UsageError, VerifyError
from pkdns.pkarr import zbase32
from pkdns.pkarr.keys import (
    Keypair,
    PublicKey,
    is_curve_point,
    parse_label,
    read_seed_file,
    write_seed_file,
)
from tests.conftest import load_vector

KEYS = load_vector("keys_z32")
YG4 = KEYS["parse_accepts_all_to_yg4gxe7z"]
INVALID = KEYS["parse_rejects"][0]["input"]
DERIVED = KEYS["derived_by_research_not_upstream"]
ZERO_Z32 = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"


@pytest.mark.parametrize("case", KEYS["pubkey_bytes_to_z32"], ids=lambda c: c["z32"])
def test_bytes_to_z32(case: dict[str, Any]) -> None:
    raw = bytes(case["public_key_bytes"])
    assert raw.hex() == case["public_key_hex"]
    key = PublicKey.from_bytes(raw)
    assert key.z32 == case["z32"] == str(key)
    assert key.uri == case["uri"]
    assert PublicKey.parse(case["uri"]) == key
    assert key.target == hashlib.sha1(raw).digest()


@pytest.mark.parametrize("case", KEYS["seed_to_public_key"], ids=lambda c: c["public_key_z32"])
def test_seed_to_public_key(case: dict[str, Any]) -> None:
    kp = Keypair.from_seed(bytes.fromhex(case["seed_hex"]))
    assert kp.public_key.raw.hex() == case["public_key_hex"]
    assert kp.public_key.z32 == case["public_key_z32"]
    assert kp.seed.hex() == case["seed_hex"]


@pytest.mark.parametrize("text", YG4["inputs"])
def test_parse_accepts_every_form(text: str) -> None:
    assert PublicKey.parse(text).raw.hex() == YG4["expected_public_key_hex"]


@pytest.mark.parametrize("text", YG4["inputs"])
def test_parse_is_case_insensitive(text: str) -> None:
    assert PublicKey.parse(text.upper()).raw.hex() == YG4["expected_public_key_hex"]


def test_rightmost_key_wins() -> None:
    text = YG4["inputs"][-1]
    assert text.startswith("https://o4dksfbq")
    assert PublicKey.parse(text).z32.startswith("yg4gxe7z")


def test_parse_rejects_off_curve_key() -> None:
    with pytest.raises(VerifyError, match="not a valid Ed25519 public key"):
        PublicKey.parse(INVALID)
    with pytest.raises(VerifyError, match="not a curve point"):
        PublicKey.from_bytes(zbase32.decode(INVALID))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has 0 characters"),
        ("abc", "has 3 characters"),
        (ZERO_Z32[:-1], "has 51 characters"),
        ("pk:" + ZERO_Z32[:-2], "has 50 characters"),
        ("pk:" + ZERO_Z32[:49], "not z-base-32"),  # 52 chars: nothing is stripped
        (ZERO_Z32[:-1] + "l", "not z-base-32"),
        ("https://example.com/" + ZERO_Z32, "not z-base-32"),
    ],
)
def test_parse_rejects_with_precise_message(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        PublicKey.parse(text)


def test_parse_error_is_not_usage_error() -> None:
    with pytest.raises(DecodeError) as info:
        PublicKey.parse("nope")
    assert not isinstance(info.value, UsageError)


def test_from_bytes_wrong_length() -> None:
    with pytest.raises(VerifyError, match="32 bytes, got 31"):
        PublicKey.from_bytes(bytes(31))


def test_parse_accepts_non_canonical_last_char_like_pkarr() -> None:
    case = DERIVED["non_canonical_last_char"]
    assert PublicKey.parse(case["non_canonical"]).z32 == case["canonical"]


def test_label_canonical_any_case() -> None:
    key = parse_label(ZERO_Z32.upper())
    assert key is not None and key.z32 == ZERO_Z32
    assert parse_label(DERIVED["uppercase_is_rejected"]["input"]) == key


def test_label_non_canonical_is_verify_error() -> None:
    with pytest.raises(VerifyError, match="canonical"):
        parse_label(DERIVED["non_canonical_last_char"]["non_canonical"])


def test_label_off_curve_is_verify_error() -> None:
    # The upstream vector also has pad bits set in its last character; both are errors.
    with pytest.raises(VerifyError, match="canonical"):
        parse_label(INVALID)
    canonical = zbase32.encode(zbase32.decode(INVALID))
    assert canonical != INVALID
    for _ in range(2):  # the second call takes the cached path and must raise again
        with pytest.raises(VerifyError, match="curve"):
            parse_label(canonical.upper())


NOT_KEYS = ["www", "com", "", "_foo", "l" * 52, "-" + ZERO_Z32[1:], ZERO_Z32 + "y", ZERO_Z32[1:]]


@pytest.mark.parametrize("label", NOT_KEYS)
def test_label_not_a_key_is_none(label: str) -> None:
    assert parse_label(label) is None


def test_sign_verify() -> None:
    kp = Keypair.random()
    sig = kp.sign(b"hello")
    assert len(sig) == 64
    assert kp.public_key.verify(sig, b"hello")
    assert not kp.public_key.verify(sig, b"hellO")
    assert not kp.public_key.verify(sig[:63], b"hello")
    assert not Keypair.random().public_key.verify(sig, b"hello")


def test_small_order_key_parses_but_never_verifies() -> None:
    # The identity point (y = 1) is on the curve (pkarr accepts it) but has order 1;
    # libsodium refuses to verify anything for it.
    identity = PublicKey.from_bytes((1).to_bytes(32, "little"))
    assert not identity.verify(bytes(64), b"")


def test_from_seed_wrong_length() -> None:
    with pytest.raises(UsageError, match="32 bytes, got 3"):
        Keypair.from_seed(b"abc")


@settings(max_examples=300)
@given(st.binary(min_size=32, max_size=32))
def test_curve_check_agrees_with_libsodium(raw: bytes) -> None:
    # libsodium's is_valid_point is stricter (main subgroup, no small order), so every point
    # it accepts must be a curve point for us; keys made by signing are always accepted.
    if nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        assert is_curve_point(raw)
    if not is_curve_point(raw):
        with pytest.raises(VerifyError):
            PublicKey.from_bytes(raw)


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_generated_keys_round_trip(seed: bytes) -> None:
    key = Keypair.from_seed(seed).public_key
    assert is_curve_point(key.raw)
    assert PublicKey.parse(key.z32) == key
    assert parse_label(key.z32.upper()) == key


# --- seed files -----------------------------------------------------------------------


def test_write_then_read(tmp_path: Path) -> None:
    kp = Keypair.random()
    path = tmp_path / "seed"
    write_seed_file(path, kp)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == kp.seed.hex() + "\n"
    assert read_seed_file(path).public_key == kp.public_key


def test_write_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    path.write_text("keep me")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        write_seed_file(path, Keypair.random())
    assert path.read_text() == "keep me"


def test_write_overwrite_fixes_mode(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    path.write_text("old")
    os.chmod(path, 0o644)
    kp = Keypair.random()
    write_seed_file(path, kp, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_seed_file(path).seed == kp.seed


def test_write_bad_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot write seed file"):
        write_seed_file(tmp_path / "missing" / "seed", Keypair.random())


@pytest.mark.parametrize("case", KEYS["seed_to_public_key"], ids=lambda c: c["public_key_z32"])
def test_read_hex_and_legacy_z32(tmp_path: Path, case: dict[str, Any]) -> None:
    path = tmp_path / "seed"
    path.write_text("  " + case["seed_hex"].upper() + "\n\n")
    assert read_seed_file(path).public_key.z32 == case["public_key_z32"]
    if "seed_zbase32" in case:
        path.write_text(case["seed_zbase32"] + "\n")
        assert read_seed_file(path).public_key.z32 == case["public_key_z32"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "got 0 characters"),
        (b"abcd\n", "got 4 characters"),
        (b"00" * 33, "got 66 characters"),
        (b"zz" * 32, "not valid hex"),
        (b"\xff\xfe" * 32, "not text"),
    ],
)
def test_read_bad_seed(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "seed"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as info:
        read_seed_file(path)
    assert str(path) in str(info.value)


def test_read_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No such file"):
        read_seed_file(tmp_path / "nope")
    with pytest.raises(UsageError, match="Is a directory"):
        read_seed_file(tmp_path)
