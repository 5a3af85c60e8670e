"""The one door every DNS query comes through: query bytes and a client in, reply bytes out.

``Door.handle(data, ip, port, dest)`` is called by every transport (UDP, TCP, DoH) for every
query, and runs, in order:

1. drop obvious junk (< 12 bytes, QR=1: a reply to nobody);
2. policy, once per query: the ACL (REFUSED) and the per-client rate limit (UDP: every 2nd
   over-limit query gets an empty TC=1 and the rest are dropped, and the port's ``shed`` hook
   has the C reader drop that address's datagrams until it has a token again; TCP and DoH:
   REFUSED);
3. the hit path: the port's :class:`~pkdns.dns.cache.ReplyMemo` (a query byte-identical to an
   earlier one within the same TTL second: one dict lookup), else :func:`wire.scan` and a fresh
   cache entry rendered from the bytes alone (which then fills the memo);
4. the miss path without a coroutine: a plain ICANN query with no stale entry joins the key's
   upstream fetch (:mod:`pkdns.dns.fetch`) with a callback that renders the reply and hands it
   to ``port.send(reply, dest)``;
5. everything else is parsed here (the ladder, :func:`wire.parse_query`: drop / FORMERR /
   NOTIMP / BADVERS) and checked against the query policy (:mod:`pkdns.dns.querypolicy`); what
   is left (pkarr names, queries with a stale entry to fall back on, unusual questions) becomes
   a job, the coroutine ``later(query, ip, port, dest)`` that the resolver
   (:class:`pkdns.dns.resolver.Resolver`) supplies, started by ``port.start``.

The return value is the reply to send now, or None: nothing now. Then either the query was
dropped, or its answer comes later through ``port.send``; ``port.held`` counts those answers
still to come (the TCP pipeline limit and a drain use it).

Why one compiled module: this is the code a cache hit runs, and a miss until its upstream
query is sent (setup.py compiles it with mypyc). It holds no sockets and reads the time through
``now``; the transports own the I/O and the resolver the waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from pkdns import log
from pkdns.answer.names import KEY_LABEL_LEN
from pkdns.clock import Clock
from pkdns.config import Config
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
from pkdns.dns.querypolicy import policy_reply, reply_limit, special_qtype
from pkdns.dns.ratelimit import RateLimiter, Verdict
from pkdns.dns.tally import Tally, log_query
from pkdns.metrics import Metrics

_log = log.get("resolver")
DEADLINE_MARGIN = 0.1       # answer SERVFAIL this much before query_deadline

Job = Coroutine[Any, Any, None]


class Port:
    """One transport's side of the door: how big its replies may be and how late ones go back.

    * ``transport``: ``udp``, ``tcp`` or ``doh`` (counters, reply size rules, rate-limit answers);
    * ``max_size``: the reply cap (UDP: ``dns.udp_payload_max``; streams 65535);
    * ``send(reply, dest)``: an answer that was not ready at once (``dest`` is what the
      transport passed to :meth:`Door.handle`, e.g. the UDP client address);
    * ``start(job)``: run a slow-path job as the transport's own task; False when it has no
      room for it (the query is then dropped);
    * ``memo``: the transport's memo of finished replies (UDP listeners), or None;
    * ``shed(ip, seconds)``: drop ``ip``'s datagrams for that long before they are read (the
      UDP listener's C reader), or None;
    * ``held``: answers still to come through ``send``.
    """

    def __init__(self, transport: str, max_size: int, send: Callable[[bytes, Any], None],
                 start: Callable[[Job], bool], memo: ReplyMemo | None = None,
                 shed: Callable[[str, float], None] | None = None) -> None:
        self.transport, self.max_size, self.send, self.start = transport, max_size, send, start
        self.memo, self.shed = memo, shed
        self.held = 0


Later = Callable[[wire.Query, str, Port, Any], Job]
"""The resolver's slow path for one parsed query; it ends in ``port.send`` (see Door)."""


class _Asker:
    """A query on the miss path waiting for its fetch: what :meth:`Door._deliver` needs.

    One object with a bound method as the fetch's waiter, instead of a partial per query
    (cheaper to make and to call once compiled).
    """

    __slots__ = ("door", "data", "qend", "size", "do", "limit", "ip", "port", "dest")

    def __init__(self, door: Door, data: bytes, qend: int, size: int, do: bool, limit: int,
                 ip: str, port: Port, dest: Any) -> None:
        self.door, self.data, self.qend, self.size, self.do = door, data, qend, size, do
        self.limit, self.ip, self.port, self.dest = limit, ip, port, dest

    def deliver(self, entry: Entry | None) -> None:
        """Render ``entry`` (None: SERVFAIL) for this query and send it."""
        self.door._deliver(self, entry)


class Door:
    """Policy, memo, cache and the callback miss path in front of the resolver."""

    def __init__(self, cfg: Config, cache: WireCache, fetches: Fetches, tally: Tally,
                 metrics: Metrics, clock: Clock, later: Later) -> None:
        self.cache, self.fetches, self.tally, self.metrics = cache, fetches, tally, metrics
        self.now = clock.monotonic
        self.later = later
        self.claims: Callable[[str], bool] | None = None   # the pkarr side's name test
        self._misses = tally.misses
        self._malformed = metrics.dropped.labels("malformed")
        self._acl_dropped = metrics.dropped.labels("acl")
        self._suffix = cfg.pkarr.tld_suffix.encode()
        self.acl = Acl(cfg.dns.allow)
        self.limiter = RateLimiter(cfg.dns.rate_limit, cfg.dns.rate_limit_burst,
                                   shared=cfg.dns.forwarders)
        self.debug = False
        self.any_minimal = True
        self.budget = 0.0
        self.max_inflight = 0
        self.configure(cfg, cfg)

    def configure(self, old: Config, cfg: Config) -> None:
        """Apply the live options of ``cfg`` (at start, and on reload with the running
        ``old``): the ACL and rate limiter are rebuilt only when their options changed, so a
        reload keeps every client's tokens."""
        dns = cfg.dns
        if dns.allow != old.dns.allow:
            self.acl = Acl(dns.allow)
        if (dns.rate_limit, dns.rate_limit_burst, dns.forwarders) != (
                old.dns.rate_limit, old.dns.rate_limit_burst, old.dns.forwarders):
            self.limiter = RateLimiter(dns.rate_limit, dns.rate_limit_burst,
                                       shared=dns.forwarders)
        self.debug = cfg.log.level == "debug"
        self.any_minimal = dns.any_minimal
        self.budget = dns.query_deadline - DEADLINE_MARGIN
        self.max_inflight = dns.max_inflight

    # ---------------------------------------------------------------- the door

    def handle(self, data: bytes, ip: str, port: Port, dest: Any) -> bytes | None:
        """The reply to ``data`` from ``ip`` now, or None (see the module docstring).
        Never raises: an unexpected error drops the query and is logged."""
        if len(data) < 12 or data[2] & 0x80:
            self._malformed.inc()
            return None
        if not self.acl.allowed(ip):
            self._acl_dropped.inc()
            return self._count(port.transport, wire.refusal(data, wire.REFUSED), "policy")
        if self.limiter.rate:
            now = self.now()
            verdict = self.limiter.check(ip, now)
            if verdict is not Verdict.PASS:
                return self._limited(data, ip, port, verdict, now)
        memo = port.memo
        if memo is not None and not self.debug:
            found = memo.get(data[2:])
            if found is not None and self.now() < found[0]:
                found[2][0] += 1
                return data[:2] + found[1]
        try:
            scanned = wire.scan(data)
            if scanned is None:
                return self._parsed(data, ip, port, dest)
            reply = self._cached(data, scanned, ip, port)
            if reply is not None:
                return reply
            return self._miss(data, scanned, ip, port, dest)
        except Exception:
            _log.exception("query_failed", client=ip, transport=port.transport)
            return None

    def serve(self, batch: list[tuple[bytes, Any]], port: Port,
              sendto: Callable[[bytes, Any], None]) -> None:
        """:meth:`handle` for a batch of datagrams as a UDP reader gets them, each reply
        sent at once with ``sendto(reply, address)``."""
        for data, addr in batch:
            reply = self.handle(data, addr[0], port, addr)
            if reply is not None:
                sendto(reply, addr)

    # ---------------------------------------------------------------- policy

    def _limited(self, data: bytes, ip: str, port: Port, verdict: Verdict,
                 now: float) -> bytes | None:
        """The answer to a query over the rate limit (see the module docstring)."""
        self.metrics.rate_limited.labels("dns_" + port.transport).inc()
        if port.transport != "udp":
            return self._count(port.transport, wire.refusal(data, wire.REFUSED), "policy")
        shed = port.shed
        if shed is not None:
            wait = self.limiter.refill_in(ip, now)
            if wait > 0.0:
                shed(ip, wait)
        if verdict is Verdict.SLIP:
            return wire.refusal(data, 0, tc=True)
        return None

    # ---------------------------------------------------------------- hits

    def _cached(self, data: bytes, scanned: wire.Scanned, ip: str, port: Port) -> bytes | None:
        """The reply from a fresh cache entry, from the query bytes alone; else None."""
        key, qend, size, do = scanned
        entry = self.cache.get(key)
        if entry is None:
            return None
        now = self.now()
        if now >= entry[EXPIRES]:
            return None
        transport = port.transport
        reply = render(entry, data, qend, size, bool(do),
                       reply_limit(transport, size, port.max_size), now)
        cell = self.tally.cell(transport, reply[3] & 0x0F, entry[KIND], hit=True)
        cell[0] += 1
        if self.debug:          # nothing memoised: every hit reaches this line
            log_query(ip, transport, data, qend, reply, entry[KIND], "hit")
        elif port.memo is not None:
            port.memo.put(data, reply, second_end(entry, now), cell)
        return reply

    # ---------------------------------------------------------------- misses

    def _miss(self, data: bytes, scanned: wire.Scanned, ip: str, port: Port,
              dest: Any) -> bytes | None:
        """A plain ICANN query with no stale entry: join its fetch (the answer comes through
        ``port.send``); anything else goes to :meth:`_parsed`."""
        key, qend, size, do = scanned
        if special_qtype((key[-5] << 8) | key[-4]):     # policy may answer it
            return self._parsed(data, ip, port, dest)
        claims = self.claims
        if claims is not None and self._maybe_pkarr(key[:-5]) \
                and claims(wire.name_text(key[:-5])):
            return self._parsed(data, ip, port, dest)
        now = self.now()
        entry = self.cache.get(key)
        if entry is not None and now < entry[STALE_UNTIL]:
            return self._parsed(data, ip, port, dest)
        self._misses[0] += 1
        limit = reply_limit(port.transport, size, port.max_size)
        fetch = None if self.cache.failing(key, now) else self.fetch(key)
        if fetch is None:
            return self._miss_reply(data, qend, size, bool(do), limit, ip, port.transport, None)
        port.held += 1
        fetch.add(_Asker(self, data, qend, size, bool(do), limit, ip, port, dest).deliver)
        return None

    def fetch(self, key: bytes) -> Fetch | None:
        """The shared upstream fetch for ``key`` (None when too many are in flight)."""
        return self.fetches.get(key, self.budget, self.max_inflight)

    def _maybe_pkarr(self, name: bytes) -> bool:
        """Can the pkarr side claim this wire name? Only when its TLD is a 52-character label
        (a key, :func:`pkdns.answer.names.classify`) or the ``.key``-style suffix; checked on the
        bytes so that ICANN misses skip the text classification."""
        at = wire.last_label_at(name)
        if at < 0:
            return False
        n = name[at]
        suffix = self._suffix
        return n == KEY_LABEL_LEN or (n == len(suffix) and name[at + 1:at + 1 + n] == suffix)

    def _deliver(self, a: _Asker, entry: Entry | None) -> None:
        port = a.port
        port.held -= 1
        port.send(self._miss_reply(a.data, a.qend, a.size, a.do, a.limit, a.ip, port.transport,
                                   entry), a.dest)

    def _miss_reply(self, data: bytes, qend: int, size: int, do: bool, limit: int, ip: str,
                    transport: str, entry: Entry | None) -> bytes:
        """The reply rendered from the fetched ``entry`` (None: SERVFAIL), counted."""
        try:
            if entry is None:
                reply = wire.error_reply(data, wire.SERVFAIL, qend, size > 0, do)
            else:
                reply = render(entry, data, qend, size, do, limit, self.now())
        except Exception:
            _log.exception("query_failed", qname=wire.name_text(data[12:qend - 4]))
            reply = wire.error_reply(data, wire.SERVFAIL, qend, size > 0, do)
        if self.debug:
            log_query(ip, transport, data, qend, reply, "icann", "miss")
        return self._count(transport, reply, "icann")

    # ---------------------------------------------------------------- the rest

    def _parsed(self, data: bytes, ip: str, port: Port, dest: Any) -> bytes | None:
        """The ladder and the query policy; what they do not answer becomes a job."""
        transport = port.transport
        try:
            q = wire.parse_query(data)
        except wire.Drop:
            self._malformed.inc()
            return None
        except wire.BadQuery as exc:
            reply = wire.error_for(data, exc)
            if self.debug and exc.qend:
                log_query(ip, transport, data, exc.qend, reply, "malformed", "-")
            self.tally.cell(transport, exc.rcode, "malformed")[0] += 1   # BADVERS: 16
            return reply
        decided = policy_reply(q, transport, self.any_minimal)
        if decided is not None:
            reply, kind = decided
            if self.debug:
                log_query(ip, transport, data, q.qend, reply, kind, "-")
            return self._count(transport, reply, kind)
        port.held += 1
        if not port.start(self.later(q, ip, port, dest)):
            port.held -= 1
        return None

    def count(self, transport: str, reply: bytes, kind: str) -> bytes:
        """Count ``reply`` (by transport, rcode and kind) and return it."""
        return self._count(transport, reply, kind)

    def _count(self, transport: str, reply: bytes, kind: str) -> bytes:
        self.tally.cell(transport, reply[3] & 0x0F, kind)[0] += 1
        return reply


__all__ = ["DEADLINE_MARGIN", "Door", "Job", "Later", "Port"]
