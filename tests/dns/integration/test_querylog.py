"""One ``query`` line per query at debug level -- cache hits included -- and none without it
(the daemon, black-box, ``pkdns serve -v``)."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.daemon import Daemon, run_daemon
from tests.support.upstream import FakeUpstream, a_record

pytestmark = pytest.mark.slow


def _ask_five_times(d: Daemon, name: str) -> None:
    """A miss, two UDP repeats (byte-identical: the memo case), a TCP hit, an EDNS hit."""
    q = dns.message.make_query(name, "A")
    for _ in range(3):
        r = dns.query.udp(q, d.host, port=d.port, timeout=3)
        assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert dns.query.tcp(dns.message.make_query(name, "A"), d.host, port=d.port, timeout=3).answer
    assert dns.query.udp(dns.message.make_query(name.upper(), "A", use_edns=0), d.host,
                         port=d.port, timeout=3).answer


def test_every_query_logged_at_debug_hits_included(tmp_path: Path) -> None:
    with FakeUpstream(a_record("192.0.2.5")) as up, \
            run_daemon(tmp_path, upstreams=(up.addr,), config="[dns]\nrate_limit = 0.0\n",
                       verbose=True) as d:
        _ask_five_times(d, "hits.example.test")
        lines = d.query_events("hits.example.test", 5, 5.0)
        assert len(up.queries()) == 1
    assert [(e["transport"], e["cache"]) for e in lines] == [
        ("udp", "miss"), ("udp", "hit"), ("udp", "hit"), ("tcp", "hit"), ("udp", "hit")]
    for e in lines:
        assert e["level"] == "debug" and e["component"] == "resolver"
        assert (e["client"], e["qtype"], e["rcode"], e["kind"]) == ("127.0.0.1", 1, 0, "icann")


def test_no_query_lines_without_debug(tmp_path: Path) -> None:
    with FakeUpstream(a_record("192.0.2.5")) as up, \
            run_daemon(tmp_path, upstreams=(up.addr,), config="[dns]\nrate_limit = 0.0\n") as d:
        _ask_five_times(d, "quiet.example.test")
        assert d.query_events("quiet.example.test", 1, 0.5) == []
        assert not [e for e in d.events() if e.get("level") == "debug"]
