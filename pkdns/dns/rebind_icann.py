"""The rebinding filter for ICANN answers (``dns.rebind_protection``, off by default).

Applied where an upstream reply enters the answer cache (:class:`pkdns.dns.fetch.Fetches`
calls the guard before storing), never on a cache hit: the cache only ever holds filtered
replies, so a hit costs what it costs without the option. The check walks the TTL offsets
:func:`pkdns.dns.reply.inspect_reply` already found (A/AAAA RDATA and HTTPS/SVCB hints sit
next to them), so a reply with nothing to remove is returned as it is; only a reply with a
blocked address is re-parsed (dnslib), cut (:func:`pkdns.dns.rebind.filter_message`) and
walked again.

A client then gets the rest of the reply: the other addresses, the CNAME chain. When no
record of the asked type is left it is a NOERROR/NODATA answer without an SOA (we do not
know the zone's): RFC 2308 §5 leaves such an answer uncached, so each later query asks the
upstream again and is filtered again, and a downstream cache does not hold it either.

Exempt: names under ``dns.rebind_allow`` (e.g. ``lan``, ``home.arpa``, a corporate domain
whose names are meant to resolve to internal addresses; dnsmasq's ``--rebind-domain-ok``).
"""

from __future__ import annotations

from collections.abc import Iterable

import dnslib

from pkdns.dns import rebind, wire
from pkdns.dns.reply import ReplyInfo, inspect_reply
from pkdns.errors import DecodeError
from pkdns.metrics import Metrics


def suspicious(info: ReplyInfo) -> bool:
    """Does the reply hold an address (or an HTTPS/SVCB hint) :mod:`rebind` blocks?

    Reads the record type and RDATA around each TTL offset (bounds already checked by the
    walk that found them).
    """
    data, qend = info.wire, info.qend
    for off in info.offsets:
        at = qend + off                                # the TTL field
        rtype = (data[at - 4] << 8) | data[at - 3]
        if rtype != rebind.T_A and rtype != rebind.T_AAAA and rtype != rebind.T_HTTPS \
                and rtype != rebind.T_SVCB:
            continue
        size = (data[at + 4] << 8) | data[at + 5]
        rdata = data[at + 6:at + 6 + size]
        if rtype == rebind.T_A or rtype == rebind.T_AAAA:
            if rebind.blocked_packed(rdata):
                return True
        elif _hint_blocked(rdata):
            return True
    return False


def _hint_blocked(rdata: bytes) -> bool:
    split = rebind.svcb_params(rdata)
    return split is not None and rebind.clean_hints(split[1])[1] > 0


class IcannGuard:
    """``guard(key, info) -> info``: the reply to cache for cache key ``key``."""

    def __init__(self, allow: Iterable[str], metrics: Metrics | None = None) -> None:
        self.allow = tuple(d.strip(".").lower() for d in allow if d.strip("."))
        self.metrics = metrics

    def exempt(self, qname: str) -> bool:
        """Is ``qname`` (lowercase, no trailing dot) at or under an allowed domain?"""
        return any(qname == d or qname.endswith("." + d) for d in self.allow)

    def __call__(self, key: bytes, info: ReplyInfo) -> ReplyInfo:
        if not suspicious(info):
            return info
        qname = wire.name_text(key[:-5]).rstrip(".").lower()
        if self.exempt(qname):
            return info
        try:
            msg = dnslib.DNSRecord.parse(info.wire)
        except Exception:    # dnslib raises assorted types; the walk accepted it, so rare
            raise DecodeError("reply with a blocked address does not parse") from None
        removed = rebind.filter_message(msg)
        qtype = (key[-5] << 8) | key[-4]
        emptied = not rebind.answers_type(msg, qtype)
        if self.metrics is not None:
            self.metrics.rebind_filtered.labels("icann").inc(removed)
            if emptied:
                self.metrics.rebind_emptied.labels("icann").inc()
        return inspect_reply(bytes(msg.pack()))


__all__ = ["IcannGuard", "suspicious"]
