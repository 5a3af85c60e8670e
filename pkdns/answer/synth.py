"""Answers for pkarr names, synthesized from a signed packet (pure: query + packet + age).

The packet is treated as the key's zone (RFC 1034 §4.3.2, adapted). For the name being looked
up, in this order:

1. records of the asked type (ANY: all) -> NOERROR, AA;
2. a CNAME -> added to the answer and chased inside the packet; a target in another key or an
   ICANN name becomes a :class:`FollowCname` instruction (the caller resolves it);
3. HTTPS/SVCB asked at a name that has other data -> NODATA at once (browsers ask for these on
   every name; nothing else could answer them better than the packet);
4. NS records at the name or an ancestor (the closest cut) -> a :class:`Delegation` instruction
   carrying a referral (NS in authority, glue from the packet in additional);
5. the name exists (own records or descendants, i.e. empty non-terminals) -> NODATA;
6. ``*.<closest encloser>`` exists -> RFC 4592 §3.3 synthesis (owner = the asked name);
7. otherwise NXDOMAIN.

NODATA and NXDOMAIN carry a synthesized SOA for the key zone in the authority section so caches
downstream cache them negatively (RFC 2308 §3, §5). Record TTLs are decremented by the packet's age;
a stale packet (served while it is refreshed) gets short TTLs (RFC 8767 §4). Names are compared
lowercased (DNS 0x20); the question is echoed as asked, and when the client used the suffix TLD it
is put back in every name of the answer, RDATA names included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dnslib import CNAME, QTYPE, RCODE, RR, SOA, DNSHeader, DNSLabel, DNSRecord

from pkdns.answer.names import PkarrName, looks_like_key, normalize

_BROWSER_HINTS = (QTYPE.HTTPS, 64)  # 64 = SVCB (RFC 9460), not in dnslib's type map
_ADDRESS = (QTYPE.A, QTYPE.AAAA)


class Zone(Protocol):
    """What synthesis needs from a signed packet (``SignedPacket`` satisfies it)."""

    @property
    def timestamp(self) -> int: ...

    @property
    def records(self) -> tuple[RR, ...]: ...

    def ttl(self, min_ttl: int, max_ttl: int) -> int: ...


@dataclass(frozen=True, slots=True)
class SynthOptions:
    """TTL policy and the configured suffix TLD."""

    min_ttl: int = 60
    max_ttl: int = 86400
    stale_ttl: int = 30
    suffix: str = "key"


@dataclass(frozen=True, slots=True)
class Final:
    """A complete answer."""

    response: DNSRecord


@dataclass(frozen=True, slots=True)
class FollowCname:
    """The CNAME chain left the key: resolve ``target`` (as presented) and append its answer."""

    response: DNSRecord
    target: str


@dataclass(frozen=True, slots=True)
class NameServer:
    """An NS target of a delegation with its glue from the packet (maybe none)."""

    name: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delegation:
    """A sub-name is delegated: ask one of ``nameservers`` for ``qname`` (internal form).

    ``response`` is the referral an authoritative server would give (for RD=0 clients).
    """

    response: DNSRecord
    qname: str
    nameservers: tuple[NameServer, ...] = field(default_factory=tuple)


Synthesis = Final | FollowCname | Delegation


def with_suffix(name: str, suffix: str) -> str:
    """Append the suffix TLD to a name whose last label is a key (other names unchanged)."""
    bare = normalize(name)
    if suffix and looks_like_key(bare.rpartition(".")[2]):
        return f"{bare}.{suffix}"
    return bare


def present_rr(rr: RR, suffix: str, ttl: int, owner: DNSLabel | str | None = None) -> RR:
    """A copy of ``rr`` with ``ttl``, and the suffix put back in its owner and RDATA names."""
    rdata = rr.rdata
    if suffix:
        rdata = copy.copy(rdata)
        for attr in ("label", "mname", "rname"):  # CNAME/NS/PTR/MX/DNAME, SOA
            if hasattr(rdata, attr):
                setattr(rdata, attr, DNSLabel(with_suffix(str(getattr(rdata, attr)), suffix)))
        if rr.rtype == QTYPE.SRV:
            rdata.target = DNSLabel(with_suffix(str(rdata.target), suffix))
        elif rr.rtype == QTYPE.HTTPS and rdata.target:
            name = with_suffix(b".".join(rdata.target).decode(errors="replace"), suffix)
            rdata.target = [bytearray(label.encode()) for label in name.split(".")]
    name = owner if owner is not None else with_suffix(str(rr.rname), suffix)
    return RR(rname=name, rtype=rr.rtype, rclass=rr.rclass, ttl=ttl, rdata=rdata)


def reply_to(query: DNSRecord, *, aa: bool) -> DNSRecord:
    """An empty response echoing the question as asked, RD copied, RA set."""
    header = DNSHeader(id=query.header.id, qr=1, aa=int(aa), ra=1, rd=query.header.rd,
                       opcode=query.header.opcode)
    return DNSRecord(header, questions=list(query.questions))


def soa_for(name: PkarrName, serial: int, ttl: int) -> RR:
    """The synthesized SOA of a key zone; TTL = MINIMUM = negative-caching time (RFC 2308 §5)."""
    zone = name.zone
    # serial, refresh, retry, expire, minimum: nobody transfers this zone, only MINIMUM matters
    times = (serial & 0xFFFFFFFF, ttl, ttl, ttl, ttl)
    soa = SOA(mname=zone, rname=f"hostmaster.{zone}", times=times)
    return RR(rname=zone, rtype=QTYPE.SOA, ttl=ttl, rdata=soa)


def negative(query: DNSRecord, name: PkarrName, rcode: int, serial: int, ttl: int) -> DNSRecord:
    """NXDOMAIN or NODATA for a key zone, with its SOA in authority (used for unknown keys too)."""
    reply = reply_to(query, aa=True)
    reply.header.rcode = rcode
    reply.add_auth(soa_for(name, serial, ttl))
    return reply


class _Index:
    """The packet's records by relative name (lowercased, ``""`` = apex); the names that exist."""

    def __init__(self, records: Iterable[RR], z32: str) -> None:
        self.by_name: dict[str, list[RR]] = {}
        self.existing: set[str] = {""}
        for rr in records:
            rel = _relative(normalize(str(rr.rname)), z32)
            if rel is None:
                continue  # not under this key: never served
            self.by_name.setdefault(rel, []).append(rr)
            labels = rel.split(".") if rel else []
            self.existing.update(".".join(labels[i:]) for i in range(len(labels)))

    def at(self, rel: str) -> list[RR]:
        return self.by_name.get(rel, [])

    def closest_cut(self, rel: str) -> str | None:
        for anc in _ancestors(rel):
            if any(rr.rtype == QTYPE.NS for rr in self.at(anc)):
                return anc
        return None

    def wildcard_source(self, rel: str) -> str | None:
        """``*.<closest encloser>`` if it exists (RFC 4592 §3.3.1)."""
        encloser = next(a for a in _ancestors(rel) if a in self.existing)
        source = f"*.{encloser}" if encloser else "*"
        return source if source in self.existing else None


def _ancestors(rel: str) -> list[str]:
    labels = rel.split(".") if rel else []
    return [".".join(labels[i:]) for i in range(len(labels))] + [""]


def _relative(name: str, z32: str) -> str | None:
    if name == z32:
        return ""
    if name.endswith("." + z32):
        return name[: -len(z32) - 1]
    return None


class _Synth:
    """One synthesis run: the growing reply plus the TTL policy."""

    def __init__(self, query: DNSRecord, name: PkarrName, zone: Zone, age: float, stale: bool,
                 opts: SynthOptions) -> None:
        self.query, self.name, self.zone, self.opts = query, name, zone, opts
        self.age, self.stale = int(age), stale
        self.index = _Index(zone.records, name.key.z32)
        self.reply = reply_to(query, aa=True)
        self.qtype: int = query.q.qtype

    def ttl(self, original: int) -> int:
        if self.stale:
            return min(original, self.opts.stale_ttl)
        return max(original - self.age, 1) if original > 0 else 0

    def negative_ttl(self) -> int:
        if self.stale:
            return self.opts.stale_ttl
        return max(self.zone.ttl(self.opts.min_ttl, self.opts.max_ttl) - self.age, 1)

    def owner(self, rel: str, first: bool) -> DNSLabel | str:
        return self.query.q.qname if first else self.name.present(rel)

    def add(self, records: Iterable[RR], owner: DNSLabel | str | None = None) -> None:
        for rr in records:
            self.reply.add_answer(present_rr(rr, self.name.suffix, self.ttl(rr.ttl), owner))

    def finish(self, rcode: int, *, negative: bool = True) -> Final:
        """Close the answer; NODATA/NXDOMAIN (even after a CNAME) get the SOA (RFC 2308 §2)."""
        self.reply.header.rcode = rcode
        if negative and rcode != RCODE.SERVFAIL:
            serial = self.zone.timestamp // 1_000_000
            self.reply.add_auth(soa_for(self.name, serial, self.negative_ttl()))
        return Final(self.reply)

    def in_zone(self, target: str) -> str | None:
        """Relative name of a CNAME target inside this key (with or without a suffix)."""
        rel = _relative(target, self.name.key.z32)
        if rel is None and self.opts.suffix and target.endswith("." + self.opts.suffix):
            rel = _relative(target[: -len(self.opts.suffix) - 1], self.name.key.z32)
        return rel

    def run(self) -> Synthesis:
        rel, first, seen = self.name.relative, True, set()
        while rel not in seen:
            seen.add(rel)
            owner = self.owner(rel, first)
            first = False
            step = self.step(rel, owner)
            if not isinstance(step, str):
                return step
            target_rel = self.in_zone(step)
            if target_rel is None:
                return FollowCname(self.reply, with_suffix(step, self.name.suffix))
            rel = target_rel
        return self.finish(RCODE.SERVFAIL)  # CNAME loop inside the packet

    def step(self, rel: str, owner: DNSLabel | str) -> Synthesis | str:
        """Answer at ``rel``, or return a CNAME target (normalized) to continue with."""
        own = self.index.at(rel)
        found = self.match(own, owner)
        if found is not None:
            return found
        if own and self.qtype in _BROWSER_HINTS:
            return self.finish(RCODE.NOERROR)
        cut = self.index.closest_cut(rel)
        if cut is not None:
            return self.delegate(rel, cut)
        if rel in self.index.existing:
            return self.finish(RCODE.NOERROR)
        source = self.index.wildcard_source(rel)
        if source is None:
            return self.finish(RCODE.NXDOMAIN)
        found = self.match(self.index.at(source), owner)
        return found if found is not None else self.finish(RCODE.NOERROR)

    def match(self, records: Sequence[RR], owner: DNSLabel | str) -> Synthesis | str | None:
        hits = [rr for rr in records if self.qtype in (QTYPE.ANY, rr.rtype)]
        if hits:
            self.add(hits, owner)
            return self.finish(RCODE.NOERROR, negative=False)
        cname = next((rr for rr in records if rr.rtype == QTYPE.CNAME), None)
        if cname is None:
            return None
        self.add([cname], owner)
        rdata: CNAME = cname.rdata
        return normalize(str(rdata.label))

    def delegate(self, rel: str, cut: str) -> Delegation:
        ns_records = [rr for rr in self.index.at(cut) if rr.rtype == QTYPE.NS]
        self.reply.header.aa = 0
        servers = []
        for rr in ns_records:
            self.reply.add_auth(present_rr(rr, self.name.suffix, self.ttl(rr.ttl)))
            target = normalize(str(rr.rdata.label))
            target_rel = self.in_zone(target)
            glue = [g for g in self.index.at(target_rel) if g.rtype in _ADDRESS] \
                if target_rel is not None else []
            for g in glue:
                self.reply.add_ar(present_rr(g, self.name.suffix, self.ttl(g.ttl)))
            internal = self.name.internal(target_rel) if target_rel is not None else target
            servers.append(NameServer(internal, tuple(str(g.rdata) for g in glue)))
        return Delegation(self.reply, self.name.internal(rel), tuple(servers))


def synthesize(query: DNSRecord, name: PkarrName, zone: Zone, *, age: float, stale: bool = False,
               opts: SynthOptions | None = None) -> Synthesis:
    """Answer ``query`` for ``name`` from ``zone`` held for ``age`` seconds."""
    return _Synth(query, name, zone, age, stale, opts or SynthOptions()).run()


__all__ = [
    "Delegation", "Final", "FollowCname", "NameServer", "SynthOptions", "Synthesis", "Zone",
    "negative", "present_rr", "reply_to", "soa_for", "synthesize", "with_suffix",
]
