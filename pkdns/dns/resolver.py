"""The resolver: the one door for every query, and the slow path behind it.

Every transport calls ``Resolver.handle`` (the compiled :meth:`pkdns.dns.door.Door.handle`)
with the query bytes, the client address and its :class:`~pkdns.dns.door.Port`, and gets the
reply bytes back or None (dropped, or the answer comes later through ``port.send``). The door
runs policy (ACL, rate limit), the memo and cache hit path, the ladder, the query policy and
the callback miss path; what is left comes back here as one coroutine per query
(:meth:`Resolver._later`):

* pkarr names (``PkarrHandler.claims``) -> the handler (:mod:`pkdns.answer.seam`);
* everything else -> cache, else one coalesced upstream fetch (stored in the cache by the fetch
  itself, so a late reply still fills the cache, as Unbound does), with serve-stale (RFC 8767)
  when the upstream fails or is slower than ``stale_client_timeout``, else SERVFAIL by
  ``query_deadline``. Failures are remembered for 5 s (RFC 9520) so clients don't queue up.

Every outcome is one rcode; an unexpected exception becomes SERVFAIL and is logged, so nothing
a client sends can escape. UDP replies are sized to the client's EDNS payload (512 without
EDNS, capped at the port's ``max_size``) with TC=1 when they do not fit; TCP/DoH pass 65535.
:meth:`Resolver.resolve` is the same door for a caller that awaits its answer (DoH).

ICANN names are :attr:`Resolver.icann`'s (:class:`pkdns.dns.icann.IcannPath`), which is also
the pkarr side's way to ICANN names (CNAME targets outside pkarr, NS delegation): the pkarr
handler holds that object, not the resolver.

Plain Python (setup.py compiles only the byte-level modules the door uses): this is waiting
and orchestration, not per-byte work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pkdns import log
from pkdns.answer.seam import PkarrHandler, ask
from pkdns.clock import Clock
from pkdns.config import Config
from pkdns.dns import wire
from pkdns.dns.cache import EXPIRES, WireCache, render
from pkdns.dns.door import Door, Job, Port
from pkdns.dns.fetch import Fetches
from pkdns.dns.forwarder import Forwarder
from pkdns.dns.icann import STREAM_MAX, IcannPath
from pkdns.dns.querypolicy import edns_size, error, reply_limit
from pkdns.dns.rebind_icann import IcannGuard
from pkdns.dns.tally import Tally, log_query
from pkdns.metrics import Metrics

_log = log.get("resolver")


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who asked, and over what (``udp``, ``tcp`` or ``doh``)."""

    ip: str
    transport: str


class Resolver:
    """The door (policy, cache, the callback miss path) and the slow path behind it."""

    def __init__(self, cfg: Config, cache: WireCache, forwarder: Forwarder, clock: Clock,
                 metrics: Metrics, pkarr: PkarrHandler | None = None) -> None:
        self.cache, self.forwarder = cache, forwarder
        self.clock, self.metrics = clock, metrics
        self.fetches = Fetches(cache, forwarder, metrics, clock)
        if cfg.dns.rebind_protection:        # filters on insert: hits never pay for it
            self.fetches.guard = IcannGuard(cfg.dns.rebind_allow, metrics)
        self.tally = Tally(metrics)
        self._hits, self._misses = self.tally.hits, self.tally.misses
        self.door = Door(cfg, cache, self.fetches, self.tally, metrics, clock, self._later)
        self.handle = self.door.handle
        """The one entry point: :meth:`pkdns.dns.door.Door.handle`."""
        self.icann = IcannPath(cfg, cache, self.door.fetch, forwarder, clock, metrics, self.tally)
        self._pkarr: PkarrHandler | None = None
        self.pkarr = pkarr
        self._jobs: set[asyncio.Task[None]] = set()

    @property
    def pkarr(self) -> PkarrHandler | None:
        """The pkarr side: the names it claims skip the callback miss path."""
        return self._pkarr

    @pkarr.setter
    def pkarr(self, handler: PkarrHandler | None) -> None:
        self._pkarr = handler
        self.door.claims = handler.claims if handler is not None else None

    live = ("log.level", "dns.allow", "dns.rate_limit", "dns.rate_limit_burst",
            "dns.forwarders", "dns.any_minimal", "dns.query_deadline", "dns.max_inflight")
    """Options the door applies on reload (:class:`pkdns.reload.Live`); the ICANN path
    (:attr:`icann`) applies its own."""

    def reconfigure(self, old: Config, cfg: Config) -> None:
        """Apply the live options of ``cfg`` (reload; ``old`` is the running configuration)."""
        self.door.configure(old, cfg)

    async def resolve(self, data: bytes, client: ClientInfo, max_size: int) -> bytes | None:
        """The door for a caller that awaits the answer (DoH): the reply to ``data`` from
        ``client``, or None when it is dropped. Never raises."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        def send(reply: bytes, _dest: object) -> None:
            if not answer.done():
                answer.set_result(reply)

        port = Port(client.transport, max_size, send, self._start)
        reply = self.handle(data, client.ip, port, None)
        if reply is not None:
            return reply
        if answer.done():   # the miss ended inside handle (no upstream could be tried)
            return answer.result()
        return await answer if port.held else None

    def _start(self, job: Job) -> bool:
        task = asyncio.get_running_loop().create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return True

    async def close(self) -> None:
        """End what the transports share, once every one of them has drained (the daemon's
        final stop): the upstream fetches still running (whoever waits gets SERVFAIL or a
        stale answer) and the slow-path jobs of awaited queries (DoH) still running. A
        transport's drain never ends these: a UDP, a TCP and a DoH query may wait on one."""
        self.fetches.close()
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    # ---------------------------------------------------------------- slow path

    async def _later(self, q: wire.Query, ip: str, port: Port, dest: Any) -> None:
        """A query the door did not answer at once: answer it, then ``port.send`` it."""
        transport = port.transport
        try:
            limit = reply_limit(transport, edns_size(q), port.max_size)
            debug = self.door.debug
            entry = self.cache.get(q.key) if debug else None
            fresh = entry is not None and self.clock.monotonic() < entry[EXPIRES]
            try:
                reply, kind = await self._answer(q, ip, limit)
            except Exception:
                _log.exception("query_failed", client=ip, qname=q.qname, qtype=q.qtype)
                reply, kind = error(q, wire.SERVFAIL), "error"
            if debug:
                cache = "-" if kind not in ("icann", "pkarr") else "hit" if fresh else "miss"
                log_query(ip, transport, q.wire, q.qend, reply, kind, cache)
            self.door.count(transport, reply, kind)
        finally:
            port.held -= 1
        port.send(reply, dest)

    async def _answer(self, q: wire.Query, ip: str, limit: int) -> tuple[bytes, str]:
        if self._pkarr is not None and self._pkarr.claims(q.qname):
            return await self._pkarr_answer(self._pkarr, q, ip, limit), "pkarr"
        return await self.icann.answer(q, limit), "icann"

    async def _pkarr_answer(self, handler: PkarrHandler, q: wire.Query, ip: str,
                            limit: int) -> bytes:
        hit = self.icann.hit(q, self.cache.get(q.key), limit, self.clock.monotonic())
        if hit is not None:
            return hit
        info = await ask(handler, q, ip, self.door.budget)
        if isinstance(info, bytes):
            return info
        now = self.clock.monotonic()
        fresh = self.cache.store(q.key, info, now, kind="pkarr")
        return render(fresh, q.wire, q.qend, edns_size(q), q.do, limit, now)


__all__ = ["ClientInfo", "PkarrHandler", "Port", "Resolver", "STREAM_MAX"]
