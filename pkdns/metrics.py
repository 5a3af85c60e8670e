"""Prometheus metrics shared by every part of the daemon (served at ``/metrics``).

One registry per :class:`Metrics` instance (not the global default), so tests and several
daemons in one process never share counters. Components receive the instance they report to.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.samples import Sample


class Metrics:
    """All pkdns metrics, registered on a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._before_render: list[Callable[[], None]] = []
        self.queries = Counter(
            "pkdns_queries", "DNS queries answered", ["transport", "rcode", "kind"], registry=r)
        self.cache_hits = Counter("pkdns_cache_hits", "Answers served from the cache", registry=r)
        self.cache_misses = Counter("pkdns_cache_misses", "Cache misses", registry=r)
        self.stale_served = Counter(
            "pkdns_stale_served", "Stale answers served (RFC 8767)", ["kind"], registry=r)
        self.cache_bytes = Gauge("pkdns_cache_bytes", "Bytes held by the answer cache", registry=r)
        self.cache_entries = Gauge("pkdns_cache_entries", "Answers in the cache", registry=r)
        self.dropped = Counter(
            "pkdns_dropped", "Queries dropped or refused by policy", ["reason"], registry=r)
        self.rate_limited = Counter(
            "pkdns_rate_limited", "Requests over a rate limit", ["what"], registry=r)
        self.upstream_failures = Counter(
            "pkdns_upstream_failures", "Failed upstream attempts", ["upstream", "reason"],
            registry=r)
        self.upstream_spoofing = Counter(
            "pkdns_upstream_spoofing",
            "Upstream queries dropped as spoofed: too many near-miss replies, or our ID with "
            "the wrong 0x20 case", ["upstream", "reason"], registry=r)
        self.dht_lookups = Counter(
            "pkdns_dht_lookups", "DHT lookups for signed packets", ["outcome"], registry=r)
        self.dht_lookup_seconds = Histogram(
            "pkdns_dht_lookup_seconds", "DHT lookup latency",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0), registry=r)
        self.dht_routing_table = Gauge(
            "pkdns_dht_routing_table_nodes",
            "DHT routing-table entries that are not bad (under 2 timeouts in a row)", registry=r)
        self.dht_reachable = Gauge(
            "pkdns_dht_reachable", "1 while the DHT answers us, 0 when it stays silent "
            "(UDP blocked?)", registry=r)
        self.dht_answered_ratio = Gauge(
            "pkdns_dht_answered_ratio", "KRPC queries answered / asked over the last minute",
            registry=r)
        self.dht_loss = Gauge(
            "pkdns_dht_round_trip_loss", "Share of first copies of queries to nodes that "
            "answered before left unanswered (moving average; from 0.35 every node's queries "
            "are resent)", registry=r)
        self.dht_last_found_age = Gauge(
            "pkdns_dht_last_found_age_seconds", "Seconds since a DHT lookup last returned a "
            "verified packet (-1: never)", registry=r)
        self.dht_messages = Counter(
            "pkdns_dht_messages", "KRPC messages", ["direction", "kind"], registry=r)
        self.republished = Counter(
            "pkdns_republished", "Signed packets (re)published", ["source", "result"],
            registry=r)
        self.rebind_filtered = Counter(
            "pkdns_rebind_filtered", "Addresses removed by the DNS rebinding filter",
            ["source"], registry=r)
        self.rebind_emptied = Counter(
            "pkdns_rebind_emptied", "Answers left with no record of the asked type by the "
            "DNS rebinding filter", ["source"], registry=r)
        self.relay_requests = Counter(
            "pkdns_relay_requests", "pkarr relay API requests", ["method", "status"], registry=r)

    def on_render(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` before every render: hot paths that count in plain ints (the DNS
        front end, :mod:`pkdns.dns.tally`) move their sums into the counters then."""
        self._before_render.append(flush)

    def totals(self) -> dict[str, float]:
        """The counters the dashboard charts, summed over their labels (the history in
        :mod:`pkdns.server.history` turns readings of these into rates)."""
        for flush in self._before_render:
            flush()
        lookups: dict[str, float] = {}
        for sample in _samples(self.dht_lookups):
            if sample.name.endswith("_total"):
                outcome = sample.labels["outcome"]
                key = outcome if outcome in ("found", "not_found") else "failed"
                lookups[key] = lookups.get(key, 0.0) + sample.value
        out = {"queries": _sum(self.queries), "cache_hits": _sum(self.cache_hits),
               "cache_misses": _sum(self.cache_misses),
               "upstream_failures": _sum(self.upstream_failures),
               "lookup_seconds_sum": _sample(self.dht_lookup_seconds, "_sum"),
               "lookup_seconds_count": _sample(self.dht_lookup_seconds, "_count")}
        for outcome in ("found", "not_found", "failed"):
            out["lookups_" + outcome] = lookups.get(outcome, 0.0)
        return out

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        for flush in self._before_render:
            flush()
        return generate_latest(self.registry)


def _samples(metric: Counter | Histogram) -> list[Sample]:
    """The samples of one metric (one metric family per collector)."""
    return [s for family in metric.collect() for s in family.samples]


def by_label(counter: Counter, label: str) -> dict[str, float]:
    """A counter's totals per value of one label (summed over its other labels)."""
    out: dict[str, float] = {}
    for s in _samples(counter):
        if s.name.endswith("_total"):
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
    return out


def _sum(counter: Counter) -> float:
    """A counter's total over all its label values."""
    return sum((s.value for s in _samples(counter) if s.name.endswith("_total")), 0.0)


def _sample(metric: Histogram, suffix: str) -> float:
    """One unlabelled sample of a histogram (``_sum`` or ``_count``)."""
    return next((s.value for s in _samples(metric) if s.name.endswith(suffix)), 0.0)
