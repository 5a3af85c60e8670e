"""Which names DNS sends to the gateway, and the answers that do it (pure).

A name is routed when the client asked for it under the suffix TLD (``www.<key>.key``) and the
key's signed packet has a TLSA record at ``_443._tcp.<name>``: the key holder declared which
certificate the origin presents, so the gateway can check it. Then:

* A / AAAA -> the gateway's ``answer`` addresses of that family (NODATA when it has none), so a
  browser never reaches the origin directly with a certificate it cannot check;
* HTTPS / SVCB -> NODATA: the packet's record describes the origin, and its address hints or
  ECH keys would lead the browser around the gateway or break the handshake with it;
* every other type, the bare-key form ``<key>`` and names without such a TLSA record are
  answered from the packet as always.

The TTL is the TLSA record's, aged and stale-capped the way synthesis does it, so the routing
decision lives exactly as long as the record that made it. The gateway itself reads the real
addresses with :func:`origin_name` (the bare-key form, which is never routed).
"""

from __future__ import annotations

import ipaddress

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSBuffer, DNSRecord

from pkdns.answer.names import PkarrName, normalize
from pkdns.answer.synth import Final, SynthOptions, Zone, negative, synthesize
from pkdns.gateway.tlsa import TLSA_TYPE, Tlsa, from_rdata, owner

_ADDRESS = (QTYPE.A, QTYPE.AAAA)
_HINTS = (QTYPE.HTTPS, 64)      # 64 = SVCB (RFC 9460), not in dnslib's type map
PORT = 443


def tlsa_at(zone: Zone, name: PkarrName, port: int = PORT) -> list[Tlsa]:
    """The TLSA records for TCP ``port`` at ``name`` in the packet (RFC 6698 §3 owner)."""
    want = owner(name.internal(name.relative), port)
    out = []
    for rr in zone.records:
        if rr.rtype == TLSA_TYPE and normalize(str(rr.rname)) == want:
            buf = DNSBuffer()
            rr.rdata.pack(buf)
            rec = from_rdata(bytes(buf.data))
            if rec is not None:
                out.append(rec)
    return out


def origin_name(name: PkarrName) -> str:
    """The bare-key form of ``name`` (``www.<z32>``): resolving it gives the real addresses."""
    return name.internal(name.relative)


class GatewayRoute:
    """``route(query, name, zone, age, stale)`` -> the routed answer, or None (answer as usual).

    ``answer`` are the gateway's addresses (IP literals) that DNS hands out.
    """

    def __init__(self, answer: tuple[str, ...], opts: SynthOptions) -> None:
        addrs = [ipaddress.ip_address(a) for a in answer]
        self.v4 = [str(a) for a in addrs if a.version == 4]
        self.v6 = [str(a) for a in addrs if a.version == 6]
        self.opts = opts

    def __call__(self, query: DNSRecord, name: PkarrName, zone: Zone, age: float,
                 stale: bool) -> DNSRecord | None:
        qtype = query.q.qtype
        if not name.suffix or (qtype not in _ADDRESS and qtype not in _HINTS):
            return None
        ttl = self._tlsa_ttl(name, zone, age, stale)
        if ttl is None:
            return None
        addresses = (self.v4 if qtype == QTYPE.A else self.v6) if qtype in _ADDRESS else []
        if not addresses:
            return negative(query, name, RCODE.NOERROR, zone.timestamp // 1_000_000, ttl)
        reply = negative(query, name, RCODE.NOERROR, 0, ttl)
        reply.auth = []
        rdata = A if qtype == QTYPE.A else AAAA
        for addr in addresses:
            reply.add_answer(RR(query.q.qname, qtype, ttl=ttl, rdata=rdata(addr)))
        return reply

    def _tlsa_ttl(self, name: PkarrName, zone: Zone, age: float, stale: bool) -> int | None:
        """The TTL the TLSA RRset at ``name`` would be served with; None if there is none."""
        if not tlsa_at(zone, name):
            return None
        relative = owner(name.relative) if name.relative else f"_{PORT}._tcp"
        tlsa_name = PkarrName(name.key, relative, name.suffix)
        sub = DNSRecord.question(tlsa_name.present(relative), "A")
        sub.q.qtype = TLSA_TYPE
        out = synthesize(sub, tlsa_name, zone, age=age, stale=stale, opts=self.opts)
        if not isinstance(out, Final) or not out.response.rr:
            return None
        return min(int(rr.ttl) for rr in out.response.rr)


__all__ = ["GatewayRoute", "origin_name", "tlsa_at"]
