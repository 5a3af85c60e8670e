"""Sign one ``[[zones]]`` entry: seed file + zone file (+ DynDNS variables) -> SignedPacket.

Everything is re-read on every run, so editing the zone file (or the host getting a new public
IP) reaches the DHT at the next interval or at ``systemctl reload pkdns``. The external
address is only looked up when the zone text uses ``{external_ipv4}`` / ``{external_ipv6}``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from pkdns.config import RepublishConfig, ZoneConfig
from pkdns.errors import UsageError
from pkdns.pkarr import external_ip
from pkdns.pkarr.keys import Keypair, read_seed_file
from pkdns.pkarr.signed_packet import SignedPacket
from pkdns.pkarr.zone import parse_zone, substitute_variables, variables_used

Discover = Callable[[Sequence[str], int, float], Awaitable[str]]


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read zone file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: zone file is not UTF-8 text") from None


class ZoneBuilder:
    """``await builder(zone, timestamp)`` -> the signed packet (the republisher's ``build``)."""

    def __init__(self, cfg: RepublishConfig, discover: Discover | None = None) -> None:
        self.cfg = cfg
        self._discover: Discover = discover or external_ip.discover

    async def __call__(self, zone: ZoneConfig, timestamp: int) -> SignedPacket:
        keypair, text = await asyncio.to_thread(self._read, zone)
        text = await self._substitute(text)
        records = parse_zone(text, keypair.public_key, filename=zone.zone)
        return SignedPacket.sign(keypair, records, timestamp)

    @staticmethod
    def _read(zone: ZoneConfig) -> tuple[Keypair, str]:
        return read_seed_file(zone.seed), _read_text(zone.zone)

    async def _substitute(self, text: str) -> str:
        want4, want6 = variables_used(text)
        v4 = await self._discover(self.cfg.ip_echo_v4, socket.AF_INET,
                                  self.cfg.ip_echo_timeout) if want4 else None
        v6 = await self._discover(self.cfg.ip_echo_v6, socket.AF_INET6,
                                  self.cfg.ip_echo_timeout) if want6 else None
        return substitute_variables(text, v4, v6)
