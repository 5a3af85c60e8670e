"""Which parsed queries the resolver answers by itself, and how big a reply may be.

Why a module of its own: the callback miss path (``Door._miss``) and the slow path
(``Door._parsed`` and the resolver behind it) must agree on exactly which queries never reach
the cache, the pkarr handler or an upstream, and on the reply size limit; one pure copy of
those rules (no state, nothing to reload) keeps the two paths from drifting apart.

The rules, checked after the ladder (:func:`pkdns.dns.wire.parse_query`):

* class != IN -> REFUSED (so CH ``version.bind`` leaks nothing);
* qtype 0 -> FORMERR; meta qtypes 128-254 (AXFR, IXFR, MAILB, ...) -> REFUSED;
* ANY (with ``dns.any_minimal``) -> RFC 8482 §4.2: one synthesized HINFO over TCP/DoH, and
  over UDP an empty TC=1 (reply size = query size, as PowerDNS ``any_to_tcp``: even the HINFO
  would amplify a short query more than 1.5x, the most we let an ANY reply grow).
"""

from __future__ import annotations

from pkdns.dns import wire

UDP_DEFAULT = 512   # the UDP reply limit without EDNS (RFC 1035 §4.2.1)


def special_qtype(qtype: int) -> bool:
    """qtype 0, the meta types and ANY: :func:`policy_reply` may answer them itself."""
    return qtype == 0 or 128 <= qtype <= 255


def reply_limit(transport: str, edns_size: int, max_size: int) -> int:
    """The largest reply for ``transport``: TCP/DoH ``max_size``; UDP the client's EDNS
    payload size capped at ``max_size``, or 512 without EDNS (``edns_size`` 0)."""
    if transport != "udp":
        return max_size
    return min(edns_size, max_size) if edns_size else UDP_DEFAULT


def edns_size(q: wire.Query) -> int:
    """The query's EDNS payload size, 0 without an OPT (as :func:`wire.scan` reports it)."""
    return q.udp_size if q.edns else 0


def error(q: wire.Query, rcode: int) -> bytes:
    """An answerless reply to ``q`` with ``rcode`` (with an OPT when the query had one)."""
    return wire.error_reply(q.wire, rcode, q.qend, q.edns, q.do)


def policy_reply(q: wire.Query, transport: str, any_minimal: bool) -> tuple[bytes, str] | None:
    """The reply and its kind (``policy``/``any``) when policy answers ``q``; else None."""
    if q.qclass != wire.C_IN or 128 <= q.qtype < wire.T_ANY:
        return error(q, wire.REFUSED), "policy"
    if q.qtype == 0:
        return error(q, wire.FORMERR), "policy"
    if q.qtype == wire.T_ANY and any_minimal:
        if transport == "udp":       # no amplification at all: retry over TCP
            return wire.refusal(q.wire, 0, tc=True), "any"
        return wire.hinfo_any_reply(q), "any"
    return None
