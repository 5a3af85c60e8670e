"""z-base-32 codec: upstream vectors, invalid input, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pkdns.errors import DecodeError
from pkdns.pkarr import zbase32
from tests.conftest import load_vector

CODEC = load_vector("zbase32_codec")


def test_alphabet_matches_vector() -> None:
    assert zbase32.ALPHABET == CODEC["alphabet"]


@pytest.mark.parametrize("case", CODEC["vectors"], ids=lambda c: c["zbase32"])
def test_vectors(case: dict[str, str]) -> None:
    raw = bytes.fromhex(case["bytes_hex"])
    assert zbase32.encode(raw) == case["zbase32"]
    assert zbase32.decode(case["zbase32"]) == raw


@pytest.mark.parametrize("case", CODEC["invalid_inputs"], ids=lambda c: c["input"])
def test_invalid_inputs(case: dict[str, str]) -> None:
    with pytest.raises(DecodeError, match="invalid character"):
        zbase32.decode(case["input"])


def test_key_length() -> None:
    assert len(zbase32.encode(bytes(32))) == 52


def test_pad_bits_ignored_on_decode() -> None:
    # 'o' and 't' differ only in the 4 pad bits of a 52-char key's last character.
    canonical = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"
    assert zbase32.decode(canonical[:-1] + "t") == zbase32.decode(canonical)


@pytest.mark.parametrize("n", range(0, 9))
def test_partial_groups(n: int) -> None:
    text = "y" * n
    assert zbase32.decode(text) == bytes(n * 5 // 8)


@given(st.binary(max_size=80))
def test_round_trip(data: bytes) -> None:
    text = zbase32.encode(data)
    assert zbase32.is_zbase32(text)
    assert len(text) == (len(data) * 8 + 4) // 5
    assert zbase32.decode(text) == data


@given(st.lists(st.text(alphabet=zbase32.ALPHABET, min_size=8, max_size=8), max_size=6))
def test_whole_groups_decode_then_encode_to_the_same_text(groups: list[str]) -> None:
    # 8 characters = 40 bits = 5 bytes exactly: no pad bits, so the text is canonical.
    text = "".join(groups)
    assert zbase32.encode(zbase32.decode(text)) == text


@given(st.text(max_size=20).filter(lambda t: not zbase32.is_zbase32(t)))
def test_any_foreign_character_is_decode_error(text: str) -> None:
    with pytest.raises(DecodeError):
        zbase32.decode(text)
