"""The one entry point every transport calls: query bytes in, reply bytes (or None) out.

``Resolver.resolve(query_wire, ClientInfo(ip, transport), max_size)`` runs, in order:

1. policy (cheap, before parsing): ACL -> REFUSED; rate limit -> UDP drop/slip (every 2nd
   over-limit query gets an empty TC=1), TCP/DoH REFUSED (:mod:`pkdns.dns.ratelimit`);
2. :meth:`cached`, the hot path (after :func:`wire.scan`): look the key up, patch and return;
3. the ladder (:func:`pkdns.dns.wire.parse_query`): drop / FORMERR / NOTIMP / BADVERS;
4. query policy (:mod:`pkdns.dns.querypolicy`): class != IN, qtype 0 and meta qtypes are
   refused, ANY gets RFC 8482 §4.2 minimal answers (TC=1 over UDP, no bigger than the query);
5. pkarr names (``PkarrHandler.claims``) -> the handler (:mod:`pkdns.answer.seam`);
   everything else -> cache, else one coalesced upstream fetch (stored in the cache by the fetch
   itself, so a late reply still fills the cache, as Unbound does), with serve-stale (RFC 8767)
   when the upstream fails or is slower than ``stale_client_timeout``, else SERVFAIL by
   ``query_deadline``. Failures are remembered for 5 s (RFC 9520) so clients don't queue up.

Every outcome is one rcode; an unexpected exception becomes SERVFAIL and is logged, so nothing
a client sends can escape a handler. UDP replies are sized to the client's EDNS payload (512
without EDNS, capped at ``max_size``) with TC=1 when they do not fit; TCP/DoH pass 65535.

The pkarr side (``Resolver.pkarr``, a :class:`PkarrHandler`) also calls back in:
* ``await resolver.resolve_icann(qname, qtype) -> dnslib.DNSRecord``: an ICANN lookup through
  cache + forwarder (CNAME targets outside pkarr), never raising for DNS failures (the record
  carries the rcode, SERVFAIL on upstream failure);
* ``await resolver.query_server((host, port), query) -> dnslib.DNSRecord``: one query to one
  server (NS delegation), :class:`pkdns.errors.UpstreamError` on timeout or a bad reply.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dnslib

from pkdns import log
from pkdns.answer.names import KEY_LABEL_LEN
from pkdns.answer.seam import PkarrHandler, ask
from pkdns.clock import Clock
from pkdns.config import Config, HostPort
from pkdns.dns import wire
from pkdns.dns.acl import Acl
from pkdns.dns.cache import (
    EXPIRES,
    KIND,
    STALE_UNTIL,
    Entry,
    ReplyMemo,
    WireCache,
    render,
    second_end,
)
from pkdns.dns.fetch import Fetch, Fetches
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.querypolicy import edns_size, error, policy_reply, reply_limit, special_qtype
from pkdns.dns.ratelimit import RateLimiter, Verdict
from pkdns.dns.rebind_icann import IcannGuard
from pkdns.dns.tally import Tally, log_query
from pkdns.errors import UpstreamError
from pkdns.metrics import Metrics

_log = log.get("resolver")
STREAM_MAX = 65535
_DEADLINE_MARGIN = 0.1      # answer SERVFAIL this much before query_deadline


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who asked, and over what (``udp``, ``tcp`` or ``doh``)."""

    ip: str
    transport: str


class _Asker:
    """A query on the miss path waiting for its fetch: what :meth:`Resolver._deliver` needs.

    One object with a bound method as the fetch's waiter, instead of a nine-argument
    ``functools.partial`` per query (cheaper to make and to call once compiled, setup.py).
    """

    __slots__ = ("resolver", "data", "qend", "size", "do", "limit", "transport", "send",
                 "client", "dest")

    def __init__(self, resolver: Resolver, data: bytes, qend: int, size: int, do: bool,
                 limit: int, transport: str, send: Callable[[bytes, Any], None],
                 client: str, dest: Any) -> None:
        self.resolver, self.data, self.qend, self.size, self.do = resolver, data, qend, size, do
        self.limit, self.transport, self.send, self.client = limit, transport, send, client
        self.dest = dest

    def deliver(self, entry: Entry | None) -> None:
        """Render ``entry`` (None: SERVFAIL) for this query and send it."""
        self.resolver._deliver(self, entry)


class Resolver:
    """Policy, cache, pkarr handler and forwarder behind one call."""

    def __init__(self, cfg: Config, cache: WireCache, forwarder: Forwarder, clock: Clock,
                 metrics: Metrics, pkarr: PkarrHandler | None = None) -> None:
        self.cfg, self.cache, self.forwarder = cfg, cache, forwarder
        self.clock, self.metrics, self.pkarr = clock, metrics, pkarr
        self.acl = Acl(cfg.dns.allow)
        self.limiter = RateLimiter(cfg.dns.rate_limit, cfg.dns.rate_limit_burst,
                                   shared=cfg.dns.forwarders)
        self.debug = cfg.log.level == "debug"
        self.fetches = Fetches(cache, forwarder, metrics, clock)
        if cfg.dns.rebind_protection:        # filters on insert: hits never pay for it
            self.fetches.guard = IcannGuard(cfg.dns.rebind_allow, metrics)
        self.tally = Tally(metrics)
        self._hits, self._misses = self.tally.hits, self.tally.misses
        self.now = clock.monotonic
        self._rng = random.SystemRandom()
        self._suffix = cfg.pkarr.tld_suffix.encode()

    # ---------------------------------------------------------------- entry points

    async def resolve(self, data: bytes, client: ClientInfo, max_size: int) -> bytes | None:
        """The reply to ``data`` from ``client`` (None: send nothing). Never raises."""
        if len(data) < 12 or data[2] & 0x80:
            self.metrics.dropped.labels("malformed").inc()
            return None
        early = self.admit(data, client.ip, client.transport)
        if early is not None:
            return early or None
        scanned = wire.scan(data)
        if scanned is not None:
            reply = self.cached(data, scanned, client.transport, max_size)
            if reply is not None:
                if self.debug:
                    self.log_hit(client.ip, client.transport, data, scanned, reply)
                return reply
        return await self.resolve_admitted(data, client, max_size)

    def admit(self, data: bytes, ip: str, transport: str) -> bytes | None:
        """ACL + rate limit. None: go on; b"": drop; else the reply to send instead."""
        if not self.acl.allowed(ip):
            self.metrics.dropped.labels("acl").inc()
            return self._count(transport, wire.refusal(data, wire.REFUSED), "policy")
        if not self.limiter.rate:
            return None
        return self.over_limit(data, ip, transport, self.now())

    def over_limit(self, data: bytes, ip: str, transport: str, now: float) -> bytes | None:
        """Take a rate-limit token for ``ip``: None to go on, else as :meth:`admit`."""
        verdict = self.limiter.check(ip, now)
        if verdict is Verdict.PASS:
            return None
        self.metrics.rate_limited.labels("dns_" + transport).inc()
        if transport != "udp":
            return self._count(transport, wire.refusal(data, wire.REFUSED), "policy")
        if verdict is Verdict.SLIP:
            return wire.refusal(data, 0, tc=True)
        return b""

    def answer_cached(self, data: bytes, transport: str, max_size: int) -> bytes | None:
        """:func:`wire.scan` + :meth:`cached` (the listeners call the two apart, to reuse the
        scan on a miss): the reply from a fresh cache entry, from the bytes alone; else None."""
        scanned = wire.scan(data)
        return None if scanned is None else self.cached(data, scanned, transport, max_size)

    def cached(self, data: bytes, scanned: wire.Scanned, transport: str, max_size: int,
               memo: ReplyMemo | None = None) -> bytes | None:
        """Hot path: the reply from a fresh cache entry for query bytes ``data`` that
        :func:`wire.scan` found plain, from the bytes alone; else None.

        With ``memo`` (one per listener, so one ``max_size``), the reply is also remembered
        under the query bytes for the rest of its TTL second (:class:`ReplyMemo`).
        """
        key, qend, size, do = scanned
        entry = self.cache.get(key)
        if entry is None:
            return None
        now = self.now()
        if now >= entry[EXPIRES]:
            return None
        reply = render(entry, data, qend, size, bool(do), reply_limit(transport, size, max_size),
                       now)
        cell = self.tally.cell(transport, reply[3] & 0x0F, entry[KIND], hit=True)
        cell[0] += 1
        if memo is not None:
            memo.put(data, reply, second_end(entry, now), cell)
        return reply

    def forward(self, data: bytes, scanned: wire.Scanned, transport: str, max_size: int,
                send: Callable[[bytes, Any], None], client: str = "-",
                dest: Any = None) -> bool:
        """Miss path without a coroutine per query, for the common case.

        A plain ICANN query (it passed :func:`wire.scan`) with no stale entry joins the key's
        upstream fetch (:mod:`pkdns.dns.fetch`) with a callback that renders the reply and
        calls ``send(reply, dest)`` (the UDP listener passes one bound method and the client
        address, so nothing is made per query for the way back). Returns False when the
        query needs the general path (:meth:`resolve_admitted`): policy, pkarr, ANY, or a
        stale entry that may have to be served after ``stale_client_timeout``.
        """
        key, qend, size, do = scanned
        qtype = (key[-5] << 8) | key[-4]
        if special_qtype(qtype):       # policy may answer it: the slow path
            return False
        if self.pkarr is not None and self._maybe_pkarr(key[:-5]) \
                and self.pkarr.claims(wire.name_text(key[:-5])):
            return False
        entry = self.cache.get(key)
        if entry is not None and self.now() < entry[STALE_UNTIL]:
            return False
        limit = reply_limit(transport, size, max_size)
        self._misses[0] += 1
        fetch = None if self.cache.failing(key, self.now()) else self._fetch(key)
        asker = _Asker(self, data, qend, size, bool(do), limit, transport, send, client, dest)
        if fetch is None:
            asker.deliver(None)
        else:
            fetch.add(asker.deliver)
        return True

    def _maybe_pkarr(self, name: bytes) -> bool:
        """Can ``PkarrHandler.claims`` be true for this wire name? Only when its TLD is a
        52-character label (a key, :func:`pkdns.answer.names.classify`) or the ``.key``-style
        suffix; checked on the bytes so that ICANN misses skip the text classification."""
        at = wire.last_label_at(name)
        if at < 0:
            return False
        n = name[at]
        suffix = self._suffix
        return n == KEY_LABEL_LEN or (n == len(suffix) and name[at + 1:at + 1 + n] == suffix)

    def _deliver(self, a: _Asker, entry: Entry | None) -> None:
        data, qend, size, do = a.data, a.qend, a.size, a.do
        try:
            if entry is None:
                reply = wire.error_reply(data, wire.SERVFAIL, qend, size > 0, do)
            else:
                reply = render(entry, data, qend, size, do, a.limit, self.now())
        except Exception:
            _log.exception("query_failed", qname=wire.name_text(data[12:qend - 4]))
            reply = wire.error_reply(data, wire.SERVFAIL, qend, size > 0, do)
        if self.debug:
            log_query(a.client, a.transport, data, qend, reply, "icann", "miss")
        a.send(self._count(a.transport, reply, "icann"), a.dest)

    def log_hit(self, client: str, transport: str, data: bytes, scanned: wire.Scanned,
                reply: bytes) -> None:
        """The ``query`` line (:func:`log_query`) for a reply :meth:`cached` just gave.

        Callers test :attr:`debug` first (set at start and on reload), so with debug off a hit
        pays that test only; the UDP listeners also stop memoising replies then, so every hit
        reaches a place that logs it.
        """
        entry = self.cache.get(scanned[0])
        kind = entry[KIND] if entry is not None else "icann"
        log_query(client, transport, data, scanned[1], reply, kind, "hit")

    def inflight(self) -> list[asyncio.Future[Entry | None]]:
        """Upstream fetches in progress (for a graceful drain)."""
        return self.fetches.pending()

    async def resolve_admitted(self, data: bytes, client: ClientInfo,
                               max_size: int) -> bytes | None:
        """Everything after policy and the hot path (the slow path)."""
        try:
            q = wire.parse_query(data)
        except wire.Drop:
            self.metrics.dropped.labels("malformed").inc()
            return None
        except wire.BadQuery as exc:
            reply = wire.error_for(data, exc)
            if self.debug and exc.qend:
                log_query(client.ip, client.transport, data, exc.qend, reply, "malformed",
                               "-")
            self.tally.cell(client.transport, exc.rcode, "malformed")[0] += 1   # BADVERS: 16
            return reply
        limit = reply_limit(client.transport, edns_size(q), max_size)
        entry = self.cache.get(q.key) if self.debug else None
        fresh = entry is not None and self.now() < entry[EXPIRES]
        try:
            reply, kind = await self._answer(q, client, limit)
        except Exception:
            _log.exception("query_failed", client=client.ip, qname=q.qname, qtype=q.qtype)
            reply, kind = error(q, wire.SERVFAIL), "error"
        if self.debug:
            cache = "-" if kind not in ("icann", "pkarr") else "hit" if fresh else "miss"
            log_query(client.ip, client.transport, data, q.qend, reply, kind, cache)
        return self._count(client.transport, reply, kind)

    async def resolve_icann(self, qname: str, qtype: int) -> dnslib.DNSRecord:
        """ICANN lookup through cache + forwarder, as a dnslib record (rcode set on failure)."""
        packet = wire.build_query(self._rng.getrandbits(16), wire.name_wire(qname.lower()),
                                  qtype, wire.C_IN, False, False)
        q = wire.parse_query(packet)
        reply = await self._icann(q, STREAM_MAX)
        return dnslib.DNSRecord.parse(reply)

    async def query_server(self, addr: HostPort, query: dnslib.DNSRecord) -> dnslib.DNSRecord:
        """Send ``query`` to one server and return its validated reply."""
        packet = bytes(query.pack())
        reply = await self.forwarder.query_server(addr, packet, self.cfg.dns.upstream_timeout)
        try:
            return dnslib.DNSRecord.parse(reply)
        except Exception as exc:  # dnslib raises assorted types on bad bytes
            raise UpstreamError(f"unparseable reply from {addr[0]}: {exc}") from None

    # ---------------------------------------------------------------- slow path

    async def _answer(self, q: wire.Query, client: ClientInfo, limit: int) -> tuple[bytes, str]:
        decided = policy_reply(q, client.transport, self.cfg.dns.any_minimal)
        if decided is not None:
            return decided
        if self.pkarr is not None and self.pkarr.claims(q.qname):
            return await self._pkarr(self.pkarr, q, client, limit), "pkarr"
        return await self._icann(q, limit), "icann"

    def _hit(self, q: wire.Query, entry: Entry | None, limit: int, now: float) -> bytes | None:
        """The reply from ``entry`` when it is fresh (counted as a hit), else None (a miss)."""
        if entry is None or now >= entry[EXPIRES]:
            self._misses[0] += 1
            return None
        self._hits[0] += 1
        return render(entry, q.wire, q.qend, edns_size(q), q.do, limit, now)

    async def _icann(self, q: wire.Query, limit: int) -> bytes:
        now = self.clock.monotonic()
        entry = self.cache.get(q.key)
        hit = self._hit(q, entry, limit, now)
        if hit is not None:
            return hit
        stale = entry if entry is not None and now < entry[STALE_UNTIL] else None
        fetch = None if self.cache.failing(q.key, now) else self._fetch(q.key)
        if fetch is not None:
            wait = self.cfg.cache.stale_client_timeout if stale is not None else None
            try:
                fresh = await asyncio.wait_for(asyncio.shield(fetch.wait()), wait)
            except TimeoutError:
                fresh = None
            if fresh is not None:
                now = self.clock.monotonic()
                return render(fresh, q.wire, q.qend, edns_size(q), q.do, limit, now)
        if stale is not None:
            self.metrics.stale_served.labels("icann").inc()
            return render(stale, q.wire, q.qend, edns_size(q), q.do, limit, now,
                          stale_ttl=self.cfg.cache.stale_answer_ttl)
        return error(q, wire.SERVFAIL)

    def _fetch(self, key: bytes) -> Fetch | None:
        """The shared upstream fetch for ``key`` (None when too many are in flight)."""
        dns = self.cfg.dns
        return self.fetches.get(key, dns.query_deadline - _DEADLINE_MARGIN, dns.max_inflight)

    async def _pkarr(self, handler: PkarrHandler, q: wire.Query, client: ClientInfo,
                     limit: int) -> bytes:
        hit = self._hit(q, self.cache.get(q.key), limit, self.clock.monotonic())
        if hit is not None:
            return hit
        info = await ask(handler, q, client.ip, self.cfg.dns.query_deadline - _DEADLINE_MARGIN)
        if isinstance(info, bytes):
            return info
        now = self.clock.monotonic()
        fresh = self.cache.store(q.key, info, now, kind="pkarr")
        return render(fresh, q.wire, q.qend, edns_size(q), q.do, limit, now)

    def _count(self, transport: str, reply: bytes, kind: str) -> bytes:
        self.tally.cell(transport, reply[3] & 0x0F, kind)[0] += 1
        return reply


__all__ = ["ClientInfo", "PkarrHandler", "Resolver", "STREAM_MAX"]
