"""The dashboard's last hour: counter readings turned into rates per interval (pure).

The status page wants "how is it doing", not "is it up": queries per second and the cache hit
rate over the last hour, pkarr lookups by outcome and their latency. Prometheus counters only
hold totals since start, so the daemon reads them every ``step`` seconds
(:func:`pkdns.metrics.Metrics.totals`) and hands the reading to :meth:`History.add` with
``now``; the history keeps the last ``window`` seconds of readings and derives each interval's
rates from the difference of two neighbours. No clock and no I/O here, so tests drive it by
passing ``now``; a counter that goes backwards (a reset) gives a gap, never a negative rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

Totals = Mapping[str, float]
"""One reading: counter name (``queries``, ``cache_hits``, ``lookups_found``, ...) to its total."""

QUERIES, HITS, MISSES = "queries", "cache_hits", "cache_misses"
LOOKUP_OUTCOMES = ("found", "not_found", "failed")
LATENCY_SUM, LATENCY_COUNT = "lookup_seconds_sum", "lookup_seconds_count"


@dataclass(frozen=True, slots=True)
class Point:
    """The rates over one interval, ending ``ago`` seconds before the newest reading."""

    ago: float
    qps: float
    hit_rate: float | None            # None: no cache traffic in the interval
    lookups: dict[str, float]         # outcome -> lookups in the interval
    latency_ms: float | None          # mean DHT lookup latency in the interval

    def as_json(self) -> dict[str, object]:
        return {"ago": round(self.ago, 1), "qps": round(self.qps, 2),
                "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
                "lookups": self.lookups,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1)}


class History:
    """Readings of the daemon's counters over a sliding window."""

    def __init__(self, window: float = 3600.0, step: float = 10.0) -> None:
        self.window, self.step = window, step
        self._readings: deque[tuple[float, dict[str, float]]] = deque()

    def add(self, now: float, totals: Totals) -> None:
        """Keep a reading taken at ``now``; drop those older than the window (one is kept
        beyond it, so the oldest interval still has its left edge)."""
        self._readings.append((now, dict(totals)))
        while len(self._readings) > 2 and self._readings[1][0] <= now - self.window:
            self._readings.popleft()

    def due(self, now: float) -> bool:
        """Is a new reading due (none yet, or ``step`` seconds since the last)?"""
        return not self._readings or now - self._readings[-1][0] >= self.step

    def points(self) -> list[Point]:
        """One point per interval between neighbouring readings, oldest first."""
        if len(self._readings) < 2:
            return []
        newest = self._readings[-1][0]
        out = []
        pairs = zip(self._readings, list(self._readings)[1:], strict=False)
        for (t0, a), (t1, b) in pairs:
            point = _interval(a, b, t1 - t0, newest - t1)
            if point is not None:
                out.append(point)
        return out

    def summary(self) -> dict[str, float | None]:
        """Totals over the whole window: queries, mean qps, hit rate, lookups by outcome."""
        if len(self._readings) < 2:
            return {}
        (t0, a), (t1, b) = self._readings[0], self._readings[-1]
        d = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}
        if any(v < 0 for v in d.values()):
            return {}
        cache = d.get(HITS, 0.0) + d.get(MISSES, 0.0)
        out: dict[str, float | None] = {
            "seconds": round(t1 - t0, 1), "queries": d.get(QUERIES, 0.0),
            "qps": round(d.get(QUERIES, 0.0) / (t1 - t0), 2) if t1 > t0 else 0.0,
            "hit_rate": round(d.get(HITS, 0.0) / cache, 4) if cache else None}
        for outcome in LOOKUP_OUTCOMES:
            out["lookups_" + outcome] = d.get("lookups_" + outcome, 0.0)
        return out


def _interval(a: Totals, b: Totals, seconds: float, ago: float) -> Point | None:
    """Rates between readings ``a`` and ``b``; None when a counter went backwards (restart)."""
    d = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}
    if seconds <= 0 or any(v < 0 for v in d.values()):
        return None
    cache = d.get(HITS, 0.0) + d.get(MISSES, 0.0)
    count = d.get(LATENCY_COUNT, 0.0)
    return Point(
        ago=ago, qps=d.get(QUERIES, 0.0) / seconds,
        hit_rate=d.get(HITS, 0.0) / cache if cache else None,
        lookups={o: d.get("lookups_" + o, 0.0) for o in LOOKUP_OUTCOMES},
        latency_ms=1000.0 * d.get(LATENCY_SUM, 0.0) / count if count else None)
