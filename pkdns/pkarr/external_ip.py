"""Discover this host's external IPv4/IPv6 address for ``{external_ipv4}``/``{external_ipv6}``.

Like pkdns-cli (``cli/src/external_ip``) we ask IP-echo services in random order and take the
first answer that is an address of the wanted family; unlike it we never panic: if every
service fails, one error names each URL and why. The connection itself is forced to the
family, so a dual-stack host reports the address the world sees for that family.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pkdns.errors import PkdnsError

if TYPE_CHECKING:  # imported when used: aiohttp costs ~0.3-1 s of start-up for every CLI
    import aiohttp  # command that only reads a zone file, and for each cold `pkdns resolve`

_MAX_BODY = 512  # an address, or a small JSON object with an "ip" field (ipinfo.io)
_FAMILY_NAME: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def preload() -> None:
    """Import aiohttp now, from plain (not async) code.

    aiohttp is imported on first use because ``pkdns resolve`` never needs it and loading it
    costs a noticeable part of a cold start; but an import inside a coroutine blocks the event
    loop for as long as it takes (asyncio's debug mode reports it as a slow callback), so the
    callers that will discover an address load it before their loop runs.
    """
    import aiohttp  # noqa: F401


async def discover(
    urls: Sequence[str], family: int, timeout: float, *, rng: random.Random | None = None
) -> str:
    """The external address of ``family`` (socket.AF_INET or AF_INET6) as text.

    Raises:
        PkdnsError: (exit 1) no URL gave an address of that family; the message names each
            URL and its failure.
    """
    if family not in _FAMILY_NAME:
        raise ValueError(f"family must be AF_INET or AF_INET6, not {family}")
    name = _FAMILY_NAME[family]
    if not urls:
        raise PkdnsError(f"cannot discover the external {name} address: no IP-echo URLs")
    import aiohttp  # already loaded by preload() where it matters (see there)

    order = list(urls)
    (rng or random.SystemRandom()).shuffle(order)
    failures = []
    connector = aiohttp.TCPConnector(family=socket.AddressFamily(family))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        for url in order:
            try:
                return await _ask(session, url, family)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                failures.append(f"{url}: {_reason(exc)}")
    raise PkdnsError(f"cannot discover the external {name} address: " + "; ".join(failures))


async def _ask(session: aiohttp.ClientSession, url: str, family: int) -> str:
    _check_literal(url, family)
    async with session.get(url, headers={"Accept": "text/plain"}) as resp:
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        body = await resp.content.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        raise ValueError(f"reply is longer than {_MAX_BODY} bytes")
    return parse_reply(body, family)


def _check_literal(url: str, family: int) -> None:
    """Refuse an IP-literal URL of the other family (aiohttp would fail with an assertion)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return
    want = 4 if family == socket.AF_INET else 6
    if addr.version != want:
        raise ValueError(f"{host} is an IPv{addr.version} address, not reachable over IPv{want}")


def parse_reply(body: bytes, family: int) -> str:
    """The address in an IP-echo reply: plain text, or JSON ``{"ip": ...}``.

    Raises:
        ValueError: the reply is not one address of ``family``.
    """
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text).get("ip", ""))
        except (ValueError, AttributeError):
            raise ValueError("reply is not an address") from None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"reply {text[:60]!r} is not an address") from None
    want = 4 if family == socket.AF_INET else 6
    if addr.version != want:
        raise ValueError(f"reply {text} is not an IPv{want} address")
    return str(addr)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
