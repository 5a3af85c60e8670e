"""X-Forwarded-For is honoured only from configured trusted proxies."""

from __future__ import annotations

import pytest

from pkdns.server.http import client_ip, parse_networks

TRUSTED = parse_networks(["127.0.0.9", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    ("127.0.0.1", "203.0.113.7", "127.0.0.1"),            # untrusted peer: header ignored
    ("127.0.0.9", None, "127.0.0.9"),
    ("127.0.0.9", "203.0.113.7", "203.0.113.7"),
    ("127.0.0.9", "198.51.100.1, 203.0.113.7", "203.0.113.7"),   # rightmost untrusted wins
    ("127.0.0.9", "203.0.113.7, 10.0.0.2, 10.0.0.1", "203.0.113.7"),
    ("127.0.0.9", "10.0.0.2", "10.0.0.2"),                # all trusted: the leftmost
    ("127.0.0.9", "garbage, 10.0.0.2", "10.0.0.2"),      # stop at what we cannot parse
    ("127.0.0.9", "nonsense", "127.0.0.9"),
    ("fd00::1", "2001:db8::5", "2001:db8::5"),
])
def test_client_ip(peer: str, xff: str | None, expected: str) -> None:
    assert client_ip(peer, xff, TRUSTED) == expected
