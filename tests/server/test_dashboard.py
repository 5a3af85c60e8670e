"""The dashboard: the pure history of counter readings, the recent-problems log ring, the
counters it reads, and the whole daemon's status page in headless Chromium, whose figures must
be the ones ``/metrics`` renders."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import structlog

from pkdns import log
from pkdns.metrics import Metrics
from pkdns.server.history import History
from tests.e2e.demoproc import run_demo
from tests.support.require import require_tool

ROOT = Path(__file__).parents[1]


def _reading(queries: float, hits: float = 0, misses: float = 0, found: float = 0,
             failed: float = 0, lsum: float = 0, lcount: float = 0) -> dict[str, float]:
    return {"queries": queries, "cache_hits": hits, "cache_misses": misses,
            "lookups_found": found, "lookups_not_found": 0, "lookups_failed": failed,
            "lookup_seconds_sum": lsum, "lookup_seconds_count": lcount}


def test_history_rates_per_interval_from_counter_readings() -> None:
    h = History(window=3600, step=10)
    assert h.due(0.0) and h.points() == [] and h.summary() == {}
    h.add(0.0, _reading(0))
    assert not h.due(5.0) and h.due(10.0)
    h.add(10.0, _reading(100, hits=30, misses=10, found=2, lsum=0.4, lcount=2))
    h.add(20.0, _reading(150, hits=30, misses=10, found=2, failed=1, lsum=0.4, lcount=2))
    first, second = h.points()
    assert (first.ago, first.qps, first.hit_rate) == (10.0, 10.0, 0.75)
    assert first.lookups == {"found": 2, "not_found": 0, "failed": 0}
    assert first.latency_ms == pytest.approx(200.0)
    assert (second.ago, second.qps, second.hit_rate, second.latency_ms) == (0.0, 5.0, None, None)
    assert second.lookups["failed"] == 1
    assert h.summary() == {"seconds": 20.0, "queries": 150, "qps": 7.5, "hit_rate": 0.75,
                           "lookups_found": 2, "lookups_not_found": 0, "lookups_failed": 1}


def test_history_keeps_one_hour_and_skips_a_counter_reset() -> None:
    h = History(window=60, step=10)
    for t in range(0, 200, 10):
        h.add(float(t), _reading(t))
    points = h.points()
    assert len(points) == 6 and points[0].ago == 50.0      # 60 s of intervals, one edge beyond
    h.add(200.0, _reading(0))                              # the counters restarted
    assert h.points()[-1].ago == 10.0                      # no negative rate for that interval
    assert h.summary() == {}


def test_recent_problems_keeps_warnings_and_errors_newest_first() -> None:
    ring = log.RecentProblems(size=2)
    structlog.configure(processors=[structlog.processors.add_log_level, ring,
                                    structlog.processors.KeyValueRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())
    try:
        logger = structlog.get_logger()
        logger.info("fine")
        logger.warning("upstream_down", upstream="192.0.2.1:53")
        logger.error("zone_publish_failed", zone="a.zone")
        logger.error("third")
    finally:
        structlog.reset_defaults()
    events = ring.events()
    assert [e["event"] for e in events] == ["third", "zone_publish_failed"]
    assert events[1]["level"] == "error" and events[1]["detail"] == "zone=a.zone"


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_totals_are_what_metrics_renders() -> None:
    m = Metrics()
    m.queries.labels("udp", "NOERROR", "icann").inc(3)
    m.queries.labels("tcp", "NXDOMAIN", "pkarr").inc(2)
    m.cache_hits.inc(4)
    m.dht_lookups.labels("found").inc(2)
    m.dht_lookups.labels("unavailable").inc()
    m.dht_lookups.labels("rate_limited").inc()
    m.dht_lookup_seconds.observe(0.25)
    text, t = m.render().decode(), m.totals()
    assert t["queries"] == _metric(text, "pkdns_queries_total") == 5
    assert t["cache_hits"] == _metric(text, "pkdns_cache_hits_total") == 4
    assert t["lookups_found"] == _metric(text, "pkdns_dht_lookups_total", outcome="found") == 2
    assert t["lookups_failed"] == 2 and t["lookups_not_found"] == 0
    assert t["lookup_seconds_sum"] == _metric(text, "pkdns_dht_lookup_seconds_sum") == 0.25


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
        return body


@pytest.mark.slow
def test_the_status_page_shows_the_figures_of_metrics(tmp_path: Path) -> None:
    node, chromium = require_tool("node"), require_tool("chromium", "/usr/bin/chromium")
    with run_demo(tmp_path, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0") as demo:
        digs = [ln for ln in demo.tries if ln.startswith("dig ")]
        for line in digs * 3:                  # the repeats are cache hits
            subprocess.run(shlex.split(line), capture_output=True, timeout=30, check=False)
        base = next(re.search(r"http://127\.0\.0\.1:\d+", ln).group(0)  # type: ignore[union-attr]
                    for ln in demo.tries if ln.startswith("curl ") and "http://127." in ln)
        deadline = time.monotonic() + 30
        while not json.loads(_get(base + "/api/dashboard"))["series"]:
            assert time.monotonic() < deadline, "the dashboard took no second reading"
            time.sleep(0.5)
        artifacts = ROOT / "artifacts"
        artifacts.mkdir(exist_ok=True)
        shot = artifacts / "dashboard.png"
        out = subprocess.run(
            [node, str(ROOT / "interop" / "dashboard_page.mjs"), "--chromium", chromium,
             "--url", base + "/", "--screenshot", str(shot),
             "--user-data-dir", str(tmp_path / "chromium")],
            capture_output=True, text=True, timeout=90, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        page = json.loads(out.stdout.strip().splitlines()[-1])
        text = _get(base + "/metrics").decode()
        dashboard = json.loads(_get(base + "/api/dashboard"))
    tiles = page["tiles"]
    queries = _metric(text, "pkdns_queries_total")
    assert queries >= 3 * len(digs) and float(tiles["total-queries"]) == queries
    assert float(tiles["total-cache-hits"]) == _metric(text, "pkdns_cache_hits_total") > 0
    assert float(tiles["total-lookups-found"]) == _metric(text, "pkdns_dht_lookups_total",
                                                          outcome="found")
    assert page["upstreams"] == [[u["upstream"], u["state"], str(u["silent"]),
                                  str(u["failures"])] for u in dashboard["upstreams"]]
    assert page["upstreams"] and all(row[1] == "up" for row in page["upstreams"])
    assert len(page["points"]) == 3 and all(n >= 1 for n in page["points"])   # bars drawn
    assert page["offsite"] == []                                      # no CDN: works offline
    assert shot.stat().st_size > 20_000
