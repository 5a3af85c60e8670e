"""Zone text of a signed packet's records (dnslib RRs), names relative to the key.

:func:`pkdns.pkarr.zone.records_to_text` prints every type through dnspython, whose first
import costs a cold ``pkdns resolve`` 0.05-0.1 s of CPU: a fifth of its run, spent while the
lookup competes with it for the interpreter. The types pkarr zones hold (A, AAAA, CNAME, NS,
PTR, MX, TXT) are printed here as dnspython prints them, character for character (a test
compares the two on random records); any other record, a class other than IN, or a name
with characters dnspython escapes goes through dnspython, loaded only then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import dnslib

_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_*-]+")
"""Labels dnspython prints unescaped (it escapes ``"().;\\@$``, spaces and non-ASCII)."""
_IN = 1


def records_to_text(records: Iterable[Any], origin_z32: str) -> str:
    """Zone text of dnslib ``records``: ``owner ttl IN TYPE data`` lines, ``@`` the apex."""
    origin = tuple(origin_z32.lower().encode().split(b"."))
    return "".join(_line(rr, origin) or _through_dnspython(rr, origin_z32) for rr in records)


def _line(rr: Any, origin: tuple[bytes, ...]) -> str | None:
    """The record's line, or None when dnspython must print it."""
    rdtype, render = _RENDER.get(rr.rtype, (None, None))
    owner = _name(rr.rname, origin)
    if render is None or type(rr.rdata) is not rdtype or rr.rclass != _IN or owner is None:
        return None
    data = render(rr.rdata, origin)
    return None if data is None else f"{owner} {rr.ttl} IN {_TYPE_NAMES[rr.rtype]} {data}\n"


def _through_dnspython(rr: Any, origin_z32: str) -> str:
    from pkdns.pkarr.zone import records_to_text as dnspython_text

    return dnspython_text([rr], origin_z32)


def _name(name: Any, origin: tuple[bytes, ...]) -> str | None:
    """dnspython's text of ``name`` relative to ``origin`` (``@`` for the origin itself, an
    absolute name with its final dot outside it); None for labels it would escape."""
    labels: tuple[bytes, ...] = tuple(name.label)
    if not all(_PLAIN_LABEL.fullmatch(label) for label in labels):
        return None
    cut = len(labels) - len(origin)
    if cut >= 0 and tuple(label.lower() for label in labels[cut:]) == origin:
        return b".".join(labels[:cut]).decode() or "@"
    return b".".join(labels).decode() + "."


def _a(rd: Any, origin: tuple[bytes, ...]) -> str:
    return ".".join(map(str, rd.data))


def _aaaa(rd: Any, origin: tuple[bytes, ...]) -> str:
    """dnspython's ``dns.ipv6.inet_ntoa``: the longest run of two or more zero groups
    (the first of equal runs) becomes ``::``; ``::a.b.c.d`` and ``::ffff:a.b.c.d`` forms."""
    raw = bytes(rd.data)
    groups = [format(int.from_bytes(raw[i:i + 2], "big"), "x") for i in range(0, 16, 2)]
    best_start, best_len, start = 0, 0, -1
    for i, group in enumerate([*groups, "end"]):
        if group == "0" and start < 0:
            start = i
        elif group != "0" and start >= 0:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = -1
    if best_len <= 1:
        return ":".join(groups)
    if best_start == 0 and (best_len == 6 or (best_len == 5 and groups[5] == "ffff")):
        prefix = "::" if best_len == 6 else "::ffff:"
        return prefix + ".".join(map(str, raw[12:]))
    return ":".join(groups[:best_start]) + "::" + ":".join(groups[best_start + best_len:])


def _target(rd: Any, origin: tuple[bytes, ...]) -> str | None:
    return _name(rd.label, origin)


def _mx(rd: Any, origin: tuple[bytes, ...]) -> str | None:
    exchange = _name(rd.label, origin)
    return None if exchange is None else f"{rd.preference} {exchange}"


def _txt(rd: Any, origin: tuple[bytes, ...]) -> str | None:
    """Each string quoted; ``"`` and ``\\`` backslashed, bytes outside printable ASCII
    as ``\\DDD``. dnspython refuses a TXT without strings: so does the fallback."""
    if not rd.data:
        return None
    return " ".join(f'"{_quoted(bytes(s))}"' for s in rd.data)


def _quoted(s: bytes) -> str:
    return "".join("\\" + chr(c) if c in b'"\\' else chr(c) if 0x20 <= c < 0x7F
                   else f"\\{c:03d}" for c in s)


_Render = Callable[[Any, tuple[bytes, ...]], str | None]
_RENDER: dict[int, tuple[type, _Render]] = {
    1: (dnslib.A, _a), 2: (dnslib.NS, _target), 5: (dnslib.CNAME, _target),
    12: (dnslib.PTR, _target), 15: (dnslib.MX, _mx), 16: (dnslib.TXT, _txt),
    28: (dnslib.AAAA, _aaaa),
}
"""RR type -> the dnslib class its rdata parses to, and its printer (RFC 1035 §3.3,
RFC 3596 for AAAA)."""
_TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA"}
