"""Is an upstream down, or is only a name slow? Server round-trip state apart from names' fate.

Why: a forwarder learns nothing but "this attempt got a reply or not". A recursive upstream
that cannot reach a zone's servers stays silent for that zone's names (or answers SERVFAIL
seconds later) while it answers everything else at once. Counting those silences against the
upstream let one client, at 5 queries a second for random names under such a zone, get the
upstream marked down -- and every other client's uncached names then failed. So:

* **Silence counts only when the server said nothing at all.** Every reply bumps the server's
  ``answers``; an attempt notes that number when it is sent, and when it times out the
  exchange asks :meth:`Server.answered_since`. If the server answered anything meanwhile, it is
  up and only the name is slow: the attempt does not count (Unbound's view too: a server's
  timeouts only build up while it answers nothing).
* **A dead server is silent about more than one zone.** The silent attempts must span at least
  two zones (a zone here is the name's last two labels: a forwarder knows no zone cuts, and
  random names under one domain share them) -- or include a hard error (ICMP port unreachable,
  a send that failed). One slow domain alone never takes the upstream down, even when it is
  the only traffic.
* **When down**, an upstream gets one query as a probe after 1 s, then after 2, 4, 8 s, and
  no other query (so a dead upstream sees at most one query per second from us); a query
  fails at once when every upstream is down (serve-stale still answers cached names). A name
  under a zone that already went silent proves nothing as a probe, so it may probe only once
  a probe is :data:`PROBE_MAX` overdue: the probes go to other names first. Any reply, even
  an error rcode, brings the upstream back. Forged datagrams count neither way (PowerDNS
  advisory 2023-02).

Pure: every decision takes ``now``; the exchange (:mod:`pkdns.dns.exchange`) reports events.
"""

from __future__ import annotations

from pkdns import log
from pkdns.config import HostPort, format_hostport

_log = log.get("forwarder")
DOWN_AFTER = 8          # silent attempts (see the module docstring) before an upstream is down
PROBE_FIRST = 1.0       # seconds from "down" to the first probe; doubled after each one
PROBE_MAX = 8.0
_MAX_ZONES = 16         # zones remembered per silent server (only "two or more" and probes)


def zone_of(question: bytes) -> bytes:
    """The last two labels of the wire name at the start of ``question`` (lowercased wire
    qname, qtype, qclass): the bucket silent names are sorted into. The whole name if shorter."""
    i, end, before, last = 0, len(question), 0, 0
    while i < end:
        n = question[i]
        if not n:
            return question[before:i + 1]
        before, last = last, i
        i += n + 1
    return question


class Server:
    """One upstream's round-trip state; see the module docstring.

    ``answers`` counts its replies (any rcode) for :meth:`answered_since`; ``silent`` the
    attempts since its last reply that it left unanswered; ``zones`` their zones, ``hard``
    whether one of them was an outright error. ``probe_at`` is when a down server may get its
    next probe (0: up).
    """

    __slots__ = ("addr", "answers", "silent", "zones", "hard", "probe_at", "backoff")

    def __init__(self, addr: HostPort) -> None:
        self.addr = addr
        self.answers = 0
        self.silent = 0
        self.zones: set[bytes] = set()
        self.hard = False
        self.probe_at = 0.0
        self.backoff = 0.0

    def answered_since(self, mark: int) -> bool:
        """Did this server reply to anything after ``answers`` was ``mark``?"""
        return self.answers != mark


class Health:
    """Which upstreams answer at all; pure (callers pass ``now``). See the module docstring.

    ``down`` maps each down upstream to its :class:`Server`; it is usually empty, so the
    exchange's check (``if health.down``) costs one truth test.
    """

    def __init__(self) -> None:
        self.servers: dict[HostPort, Server] = {}
        self.down: dict[HostPort, Server] = {}

    def server(self, addr: HostPort) -> Server:
        """The state of ``addr`` (made on first use)."""
        srv = self.servers.get(addr)
        if srv is None:
            srv = self.servers[addr] = Server(addr)
        return srv

    def silent_attempts(self, addr: HostPort) -> int:
        """How many attempts ``addr`` left unanswered since its last reply (see
        :meth:`no_reply`); 0 for an upstream not asked yet."""
        srv = self.servers.get(addr)
        return 0 if srv is None else srv.silent

    def no_reply(self, srv: Server, question: bytes | None, now: float) -> None:
        """An attempt to ``srv`` went unanswered while the server answered nothing else
        (the caller checked :meth:`Server.answered_since`). ``question`` is the attempt's
        (lowercased) question; None for a hard error: refused, or the send failed."""
        srv.silent += 1
        if question is None:
            srv.hard = True
        elif len(srv.zones) < _MAX_ZONES:
            srv.zones.add(zone_of(question))
        if (srv.silent >= DOWN_AFTER and (srv.hard or len(srv.zones) >= 2)
                and srv.addr not in self.down):
            srv.backoff = PROBE_FIRST
            srv.probe_at = now + PROBE_FIRST
            self.down[srv.addr] = srv
            _log.warning("upstream_down", upstream=format_hostport(srv.addr),
                         attempts=srv.silent, zones=len(srv.zones))

    def replied(self, srv: Server) -> None:
        """``srv`` answered (any rcode): it is up. ``answers`` is bumped by the caller on the
        hot path; this clears the silence (call it when ``srv.silent`` is set)."""
        srv.silent = 0
        srv.zones.clear()
        srv.hard = False
        if self.down.pop(srv.addr, None) is not None:
            srv.probe_at = 0.0
            _log.info("upstream_up", upstream=format_hostport(srv.addr))

    def may_use(self, addr: HostPort, question: bytes, now: float) -> bool:
        """May ``question`` go to ``addr`` now? For a down upstream, True once per probe time
        (the next probe is then set, the wait doubled up to :data:`PROBE_MAX`); a question
        under a zone that went silent only when the probe is :data:`PROBE_MAX` overdue."""
        srv = self.down.get(addr)
        if srv is None:
            return True
        if now < srv.probe_at:
            return False
        if now < srv.probe_at + PROBE_MAX and srv.zones and zone_of(question) in srv.zones:
            return False
        srv.backoff = min(srv.backoff * 2, PROBE_MAX)
        srv.probe_at = now + srv.backoff
        return True
