"""Logging: JSON lines off a TTY, console on a TTY, levels, stdlib records in the same format."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import structlog

from pkdns import log
from tests.support.daemon import run_daemon
from tests.support.upstream import FakeUpstream, a_record


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    import logging

    for h in [h for h in logging.getLogger().handlers if isinstance(h, log._Handler)]:
        logging.getLogger().removeHandler(h)
    structlog.reset_defaults()


def test_json_lines_with_level_timestamp_and_component() -> None:
    out = io.StringIO()
    log.configure("info", "json", stream=out)
    log.get("app").info("started", upstreams=["1.1.1.1:53"])
    log.get("resolver").debug("query", qname="example.com.")  # filtered at info
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "started" and event["level"] == "info"
    assert event["component"] == "app" and event["upstreams"] == ["1.1.1.1:53"]
    assert event["timestamp"].endswith("Z")


def test_level_filter() -> None:
    out = io.StringIO()
    log.configure("debug", "json", stream=out)
    assert log.is_enabled("debug")
    log.configure("warning", "json", stream=out)
    assert not log.is_enabled("info") and log.is_enabled("error")


@pytest.mark.parametrize("verbose", [True, False])
def test_daemon_logs_each_query_at_debug(tmp_path: Path, verbose: bool) -> None:
    """The daemon's own per-query line (``pkdns serve -v``): a miss, then the cache hit.

    Without ``-v`` nothing is logged per query (the hot path reads the debug switch once).
    """
    with FakeUpstream(a_record("192.0.2.77")) as up, \
            run_daemon(tmp_path, upstreams=(up.addr,), verbose=verbose) as d:
        q = dns.message.make_query("logged.example.", "A")
        reply = dns.query.udp(q, d.host, port=d.port, timeout=5)
        assert reply.rcode() == dns.rcode.NOERROR and up.queries("udp")   # a real miss
        again = dns.query.udp(q, d.host, port=d.port, timeout=5)
        assert again.rcode() == dns.rcode.NOERROR and len(up.queries("udp")) == 1   # a hit
        events = d.query_events("logged.example", count=2, timeout=5.0 if verbose else 0.5)
    if not verbose:
        assert events == []
        return
    miss, hit = events
    for event in (miss, hit):
        assert event["level"] == "debug"
        assert (event["qtype"], event["rcode"], event["kind"]) == (1, 0, "icann")
        assert event["transport"] == "udp" and event["timestamp"].endswith("Z")
    assert (miss["cache"], hit["cache"]) == ("miss", "hit")


def test_exceptions_are_structured_in_json() -> None:
    out = io.StringIO()
    log.configure("info", "json", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        log.get("x").exception("failed")
    event = json.loads(out.getvalue())
    assert event["level"] == "error"
    assert event["exception"][0]["exc_type"] == "ValueError"


def test_auto_format_follows_the_stream() -> None:
    assert log.resolve_format("auto", io.StringIO()) == "json"
    assert log.resolve_format("console", io.StringIO()) == "console"


def test_stdlib_records_use_the_same_renderer() -> None:
    import logging

    out = io.StringIO()
    log.configure("info", "json", stream=out)
    log.configure("info", "json", stream=out)  # reconfigure: still one handler
    logging.getLogger("aiohttp.server").warning("bad request from %s", "10.0.0.1")
    logging.getLogger("asyncio").info("not shown below warning")
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "bad request from 10.0.0.1"
    assert event["logger"] == "aiohttp.server" and event["level"] == "warning"


_CHILD = ("from pkdns import log; log.configure('info', 'auto'); "
          "log.get('app').info('started', port=53)")


def test_subprocess_off_a_tty_writes_json() -> None:
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          timeout=30, check=True)
    assert json.loads(proc.stdout)["port"] == 53


def test_subprocess_on_a_tty_writes_console() -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=slave,
                                stderr=subprocess.DEVNULL)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert "started" in text and "port" in text
    assert not text.lstrip().startswith("{")
