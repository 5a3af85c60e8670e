"""Name classification: keys, the suffix TLD, bad keys, ICANN names, 0x20 case."""

from __future__ import annotations

import pytest

from pkdns.answer.names import BadKey, Icann, PkarrName, classify, is_pkarr
from tests.conftest import load_vector

Z = "yg4gxe7z1r7mr6orids9fh95y7gxhdsxjqi6nngsxxtakqaxr5no"
OFF_CURVE = "c1bkg8tfsyy8wcedtmw4fwhdmm7bbzhgg3z58tf43m5ow8w9mbus"
NON_CANONICAL = Z[:-1] + "t"  # same 32 bytes, pad bits set in the last character


def test_bare_key_and_subdomain() -> None:
    name = classify(f"www.foo.{Z}.", "key")
    assert isinstance(name, PkarrName)
    assert (name.key.z32, name.relative, name.suffix) == (Z, "www.foo", "")
    assert name.present("www.foo") == f"www.foo.{Z}"
    apex = classify(Z, "key")
    assert isinstance(apex, PkarrName) and apex.relative == "" and apex.zone == Z


def test_suffix_tld_is_stripped_and_remembered() -> None:
    name = classify(f"www.{Z}.key", "key")
    assert isinstance(name, PkarrName)
    assert (name.relative, name.suffix, name.zone) == ("www", "key", f"{Z}.key")
    assert name.present("x") == f"x.{Z}.key" and name.internal("x") == f"x.{Z}"


def test_suffix_can_be_changed_or_disabled() -> None:
    assert isinstance(classify(f"{Z}.pk", "pk"), PkarrName)
    assert classify(f"{Z}.key", "") == Icann(f"{Z}.key")
    assert classify(f"{Z}.key", "pk") == Icann(f"{Z}.key")
    # the key as the last label works whatever the suffix setting
    assert isinstance(classify(Z, ""), PkarrName)


def test_dns_0x20_case_randomisation() -> None:
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(f"WwW.{Z}.KeY."))
    name = classify(mixed, "key")
    assert isinstance(name, PkarrName)
    assert (name.key.z32, name.relative, name.suffix) == (Z, "www", "key")


@pytest.mark.parametrize("label", [OFF_CURVE, NON_CANONICAL])
def test_invalid_key_labels_are_bad_keys(label: str) -> None:
    assert classify(f"www.{label}", "key") == BadKey(label)
    assert classify(f"{label}.key", "key") == BadKey(label)
    assert is_pkarr(label, "key")


@pytest.mark.parametrize(("qname", "label"), [
    ("garbage.key", "garbage"), (f"{Z[:-1]}.key", Z[:-1]), (f"www.{Z}x.key.", f"{Z}x"),
    (f"{Z}.example.key", "example"), ("A.B.KEY", "b"),
])
def test_other_names_under_the_suffix_are_bad_keys(qname: str, label: str) -> None:
    """The suffix TLD is ours: nothing under it is an ICANN name to forward."""
    assert classify(qname, "key") == BadKey(label)
    assert is_pkarr(qname, "key")
    assert isinstance(classify(qname, ""), Icann)   # suffix disabled: an ordinary name


@pytest.mark.parametrize("qname", [
    "example.com", "example.com.", "", ".", "key", f"{Z[:-1]}.com", f"{Z}x", f"{Z}.example.com",
    f"{Z}.key.example.com",
])
def test_icann_names(qname: str) -> None:
    assert isinstance(classify(qname, "key"), Icann)
    assert not is_pkarr(qname, "key")


def test_vector_keys_classify() -> None:
    vec = load_vector("keys_z32")
    for case in vec["seed_to_public_key"]:
        z32 = case["public_key_z32"]
        name = classify(f"_foo.{z32.upper()}", "key")
        assert isinstance(name, PkarrName) and name.key.z32 == z32
