"""TLSA records: building them (``pkdns tlsa``), checking certificates, zones that carry them,
and a daemon answering TLSA queries from a published packet (real ``dig``)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from pkdns.errors import UsageError
from pkdns.gateway import tlsa
from pkdns.pkarr.zone import parse_zone, records_to_text
from tests.e2e.demoproc import run_demo
from tests.gateway.certs import openssl_spki_sha256, self_signed
from tests.support import pkarr_factory as pf
from tests.support.daemon import PKDNS


def _der(cert: Path) -> bytes:
    return tlsa.cert_der_from_pem(cert.read_bytes(), str(cert))


def test_record_for_is_the_spki_sha256_openssl_computes(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    rec = tlsa.record_for(_der(cert))
    assert rec.text() == f"3 1 1 {openssl_spki_sha256(cert)}"
    assert rec.usable


def test_every_selector_and_matching_type_matches_its_own_cert(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "a")
    other, _ = self_signed(tmp_path, "b")
    der, other_der = _der(cert), _der(other)
    for selector in (tlsa.SELECTOR_CERT, tlsa.SELECTOR_SPKI):
        for matching in (tlsa.MATCH_FULL, tlsa.MATCH_SHA256, tlsa.MATCH_SHA512):
            rec = tlsa.record_for(der, selector, matching)
            assert tlsa.matches(der, [rec]), (selector, matching)
            assert not tlsa.matches(other_der, [rec]), (selector, matching)
    full = tlsa.record_for(der, tlsa.SELECTOR_CERT, tlsa.MATCH_SHA256)
    assert full.data == hashlib.sha256(der).digest()


def test_unusable_records_never_match(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    der = _der(cert)
    good = tlsa.record_for(der)
    for usage in (0, 1, 2):         # PKIX-TA, PKIX-EE, DANE-TA: not what a key holder vouches
        assert not tlsa.matches(der, [tlsa.Tlsa(usage, 1, 1, good.data)])
    assert not tlsa.matches(der, [tlsa.Tlsa(3, 1, 1, good.data[:31])])    # short digest
    assert not tlsa.matches(der, [tlsa.Tlsa(3, 2, 1, good.data)])         # unknown selector
    assert not tlsa.matches(der, [tlsa.Tlsa(3, 1, 9, good.data)])         # unknown matching
    assert tlsa.matches(der, [tlsa.Tlsa(2, 1, 1, good.data), good])       # one usable suffices
    assert tlsa.from_rdata(b"\x03\x01") is None
    assert tlsa.from_rdata(b"\x03\x01\x01" + good.data) == good
    assert tlsa.owner("www.k.key.") == "_443._tcp.www.k.key"


def test_zone_files_carry_tlsa_and_refuse_digests_of_the_wrong_size(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    rdata = tlsa.record_for(_der(cert)).text()
    key = pf.keypair(5).public_key
    records = parse_zone(f"_443._tcp 300 IN TLSA {rdata}\n", key)
    assert records_to_text(records, key.z32) == f"_443._tcp 300 IN TLSA {rdata}\n"
    # dnspython's reader checks digest sizes (RFC 6698 §2.1.3): a record that could never
    # match is refused with its line, not published.
    with pytest.raises(UsageError, match=r"zone>:2: .*certificate association data length"):
        parse_zone(f"@ IN A 192.0.2.1\n_443._tcp IN TLSA 3 1 1 {'ab' * 31}\n", key)
    with pytest.raises(UsageError, match=r"zone>:1: .*certificate association data length"):
        parse_zone(f"_443._tcp IN TLSA 3 1 2 {'ab' * 32}\n", key)


def test_cli_tlsa(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    out = subprocess.run([PKDNS, "tlsa", str(cert)], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, f"3 1 1 {openssl_spki_sha256(cert)}\n"), out
    full = subprocess.run([PKDNS, "tlsa", "--selector", "0", "--matching", "2", str(cert)],
                          capture_output=True, text=True, timeout=30)
    assert re.fullmatch(r"3 0 2 [0-9a-f]{128}\n", full.stdout), full
    for bad in (key, tmp_path / "missing.pem"):
        res = subprocess.run([PKDNS, "tlsa", str(bad)], capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 2 and res.stdout == "", res
        assert res.stderr.startswith(f"pkdns: error: {bad}: ") and len(
            res.stderr.splitlines()) == 1, res.stderr


def test_packet_command_signs_a_zone_with_tlsa(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    rdata = tlsa.record_for(_der(cert)).text()
    (tmp_path / "seed").write_text(pf.keypair(6).seed.hex())
    (tmp_path / "seed").chmod(0o600)
    (tmp_path / "zone").write_text(f"@ IN A 192.0.2.1\n_443._tcp IN TLSA {rdata}\n")
    out = subprocess.run([PKDNS, "packet", str(tmp_path / "seed"), str(tmp_path / "zone")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and f"_443._tcp 300 IN TLSA {rdata}" in out.stdout, out


def _dig(port: int, *args: str) -> str:
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=3",
                           "+noall", "+answer", *args],
                          capture_output=True, text=True, timeout=15).stdout


def test_daemon_answers_tlsa_queries_from_the_packet(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    rdata = tlsa.record_for(_der(cert)).text()
    kp = pf.keypair(7)
    (tmp_path / "seed").write_text(kp.seed.hex())
    (tmp_path / "seed").chmod(0o600)
    (tmp_path / "zone").write_text(f"@ IN A 192.0.2.1\n_443._tcp IN TLSA {rdata}\n")
    (tmp_path / "pkdns.toml").write_text(
        '[[zones]]\nseed = "seed"\nzone = "zone"\n')
    z = kp.public_key.z32
    with run_demo(tmp_path, "--config", str(tmp_path / "pkdns.toml"), "--no-http",
                  "--listen", "127.0.0.1:0") as demo:
        port = int(next(t for t in demo.tries if t.startswith("dig")).split()[3])
        deadline = time.monotonic() + 15
        answer = ""
        while time.monotonic() < deadline and "TLSA" not in answer:
            answer = _dig(port, "TLSA", f"_443._tcp.{z}.key")
            time.sleep(0.2)
    owner, _ttl, _cls, rtype, *data = answer.split()
    assert (owner, rtype) == (f"_443._tcp.{z}.key.", "TLSA"), answer
    assert data[:3] == ["3", "1", "1"] and "".join(data[3:]).lower() == rdata.split()[3], answer


def test_publish_and_resolve_carry_tlsa(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    rdata = tlsa.record_for(_der(cert)).text()
    kp = pf.keypair(8)
    (tmp_path / "seed").write_text(kp.seed.hex())
    (tmp_path / "seed").chmod(0o600)
    (tmp_path / "zone").write_text(f"_443._tcp.www IN TLSA {rdata}\n")
    net = subprocess.Popen([PKDNS, "testnet", "--nodes", "8"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        assert net.stdout is not None
        boot = net.stdout.readline().strip()
        pub = subprocess.run([PKDNS, "publish", str(tmp_path / "seed"), str(tmp_path / "zone"),
                              "--bootstrap", boot], capture_output=True, text=True, timeout=60)
        assert pub.returncode == 0, pub
        res = subprocess.run([PKDNS, "resolve", kp.public_key.z32, "--bootstrap", boot],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and f"_443._tcp.www 300 IN TLSA {rdata}" in res.stdout, res
    finally:
        net.terminate()
        net.wait(10)
        if net.stdout is not None:
            net.stdout.close()
