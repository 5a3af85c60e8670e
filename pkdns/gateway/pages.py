"""HTTP/1.1 bytes the gateway writes itself (pure): the 502 page, the port-80 redirect, and
the little reading of a request head both need (RFC 9110, RFC 9112).

The gateway never interprets traffic it relays; these are only for connections it answers
itself: one response, then ``Connection: close``.
"""

from __future__ import annotations

import html
import re

from pkdns.answer.names import PkarrName, classify

MAX_HEAD = 16384            # bytes of request head read before answering
_HOST = re.compile(rb"^host:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]\r?\n")


def key_name(host: str, suffix: str = "key") -> PkarrName | None:
    """``host`` (maybe with ``:port``) as a ``<...><key>.key`` name, else None.

    Only the suffix form qualifies: it is the form DNS routes to the gateway and the only one
    the CA may sign.
    """
    host = host.strip().rstrip(".").lower()
    host = re.sub(r":\d+$", "", host)
    if not host or not suffix:
        return None
    name = classify(host, suffix)
    return name if isinstance(name, PkarrName) and name.suffix == suffix else None


def request_target(head: bytes) -> tuple[str, str] | None:
    """``(host, path)`` of a request head; None if it is not an HTTP/1.x request with Host."""
    line = _REQUEST_LINE.match(head)
    host = _HOST.search(head)
    if line is None or host is None:
        return None
    path = line.group(2).decode("latin-1")
    return host.group(1).decode("latin-1").strip(), path if path.startswith("/") else "/"


def response(status: int, reason: str, body: str, extra: tuple[str, ...] = ()) -> bytes:
    """A complete ``Connection: close`` response with an HTML body."""
    data = body.encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/html; charset=utf-8",
            f"Content-Length: {len(data)}", "Connection: close", "Cache-Control: no-store",
            *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def bad_gateway(host: str, why: str) -> bytes:
    """The 502 page: the origin of ``host`` could not be verified (or reached), and why."""
    title = "502 Bad Gateway: origin not verified"
    body = (f"<!doctype html><html><head><title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>The pkdns gateway did not connect you to "
            f"<b>{html.escape(host)}</b>:</p><p id=\"reason\">{html.escape(why)}</p>"
            "<p>The gateway only relays to an origin whose certificate matches a TLSA record "
            "in the key's signed packet; it never falls back to an unchecked one.</p>"
            "</body></html>")
    return response(502, "Bad Gateway", body)


def redirect(host: str, path: str) -> bytes:
    """308 to the same URL over https (the method and body are kept, RFC 9110 §15.4.9)."""
    bare = re.sub(r":\d+$", "", host.strip())
    location = f"https://{bare}{path}"
    body = f"<!doctype html><a href=\"{html.escape(location)}\">{html.escape(location)}</a>"
    return response(308, "Permanent Redirect", body, (f"Location: {location}",))


def not_a_key_name() -> bytes:
    body = ("<!doctype html><title>400 Bad Request</title><h1>400 Bad Request</h1>"
            "<p>This pkdns gateway only serves .key names.</p>")
    return response(400, "Bad Request", body)


__all__ = ["MAX_HEAD", "bad_gateway", "key_name", "not_a_key_name", "redirect",
           "request_target", "response"]
