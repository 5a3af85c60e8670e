"""Fixed signed packets for the resolution tests (tests/data/resolve_packets.json).

Each packet is signed with a fixed seed and timestamp, so the bytes are stable (Ed25519 is
deterministic): ``test_synth`` loads the stored bytes and also checks that signing the zone
below again yields exactly them. Regenerate with ``python -m tests.answer.vectors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dnslib import RD, RR

from pkdns.pkarr.keys import Keypair
from pkdns.pkarr.signed_packet import SignedPacket

PATH = Path(__file__).parent.parent / "data" / "resolve_packets.json"
TIMESTAMP = 1_700_000_000_000_000
PRIVATE_TYPE = 65280  # RFC 6895 private use: "every type in the packet is served"

SEEDS = {"main": bytes([1]) * 32, "other": bytes([2]) * 32, "apexns": bytes([3]) * 32}


def keypair(name: str) -> Keypair:
    return Keypair.from_seed(SEEDS[name])


def _zone(name: str) -> str:
    z = keypair(name).public_key.z32
    o = keypair("other").public_key.z32
    zones = {
        "main": f"""
@ 300 A 1.1.1.1
@ 300 AAAA 2001:db8::1
@ 300 TXT "apex"
www 300 CNAME {z}.
www2 300 CNAME www.{z}.
ext 300 CNAME example.com.
far 300 CNAME www.{o}.
loop1 120 CNAME loop2.{z}.
loop2 120 CNAME loop1.{z}.
sub 300 NS ns.sub.{z}.
ns.sub 300 A 127.0.0.5
away 300 NS ns.example.com.
*.wild 120 TXT "wild"
*.wc 120 CNAME {z}.
a.b.c 300 TXT "deep"
mx 300 MX 10 mail.{z}.
_srv._tcp 300 SRV 10 5 443 www.{z}.
caa 300 CAA 0 issue "letsencrypt.org"
h 300 HTTPS 1 www.{z}. alpn=h2
ptr 300 PTR www.{z}.
""",
        "other": "www 600 A 10.0.0.2\n",
        "apexns": f"""
@ 300 NS ns.{z}.
@ 300 A 10.0.0.3
ns 300 A 127.0.0.6
""",
    }
    return zones[name].replace("@", z + ".")


def records(name: str) -> list[Any]:
    rrs = list(RR.fromZone(_zone(name)))
    if name == "main":
        rrs.append(RR("priv", PRIVATE_TYPE, ttl=300, rdata=RD(b"\x01\x02opaque")))
    return rrs


def sign(name: str) -> SignedPacket:
    return SignedPacket.sign(keypair(name), records(name), TIMESTAMP)


def load(name: str) -> SignedPacket:
    """The stored packet, parsed and verified."""
    data = json.loads(PATH.read_text())
    return SignedPacket.from_bytes(bytes.fromhex(data[name]["canonical_hex"]))


def main() -> None:
    out = {}
    for name in SEEDS:
        packet = sign(name)
        out[name] = {
            "public_key_z32": packet.public_key.z32,
            "seed_hex": SEEDS[name].hex(),
            "timestamp": TIMESTAMP,
            "zone": _zone(name).strip().splitlines(),
            "canonical_hex": packet.to_bytes().hex(),
        }
    PATH.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
