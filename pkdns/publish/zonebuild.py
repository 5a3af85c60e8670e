"""Sign one ``[[zones]]`` entry: seed file + zone file (+ DynDNS variables) -> SignedPacket.

Everything is re-read on every run, so editing the zone file reaches the DHT at the next
interval or at ``systemctl reload pkdns``; a new public IP is noticed sooner, by
:meth:`ZoneBuilder.changed` (the republisher asks it every ``ip_check_interval``). The external
address is only looked up when the zone text uses ``{external_ipv4}`` / ``{external_ipv6}``.
The daemon refuses a seed file that every user may read (``chmod 600`` it, or 640 with a
group the service is in).

:func:`check_zone` is the offline half for ``pkdns serve --check`` (systemd runs it before
start and before every reload): the same reading, parsing and signing, with documentation
addresses standing in for the variables, so a broken seed or zone file is refused up front.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from pkdns.config import Config, RepublishConfig, ZoneConfig
from pkdns.errors import UsageError
from pkdns.pkarr import external_ip
from pkdns.pkarr.keys import Keypair, read_seed_file
from pkdns.pkarr.signed_packet import SignedPacket

Discover = Callable[[Sequence[str], int, float], Awaitable[str]]
Addresses = tuple[str | None, str | None]
"""The values of {external_ipv4} and {external_ipv6} (None: not used by the zone)."""

# What --check puts in place of {external_ipv4}/{external_ipv6}: documentation addresses
# (RFC 5737, RFC 3849); A/AAAA RDATA has a fixed size, so the packet size check stays exact.
CHECK_ADDRESSES = ("192.0.2.1", "2001:db8::1")


def read_zone_text(path: str) -> str:
    """A zone file's text (the daemon, ``--check``, ``pkdns packet`` and ``pkdns publish``)."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read zone file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: zone file is not UTF-8 (byte {exc.start})") from None


def sign_zone(keypair: Keypair, text: str, zonefile: str, timestamp: int) -> SignedPacket:
    from pkdns.pkarr.zone import parse_zone  # dnspython's zone parser: only with zones

    """Parse ``text`` (variables already filled in) and sign it; errors name ``zonefile``."""
    records = parse_zone(text, keypair.public_key, filename=zonefile)
    try:
        return SignedPacket.sign(keypair, records, timestamp)
    except UsageError as exc:
        raise UsageError(f"{zonefile}: {exc}") from None


class ZoneBuilder:
    """``await builder(zone, timestamp)`` -> the signed packet (the republisher's ``build``)."""

    def __init__(self, cfg: RepublishConfig, discover: Discover | None = None,
                 preload: bool = True) -> None:
        """``preload``: import the IP-echo client (aiohttp) now, from plain code, not at the
        first discovery inside the loop (a daemon without zones passes False: it would only
        slow its start-up)."""
        self.cfg = cfg
        if discover is None and preload:
            external_ip.preload()
        self._discover: Discover = discover or external_ip.discover
        self._signed: dict[str, Addresses] = {}   # zone file -> addresses it was signed with

    live = ("republish.*",)
    """Options applied on reload (:class:`pkdns.reload.Live`): the IP echo services."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        self.cfg = cfg.republish

    async def __call__(self, zone: ZoneConfig, timestamp: int) -> SignedPacket:
        keypair, text = await asyncio.to_thread(self._read, zone)
        addresses = await self._addresses(text)
        from pkdns.pkarr.zone import substitute_variables

        packet = sign_zone(keypair, substitute_variables(text, *addresses), zone.zone, timestamp)
        self._signed[zone.zone] = addresses
        return packet

    async def changed(self, zone: ZoneConfig) -> bool | None:
        """Is the host's address for the zone's variables different from the one its last
        signed packet carries? None for zones without variables (no lookup then) and zones
        not signed yet (their first publish looks the address up anyway).

        Raises:
            PkdnsError: no IP-echo service answered.
        """
        signed = self._signed.get(zone.zone)
        if signed is None:
            return None
        text = await asyncio.to_thread(read_zone_text, zone.zone)
        from pkdns.pkarr.zone import variables_used

        if not any(variables_used(text)):
            return None
        return await self._addresses(text) != signed

    @staticmethod
    def _read(zone: ZoneConfig) -> tuple[Keypair, str]:
        return read_seed_file(zone.seed, private=True), read_zone_text(zone.zone)

    async def _addresses(self, text: str) -> Addresses:
        """This host's addresses for the variables ``text`` uses (None for unused ones)."""
        from pkdns.pkarr.zone import variables_used

        want4, want6 = variables_used(text)
        v4 = await self._discover(self.cfg.ip_echo_v4, socket.AF_INET,
                                  self.cfg.ip_echo_timeout) if want4 else None
        v6 = await self._discover(self.cfg.ip_echo_v6, socket.AF_INET6,
                                  self.cfg.ip_echo_timeout) if want6 else None
        return v4, v6


def check_zone(zone: ZoneConfig) -> None:
    """Validate one ``[[zones]]`` entry without the network: seed, zone syntax, packet size.

    Raises:
        UsageError: naming the seed file, or ``ZONEFILE:LINE: ...`` for zone errors.
    """
    from pkdns.pkarr.zone import substitute_variables

    keypair, text = ZoneBuilder._read(zone)
    sign_zone(keypair, substitute_variables(text, *CHECK_ADDRESSES), zone.zone, 0)
