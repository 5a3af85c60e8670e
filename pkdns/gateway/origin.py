"""Finding and verifying the origin of a ``.key`` name (asyncio I/O around pure checks).

For ``www.<key>.key`` the gateway takes, from the key's signed packet (cache, else the DHT),
the TLSA records at ``_443._tcp.www.<key>`` and the real addresses of the bare-key form
``www.<key>`` (resolved by the pkarr handler like any DNS query, CNAMEs included; never routed
to the gateway). It connects to each address in turn with TLS, without certificate
verification by a CA, and accepts the first whose certificate matches a usable TLSA record
(RFC 7671 §5.1: DANE-EE checks neither names nor dates). Anything else raises
:class:`Refused` with a reason a person can act on; the caller shows it as a 502 page.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Protocol

from dnslib import QTYPE, RCODE, DNSRecord

from pkdns.answer.names import PkarrName
from pkdns.answer.packets import PacketSource, Status
from pkdns.gateway import tlsa
from pkdns.gateway.leaves import ALPN
from pkdns.gateway.route import PORT, origin_name, tlsa_at

_LOOKUP_FAILED = {
    Status.NOT_FOUND: "no signed packet for this key was found on the DHT",
    Status.UNAVAILABLE: "the DHT could not be reached to fetch this key's packet",
    Status.RATE_LIMITED: "too many DHT lookups from this client; try again shortly",
    Status.OVERLOADED: "the resolver is overloaded; try again shortly",
}


class Refused(Exception):
    """The origin cannot be used; ``str(exc)`` says why (shown on the 502 page)."""


class Answerer(Protocol):
    async def answer(self, query: DNSRecord, client_ip: str) -> DNSRecord: ...


@dataclass(slots=True)
class Origin:
    """A verified TLS connection to the origin, ready to relay."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    address: str


def client_context() -> ssl.SSLContext:
    """TLS to origins: no CA check (the TLSA record is the check), HTTP/1.1 like the browser."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    return ctx


class OriginFinder:
    """``await finder.connect(name, host, client_ip)`` -> a verified :class:`Origin`."""

    def __init__(self, source: PacketSource, answerer: Answerer, timeout: float,
                 port: int = PORT) -> None:
        self.source, self.answerer, self.timeout, self.port = source, answerer, timeout, port
        self.ctx = client_context()

    async def records(self, name: PkarrName, client_ip: str) -> list[tlsa.Tlsa]:
        """The usable TLSA records for ``name``, or :class:`Refused`."""
        lookup = await self.source.get(name.key, client_ip)
        if lookup.status is not Status.FOUND or lookup.packet is None:
            raise Refused(_LOOKUP_FAILED.get(lookup.status, "the key's packet is unavailable"))
        where = tlsa.owner(origin_name(name), PORT)
        records = tlsa_at(lookup.packet, name)
        if not records:
            raise Refused(f"the key's signed packet has no TLSA record at {where}, so the "
                          "origin's certificate cannot be checked")
        usable = [r for r in records if r.usable]
        if not usable:
            raise Refused(f"no usable TLSA record at {where} (the gateway accepts DANE-EE: "
                          "usage 3, selector 0 or 1, matching type 0, 1 or 2)")
        return usable

    async def addresses(self, name: PkarrName, client_ip: str) -> list[str]:
        """IPv4 then IPv6 addresses of the bare-key form of ``name``."""
        out: list[str] = []
        for qtype in (QTYPE.A, QTYPE.AAAA):
            query = DNSRecord.question(origin_name(name), "A")
            query.q.qtype = qtype
            reply = await self.answerer.answer(query, client_ip)
            if reply.header.rcode == RCODE.NOERROR:
                out += [str(rr.rdata) for rr in reply.rr if rr.rtype == qtype]
        if not out:
            raise Refused(f"the key's packet gives no usable address (A/AAAA) for "
                          f"{origin_name(name)} (private addresses count only for keys in "
                          "pkarr.rebind_allow or our own [[zones]])")
        return out

    async def connect(self, name: PkarrName, host: str, client_ip: str) -> Origin:
        """Connect to the first address whose certificate matches; :class:`Refused` if none."""
        records = await self.records(name, client_ip)
        problems = []
        for address in await self.addresses(name, client_ip):
            try:
                origin = await asyncio.wait_for(self._open(address, host), self.timeout)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                problems.append(f"{address}: cannot connect ({_why(exc)})")
                continue
            if _verified(origin, records):
                return origin
            origin.writer.close()
            problems.append(f"{address}: its certificate matches no TLSA record of the key")
        raise Refused("; ".join(problems))

    async def _open(self, address: str, host: str) -> Origin:
        reader, writer = await asyncio.open_connection(
            address, self.port, ssl=self.ctx, server_hostname=host.rstrip("."),
            ssl_handshake_timeout=self.timeout)
        return Origin(reader, writer, address)


def _verified(origin: Origin, records: list[tlsa.Tlsa]) -> bool:
    sslobj = origin.writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        return False
    try:
        return tlsa.matches(der, records)
    except ValueError:
        return False


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


__all__ = ["Origin", "OriginFinder", "Refused", "client_context"]
