"""Deterministic keypairs and signed packets for tests (zone-line records via dnslib)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dnslib

from pkdns.pkarr.keys import Keypair
from pkdns.pkarr.signed_packet import SignedPacket

TS = 1_700_000_000_000_000  # a fixed pkarr timestamp (µs)


def keypair(n: int = 1) -> Keypair:
    """Keypair number ``n``: seed = n repeated 32 times (n in 0..255)."""
    return Keypair.from_seed(bytes([n]) * 32)


def rr(line: str) -> Any:
    """One dnslib RR from a zone line, e.g. ``"foo 300 IN A 1.2.3.4"`` (names relative)."""
    (record,) = dnslib.RR.fromZone(line)
    return record


def packet(kp: Keypair, lines: Iterable[str], ts: int = TS) -> SignedPacket:
    """A signed packet of ``lines`` (zone lines, owner names relative to the key)."""
    return SignedPacket.sign(kp, [rr(line) for line in lines], ts)
