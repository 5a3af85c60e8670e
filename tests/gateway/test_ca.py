"""The gateway's local CA: files and modes, idempotent init, and name constraints that
``openssl verify`` enforces (a leaf for example.com or an IP address from the same CA fails)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from pkdns.errors import UsageError
from pkdns.gateway import ca
from tests.support import pkarr_factory as pf
from tests.support.daemon import PKDNS

NOW = datetime.datetime.now(datetime.UTC)
KEY_NAME = f"{pf.keypair(1).public_key.z32}.key"


def _pkdns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PKDNS, *args], capture_output=True, text=True, timeout=30)


def _pem(cert: Any) -> bytes:
    data: bytes = cert.public_bytes(serialization.Encoding.PEM)
    return data


def _forged_leaf(local: ca.LocalCa, san: x509.GeneralName) -> Any:
    """A leaf the CA key signs directly, bypassing mint_leaf's own refusal."""
    key = ca.new_key()
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
            .issuer_name(local.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1))
            .not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(local.key, hashes.SHA256()))


def _openssl_verify(tmp: Path, local: ca.LocalCa, leaf: Any,
                    name: str) -> subprocess.CompletedProcess[str]:
    path = tmp / f"leaf-{name}.pem"
    path.write_bytes(_pem(leaf))
    return subprocess.run(["openssl", "verify", "-CAfile", str(local.cert_path),
                           "-purpose", "sslserver", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_cli_init_is_idempotent_and_the_key_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _pkdns("ca", "init", "--state-dir", str(state))
    assert first.returncode == 0, first
    assert "certutil -d sql:$HOME/.pki/nssdb -A" in first.stdout
    assert "update-ca-certificates" in first.stdout and "Windows" in first.stdout
    key_file, cert_file = state / ca.KEY_FILE, state / ca.CERT_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.stat().st_uid == os.geteuid()
    before = (key_file.read_bytes(), cert_file.read_bytes())
    again = _pkdns("ca", "init", "--state-dir", str(state))
    assert again.returncode == 0 and "unchanged" in again.stdout, again
    assert (key_file.read_bytes(), cert_file.read_bytes()) == before
    export = _pkdns("ca", "export", "--state-dir", str(state))
    assert (export.returncode, export.stdout.encode()) == (0, before[1])
    show = _pkdns("ca", "show", "--state-dir", str(state))
    assert show.returncode == 0 and "DNS names under .key only" in show.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    none = _pkdns("ca", "export", "--state-dir", str(tmp_path / "empty"))
    assert none.returncode == 2 and "no gateway CA yet" in none.stderr, none
    state = tmp_path / "half"
    state.mkdir()
    (state / ca.CERT_FILE).write_text("not a certificate\n")
    half = _pkdns("ca", "init", "--state-dir", str(state))
    assert half.returncode == 2 and len(half.stderr.splitlines()) == 1, half
    assert ca.CERT_FILE in half.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_init_gives_the_files_to_the_state_directory_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)       # nobody: the user a packaged daemon would run as
    local, created = ca.init(state, NOW, "test")
    assert created
    for f in (local.key_path, local.cert_path):
        assert (f.stat().st_uid, f.stat().st_gid) == (65534, 65534)


def test_name_constraints_hold_in_openssl(tmp_path: Path) -> None:
    local, _ = ca.init(tmp_path, NOW, "test")
    constraints = local.cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    good = ca.mint_leaf(local, KEY_NAME, ca.new_key(), NOW)
    ok = _openssl_verify(tmp_path, local, good, "good")
    assert ok.returncode == 0, ok
    for label, san in (("icann", x509.DNSName("example.com")),
                       ("ipv4", x509.IPAddress(ipaddress.ip_address("192.0.2.1"))),
                       ("ipv6", x509.IPAddress(ipaddress.ip_address("2001:db8::1"))),
                       ("suffix-lookalike", x509.DNSName("example.notkey"))):
        bad = _openssl_verify(tmp_path, local, _forged_leaf(local, san), label)
        assert bad.returncode != 0, (label, bad)
        assert "subtree violation" in bad.stdout + bad.stderr, (label, bad)


def test_mint_leaf_refuses_names_outside_key(tmp_path: Path) -> None:
    local, _ = ca.init(tmp_path, NOW, "test")
    for name in ("example.com", "key", "x.key.example", ".key", "a..key"):
        with pytest.raises(ValueError, match="not a .key name"):
            ca.mint_leaf(local, name, ca.new_key(), NOW)
    leaf = ca.mint_leaf(local, KEY_NAME.upper() + ".", ca.new_key(), NOW)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [KEY_NAME]
    assert leaf.not_valid_after_utc - NOW <= ca.LEAF_LIFE


def test_load_refuses_a_key_of_another_ca(tmp_path: Path) -> None:
    a, _ = ca.init(tmp_path / "a", NOW, "a")
    b, _ = ca.init(tmp_path / "b", NOW, "b")
    b.key_path.write_bytes(a.key_path.read_bytes())
    with pytest.raises(UsageError, match="does not belong"):
        ca.load(tmp_path / "b")
