"""Cross-check with an independent implementation: npm pkarr@1.3.0 (dns-packet + libsodium).

Runs tests/interop/pkarr_ref.mjs with node. pkarr 1.3.0 signs packets that our verifier
accepts, and it verifies (signature + DNS decode) packets we built, compressed names included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pkdns.errors import VerifyError
from pkdns.pkarr.keys import Keypair, PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from tests.support.pkarr_factory import keypair, packet

pytestmark = pytest.mark.interop

INTEROP = Path(__file__).resolve().parents[2] / "interop"
SCRIPT = INTEROP / "pkarr_ref.mjs"

RECORDS = [
    "@ 300 IN A 192.0.2.1",
    "@ 300 IN AAAA 2001:db8::1",
    "www 120 IN CNAME example.com.",
    "alias 120 IN CNAME www.example.com.",
    "txt 60 IN TXT \"hello world\" \"second string\"",
    "@ 300 IN MX 10 mail.example.com.",
    "sub 300 IN NS ns1.example.net.",
    "_sip._udp 300 IN SRV 10 60 5060 sip.example.com.",
    "@ 300 IN CAA 0 issue \"letsencrypt.org\"",
    "ptr 300 IN PTR host.example.org.",
]


def _node(*args: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is required for the pkarr@1.3.0 cross-check (scripts/test-all.sh)"
    assert (INTEROP / "node_modules" / "pkarr").is_dir(), "run: npm ci --prefix tests/interop"
    proc = subprocess.run(
        [node, str(SCRIPT), *args], capture_output=True, text=True, timeout=30, cwd=INTEROP
    )
    assert proc.returncode in (0, 1), proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _js_verify(sp: SignedPacket) -> dict[str, Any]:
    return _node("verify", "--pubkey", sp.public_key.raw.hex(),
                 "--relay-bytes", sp.relay_payload().hex())


def test_js_signed_default_packet_verifies_here() -> None:
    seed = bytes(range(32))
    out = _node("sign", "--seed", seed.hex(), "--seq", "1700000000000001")
    kp = Keypair.from_seed(seed)
    assert out["z32"] == kp.public_key.z32
    key = PublicKey.parse(out["z32"])
    sp = SignedPacket.from_relay_payload(key, bytes.fromhex(out["relay_bytes"]))
    assert sp.timestamp == out["seq"] == 1700000000000001
    assert sp.signature.hex() == out["sig"]
    (txt,) = sp.resource_records("_lab")
    assert txt.rdata.data == [b"pkarr 1.3.0 reference"]
    bep = SignedPacket.from_bep44(key.raw, out["seq"], bytes.fromhex(out["v"]),
                                  bytes.fromhex(out["sig"]))
    assert bep == sp
    # Same packet bytes and timestamp: Ed25519 is deterministic, so we sign identically.
    assert SignedPacket.sign_packet(kp, sp.packet, sp.timestamp) == sp


def test_js_signs_our_records_and_we_verify() -> None:
    ours = packet(keypair(7), RECORDS, ts=1700000000000002)
    out = _node("sign", "--seed", keypair(7).seed.hex(), "--seq", str(ours.timestamp),
                "--packet", ours.packet.hex())
    theirs = SignedPacket.from_relay_payload(ours.public_key, bytes.fromhex(out["relay_bytes"]))
    assert theirs.timestamp == ours.timestamp
    assert len(theirs.packet) > len(ours.packet)  # dns-packet does not compress
    assert theirs.names == ours.names
    def summary(sp: SignedPacket) -> list[tuple[int, int, str]]:
        return [(r.rtype, r.ttl, str(r.rdata)) for r in sp.records]

    assert summary(theirs) == summary(ours)


def test_js_verifies_our_compressed_packet() -> None:
    ours = packet(keypair(8), RECORDS, ts=1700000000000003)
    out = _js_verify(ours)
    assert out["ok"], out
    assert out["seq"] == ours.timestamp and out["v_len"] == len(ours.packet)
    z32 = ours.public_key.z32
    got = [(a["name"], a["type"], a["ttl"]) for a in out["answers"]]
    want = [(n, line.split()[3], int(line.split()[1])) for n, line in zip(ours.names, RECORDS,
                                                                          strict=True)]
    assert got == want
    by_name = {a["name"]: a for a in out["answers"]}
    assert by_name[f"www.{z32}"]["data"] == "example.com"
    assert by_name[f"alias.{z32}"]["data"] == "www.example.com"  # compressed rdata name
    assert by_name[f"ptr.{z32}"]["data"] == "host.example.org"


def test_js_verifies_the_derived_vector_we_build() -> None:
    sp = SignedPacket.sign(Keypair.from_seed(bytes(32)), [], 1)
    assert _js_verify(sp)["ok"]
    legacy = packet(Keypair.from_seed(bytes(32)), ["@ 0 IN A 1.1.1.1", "foo 30 IN TXT bar"],
                    ts=1697016827303000)
    out = _js_verify(legacy)
    assert out["ok"] and [a["name"] for a in out["answers"]] == list(legacy.names)


def test_js_rejects_what_we_reject() -> None:
    sp = packet(keypair(9), RECORDS[:2], ts=5)
    tampered = bytearray(sp.relay_payload())
    tampered[-1] ^= 1
    out = _node("verify", "--pubkey", sp.public_key.raw.hex(), "--relay-bytes", tampered.hex())
    assert out == {"ok": False, "error": "Invalid signature"}
    with pytest.raises(VerifyError):
        SignedPacket.from_relay_payload(sp.public_key, bytes(tampered))


def test_js_verifies_the_cli_relay_payload(tmp_path: Path) -> None:
    seed, zone, out = tmp_path / "seed", tmp_path / "zone", tmp_path / "payload"
    seed.write_text(keypair(11).seed.hex() + "\n")
    zone.write_text("\n".join(RECORDS) + "\n")
    pkdns = str(Path(sys.executable).with_name("pkdns"))
    proc = subprocess.run([pkdns, "packet", str(seed), str(zone), "--out", str(out)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    result = _node("verify", "--pubkey", keypair(11).public_key.raw.hex(),
                   "--relay-bytes", out.read_bytes().hex())
    assert result["ok"], result
    assert len(result["answers"]) == len(RECORDS)
