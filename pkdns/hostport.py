"""``host:port`` addresses: the one parser and printer for config files and flags.

Kept apart from :mod:`pkdns.config` (whose dataclasses cost a cold command ~20 ms of
imports): ``pkdns resolve --bootstrap HOST:PORT`` parses its flags with these alone.
"""

from __future__ import annotations

import ipaddress
import re

HostPort = tuple[str, int]

DNS_PORT = 53


def parse_hostport(text: str, default_port: int | None = None) -> HostPort:
    """``1.2.3.4:53``, ``[::1]:53``, ``name:53`` (or bare host with ``default_port``).

    Errors say what was probably meant: a port alone (``5353``), an IPv6 address with a port
    but without brackets (``::1:53``, which is itself a valid address), a missing port.
    """
    text = text.strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.%\w]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text)
    if not m:
        raise ValueError(_hostport_hint(text))
    host = m.group(1) or m.group(3)
    port_s = m.group(2) or m.group(4)
    if port_s is None and host.isdigit():
        raise ValueError(f"{text!r} is a port alone: give HOST:PORT, e.g. 127.0.0.1:{text}")
    if port_s is None:
        if default_port is None:
            raise ValueError(f"missing port in {text!r}: give HOST:PORT")
        port = default_port
    else:
        port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return (host, port)


def _hostport_hint(text: str) -> str:
    """The message for text that is not ``HOST[:PORT]``, with the bracket form when it helps."""
    if text.count(":") >= 2 and "[" not in text:
        head, _, tail = text.rpartition(":")
        if tail.isdigit() and is_ip_text(head):
            return (f"not HOST:PORT: {text!r}; an IPv6 address with a port is written in "
                    f"brackets: [{head}]:{tail}")
    if is_ip_text(text):
        return f"not HOST:PORT: {text!r}; an IPv6 address is written in brackets: [{text}]:53"
    return f"not HOST:PORT: {text!r}"


def is_ip_text(text: str) -> bool:
    """Is ``text`` an IPv4 or IPv6 literal (no brackets, no port)?"""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_ip_hostport(text: str, default_port: int | None = None) -> HostPort:
    """:func:`parse_hostport` for addresses we bind or send to: the host must be an IP literal.

    A host name there would need a resolver lookup at bind time or, for upstreams, a blocking
    ``getaddrinfo`` per forwarded query, through the very resolver pkdns may be replacing.
    """
    host, port = parse_hostport(text, default_port)
    if not is_ip_text(host):
        raise ValueError(f"{host!r} is not an IP address (host names are not allowed here)")
    return (host, port)


def format_hostport(addr: HostPort) -> str:
    """Inverse of :func:`parse_hostport`."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
