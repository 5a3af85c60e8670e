"""The resolver's pkarr handler: classify, fetch the packet, synthesize, recurse.

Recursion follows RFC 1034 §4.3.2 across the two roots: a CNAME leaving a key is followed to
the other key or to ICANN (through the resolver's cache + forwarder); an NS delegation of a
sub-name is followed by asking the delegated server (glue from the packet, else the NS name
resolved like any other name), including further referrals it returns. Every hop spends one
unit of a budget shared by the whole query (pkarr.max_recursion_depth), and a name seen twice
in one chain is a loop: both end in SERVFAIL. Clients that set RD=0 get what an authoritative
server would say (the CNAME, or the referral) and nothing is followed.

Outcome -> RCODE (one row each: every outcome has exactly one RCODE):

    packet found                 synthesized answer (NOERROR / NODATA / NXDOMAIN, AA set)
    key not found                NXDOMAIN + SOA of the key zone (negative TTL)
    label is a key, but invalid  NXDOMAIN
    DHT unavailable / overloaded SERVFAIL
    per-IP DHT rate limit        REFUSED
    loop, depth exceeded         SERVFAIL
    delegated servers all fail   SERVFAIL
    unexpected exception         SERVFAIL (logged)

DNS rebinding (``pkarr.rebind_protection``, on by default; :mod:`pkdns.dns.rebind`): publishing
a packet costs nothing, so an answer for a key name never carries a private, loopback,
link-local, CGNAT or unspecified address, unless the key is one the user serves
(``[[zones]]``) or allows (``pkarr.rebind_allow``). The key of the *asked* name decides, since
that is the origin a browser trusts; every address the answer ends with is filtered, wherever
it came from (the packet, another key, an ICANN name a CNAME points to, a delegated server),
and so are the NS addresses we would ask. What a client gets:

    some addresses blocked       the answer without them (the others still work)
    every address blocked        NOERROR/NODATA with the key zone's SOA (TTL: the removed
                                 records' smallest), after any CNAME records: the name
                                 exists, it has no usable address; NXDOMAIN would deny the
                                 name's other types, SERVFAIL would make clients retry
    NS addresses all blocked     those servers are not asked: SERVFAIL like a delegation
                                 whose servers all fail (unbound's do-not-query-address)

Each removed address counts in ``pkdns_rebind_filtered_total{source="pkarr"}``, each emptied
answer in ``pkdns_rebind_emptied_total{source="pkarr"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from dnslib import QTYPE, RCODE, DNSRecord

from pkdns import log
from pkdns.answer.chain import Chain, present, referral, subquery
from pkdns.answer.names import BadKey, Icann, PkarrName, classify, is_pkarr, normalize
from pkdns.answer.packets import PacketSource, SourceResult, Status
from pkdns.answer.synth import (
    Delegation,
    Final,
    FollowCname,
    NameServer,
    SynthOptions,
    Zone,
    negative,
    reply_to,
    soa_for,
    synthesize,
    with_suffix,
)
from pkdns.config import HostPort, PkarrConfig
from pkdns.dns import rebind
from pkdns.errors import PkdnsError
from pkdns.metrics import Metrics
from pkdns.pkarr.keys import PublicKey

_log = log.get("pkarr_answer")
_FAIL = {Status.UNAVAILABLE: RCODE.SERVFAIL, Status.OVERLOADED: RCODE.SERVFAIL,
         Status.RATE_LIMITED: RCODE.REFUSED}
_MAX_ADDRESSES = 2  # per name server: enough to survive one dead address
# The HTTPS gateway's hook: (query, name, packet, age, stale) -> its answer, or None.
Route = Callable[[DNSRecord, PkarrName, Zone, float, bool], DNSRecord | None]


class IcannClient(Protocol):
    """The way to ICANN names (:class:`pkdns.dns.icann.IcannPath`): through the resolver's
    cache and upstreams, without holding the resolver."""

    async def resolve(self, qname: str, qtype: int) -> DNSRecord:
        """An ICANN lookup; never raises for DNS failures (the record carries the rcode)."""
        ...

    async def query_server(self, addr: HostPort, query: DNSRecord) -> DNSRecord:
        """One query to one server (NS delegation); raises on a timeout or a bad reply."""
        ...


class PkarrAnswerer:
    """Implements the resolver's ``PkarrHandler`` protocol."""

    def __init__(self, source: PacketSource, icann: IcannClient | None, cfg: PkarrConfig, *,
                 ns_port: int = 53, metrics: Metrics | None = None,
                 own_keys: Iterable[str] = ()) -> None:
        self.source, self.icann, self.cfg, self.ns_port = source, icann, cfg, ns_port
        self.opts = SynthOptions(min_ttl=cfg.min_ttl, max_ttl=cfg.max_ttl, suffix=cfg.tld_suffix)
        self.metrics = metrics
        self.allowed = frozenset(PublicKey.parse(k).z32 for k in cfg.rebind_allow)
        self.exempt = self.allowed
        self.set_own_keys(own_keys)
        self.route: Route | None = None     # set by the gateway (pkdns.gateway.route)

    def set_own_keys(self, keys: Iterable[str]) -> None:
        """The keys of our ``[[zones]]`` (z-base-32): exempt from the rebinding filter."""
        self.exempt = self.allowed | frozenset(keys)

    def guards(self, name: PkarrName | BadKey | Icann) -> bool:
        """Is the rebinding filter on for answers to ``name``?"""
        return (self.cfg.rebind_protection and isinstance(name, PkarrName)
                and name.key.z32 not in self.exempt)

    def claims(self, qname: str) -> bool:
        """pkarr names and labels that can only have meant a key (those get NXDOMAIN)."""
        return is_pkarr(qname, self.cfg.tld_suffix)

    async def answer(self, query: DNSRecord, client_ip: str) -> DNSRecord:
        """The full response; never raises."""
        name = classify(str(query.q.qname), self.cfg.tld_suffix)
        chain = Chain(reply_to(query, aa=True), query.q.qtype, self.cfg.max_recursion_depth,
                       guard=self.guards(name))
        try:
            reply = await self._resolve(query, chain, client_ip)
        except Exception:
            _log.exception("pkarr_answer_failed", qname=str(query.q.qname))
            return chain.fail(RCODE.SERVFAIL)
        if chain.guard and isinstance(name, PkarrName):
            self._filter(reply, name)
        return reply

    def _filter(self, reply: DNSRecord, name: PkarrName) -> None:
        """Remove blocked addresses; an answer left empty becomes NODATA (module docstring)."""
        qtype = reply.q.qtype
        had = rebind.answers_type(reply, qtype)
        ttl = min((rr.ttl for rr in reply.rr if rr.rtype == qtype or qtype == QTYPE.ANY),
                  default=0)
        removed = rebind.filter_message(reply)
        if not removed:
            return
        emptied = had and not rebind.answers_type(reply, qtype)
        _log.info("rebind_filtered", qname=str(reply.q.qname), removed=removed, emptied=emptied)
        if self.metrics is not None:
            self.metrics.rebind_filtered.labels("pkarr").inc(removed)
            if emptied:
                self.metrics.rebind_emptied.labels("pkarr").inc()
        if emptied and reply.header.rcode == RCODE.NOERROR and \
                not any(rr.rtype == QTYPE.SOA for rr in reply.auth):
            reply.add_auth(soa_for(name, 0, max(ttl, 1)))

    async def _resolve(self, query: DNSRecord, chain: Chain, client_ip: str) -> DNSRecord:
        """Follow the chain from ``query`` (the client's, or an NS address lookup)."""
        rd = bool(query.header.rd)
        while chain.spend(str(query.q.qname)):
            name = classify(str(query.q.qname), self.cfg.tld_suffix)
            if isinstance(name, BadKey):
                resp = reply_to(query, aa=True)
                resp.header.rcode = RCODE.NXDOMAIN
                return chain.finish(resp, authoritative=True)
            if isinstance(name, Icann):
                resp = await self._icann(name.name, chain.qtype)
                target = self._cname_back_to_pkarr(resp, chain.qtype)
                if target is None:
                    return chain.finish(resp, authoritative=False)
                chain.extend(resp)
                chain.reply.header.aa = 0
                query = subquery(target, chain.qtype)
                continue
            lookup = await self.source.get(name.key, client_ip)
            if lookup.status is not Status.FOUND or lookup.packet is None:
                return self._no_packet(query, name, lookup, chain)
            if self.route is not None:
                routed = self.route(query, name, lookup.packet, lookup.age, lookup.stale)
                if routed is not None:
                    # The gateway's own address (often loopback) is the point of the
                    # answer, not a rebinding: the filter does not apply to it.
                    chain.guard = False
                    return chain.finish(routed, authoritative=True)
            out = synthesize(query, name, lookup.packet, age=lookup.age, stale=lookup.stale,
                             opts=self.opts)
            if isinstance(out, Final) or not rd:
                referral = isinstance(out, Delegation)
                return chain.finish(out.response, authoritative=not referral)
            if isinstance(out, FollowCname):
                chain.extend(out.response)
                query = subquery(out.target, chain.qtype)
                continue
            resp, target = await self._delegate(out, name, chain, client_ip)
            if target is None:
                return chain.finish(resp, authoritative=False) if resp else \
                    chain.fail(RCODE.SERVFAIL)
            chain.extend(resp)
            chain.reply.header.aa = 0
            query = subquery(target, chain.qtype)
        _log.info("pkarr_recursion_stopped", qname=str(query.q.qname), loop=chain.budget > 0)
        return chain.fail(RCODE.SERVFAIL)

    def _no_packet(self, query: DNSRecord, name: PkarrName, lookup: SourceResult,
                   chain: Chain) -> DNSRecord:
        if lookup.status is Status.NOT_FOUND:
            resp = negative(query, name, RCODE.NXDOMAIN, 0, lookup.negative_ttl or 1)
            return chain.finish(resp, authoritative=True)
        return chain.fail(_FAIL.get(lookup.status, RCODE.SERVFAIL))

    async def _icann(self, qname: str, qtype: int) -> DNSRecord:
        if self.icann is None:
            resp = subquery(qname, qtype).reply()
            resp.header.rcode = RCODE.SERVFAIL
            return resp
        return await self.icann.resolve(qname, qtype)

    def _cname_back_to_pkarr(self, resp: DNSRecord, qtype: int) -> str | None:
        """An ICANN chain ending in a CNAME to a pkarr name (the upstream cannot follow it)."""
        if resp.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN) or not resp.rr:
            return None
        last = resp.rr[-1]
        if last.rtype != QTYPE.CNAME or qtype == QTYPE.CNAME:
            return None
        target = str(last.rdata.label)
        return target if is_pkarr(normalize(target), self.cfg.tld_suffix) else None

    # --- NS delegation ------------------------------------------------------------------

    async def _delegate(self, deleg: Delegation, name: PkarrName, chain: Chain,
                        client_ip: str) -> tuple[DNSRecord | None, str | None]:
        """Ask the delegated servers, following further referrals.

        Returns ``(final response, None)``, ``(response with a CNAME, its target)`` to continue
        the chain, or ``(None, None)`` when no server answered.
        """
        servers, qname = deleg.nameservers, deleg.qname
        while chain.budget > 0:
            chain.budget -= 1
            resp = await self._ask_servers(servers, qname, chain, client_ip)
            if resp is None:
                return None, None
            resp = present(resp, name.suffix)
            at_name = [rr for rr in resp.rr if normalize(str(rr.rname)) ==
                       normalize(with_suffix(qname, name.suffix))]
            if any(rr.rtype == chain.qtype or chain.qtype == QTYPE.ANY for rr in at_name):
                return resp, None
            cname = next((rr for rr in reversed(resp.rr) if rr.rtype == QTYPE.CNAME), None)
            if cname is not None and resp.header.rcode == RCODE.NOERROR:
                target = str(cname.rdata.label)
                if not any(normalize(str(rr.rname)) == normalize(target) for rr in resp.rr):
                    return resp, target
                return resp, None
            deeper = referral(resp, name.suffix)
            if resp.rr or resp.header.aa or not deeper:
                return resp, None
            servers = deeper
        return None, None

    async def _ask_servers(self, servers: tuple[NameServer, ...], qname: str, chain: Chain,
                           client_ip: str) -> DNSRecord | None:
        if self.icann is None:
            return None
        for ns in servers:
            addresses = ns.addresses or await self._addresses(ns.name, chain, client_ip)
            if chain.guard:
                addresses = self._askable(ns.name, addresses)
            for addr in addresses[:_MAX_ADDRESSES]:
                query = subquery(qname, chain.qtype)
                query.header.rd = 0  # we ask an authoritative server
                try:
                    resp = await self.icann.query_server((addr, self.ns_port), query)
                except (PkdnsError, OSError, TimeoutError) as exc:
                    _log.debug("delegated_server_failed", ns=ns.name, addr=addr, error=str(exc))
                    continue
                if resp.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
                    return resp
        return None

    def _askable(self, ns_name: str, addresses: tuple[str, ...]) -> tuple[str, ...]:
        """The addresses of a name server we may send to (rebinding: not the user's LAN)."""
        ok = tuple(a for a in addresses if not rebind.blocked(a))
        if len(ok) != len(addresses):
            _log.info("rebind_ns_skipped", ns=ns_name, removed=len(addresses) - len(ok))
            if self.metrics is not None:
                self.metrics.rebind_filtered.labels("pkarr").inc(len(addresses) - len(ok))
        return ok

    async def _addresses(self, ns_name: str, chain: Chain, client_ip: str) -> tuple[str, ...]:
        """A and AAAA of a name server without glue, resolved like any name (same budget)."""
        found: list[str] = []
        for qtype in (QTYPE.A, QTYPE.AAAA):
            sub = Chain(reply_to(subquery(ns_name, qtype), aa=True), qtype, chain.budget,
                         set(chain.seen), chain.guard)
            resp = await self._resolve(subquery(ns_name, qtype), sub, client_ip)
            chain.budget = min(chain.budget, sub.budget)
            found += [str(rr.rdata) for rr in resp.rr if rr.rtype == qtype]
        return tuple(found)


__all__ = ["IcannClient", "PkarrAnswerer"]
