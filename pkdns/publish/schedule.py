"""What to (re)publish when: the pure half of the republisher (no I/O, ``now`` is a parameter).

Two kinds of work:

* **Zones** (``[[zones]]``): our own keys. Signed afresh and put at start, on SIGHUP and every
  ``interval`` seconds; a failure (nobody stored it, the zone did not build) is retried after
  ``retry_after`` (never later than the interval). A zone using ``{external_ipv4}`` /
  ``{external_ipv6}`` (DynDNS) is also checked every ``ip_check_interval`` seconds: when the
  host's address changed since it was signed, it is due at once, so the name is right again
  within that time instead of up to an ``interval`` later.
* **Popular packets**: signed packets of *other* keys that clients keep asking for. BEP 44
  nodes drop items after about two hours, and anyone may re-put a signed item unchanged, so a
  resolver that serves a key keeps it alive. A key is due when it was asked for at least
  ``popular_min_queries`` times since we last put it, and ``republish_after`` seconds passed
  since it was last put by us or confirmed on the network. A token bucket of
  ``popular_budget_per_hour`` re-puts bounds the traffic, most-asked keys first.

Times are wall-clock seconds: the plan is saved in the state dir and outlives the process.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pkdns.config import RepublishConfig, ZoneConfig
from pkdns.state import ScheduleEntry

POPULAR_TICK = 60.0
"""How often the popular-packet candidates are looked at (seconds)."""
ZONE_PREFIX, POPULAR_PREFIX = "zone:", "popular:"


@dataclass(slots=True)
class ZoneJob:
    """One ``[[zones]]`` entry and when it is due next."""

    zone: ZoneConfig
    next_at: float
    last_result: str = ""
    last_at: float = 0.0
    failures: int = 0
    next_check: float = float("inf")   # DynDNS address check; armed by the first publish

    @property
    def name(self) -> str:
        return ZONE_PREFIX + self.zone.zone


@dataclass(slots=True)
class _Popular:
    last_put: float            # wall time it was last put by us (or confirmed on the network)
    queries_at_put: int = 0    # the key's query counter at that moment
    last_result: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A cached packet the republisher may re-put: its key, query count and last sighting."""

    key: bytes
    queries: int
    seen_at: float             # wall time the network last confirmed this packet


@dataclass(slots=True)
class Budget:
    """Token bucket: ``per_hour`` re-puts, refilled continuously, starting full."""

    per_hour: int
    tokens: float = field(init=False)
    at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.tokens = float(self.per_hour)

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.per_hour),
                          self.tokens + max(0.0, now - self.at) * self.per_hour / 3600.0)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RepublishPlan:
    """The schedule for zones and popular packets."""

    def __init__(self, cfg: RepublishConfig, now: float,
                 saved: Mapping[str, ScheduleEntry] | None = None) -> None:
        self.cfg = cfg
        self.zones: dict[str, ZoneJob] = {}
        self.budget = Budget(cfg.popular_budget_per_hour, at=now)
        self._popular: dict[bytes, _Popular] = {}
        self._next_popular_check = now
        for entry in (saved or {}).values():
            if entry.name.startswith(POPULAR_PREFIX):
                key = bytes.fromhex(entry.name.removeprefix(POPULAR_PREFIX))
                last_put = entry.next_at - cfg.republish_after
                self._popular[key] = _Popular(last_put, 0, entry.last_result)

    def set_config(self, cfg: RepublishConfig, now: float) -> None:
        """A reload's ``[republish]``: a new hourly budget starts full, as at start."""
        if cfg.popular_budget_per_hour != self.cfg.popular_budget_per_hour:
            self.budget = Budget(cfg.popular_budget_per_hour, at=now)
        self.cfg = cfg

    # --- zones ---------------------------------------------------------------------------

    def set_zones(self, zones: Sequence[ZoneConfig], now: float) -> None:
        """(Re)load the zone list: every zone is due now (start-up and SIGHUP)."""
        old = self.zones
        self.zones = {}
        for z in zones:
            job = ZoneJob(z, now)
            previous = old.get(job.name)
            if previous is not None:
                job.last_result, job.last_at = previous.last_result, previous.last_at
            self.zones[job.name] = job

    def due_zones(self, now: float) -> list[ZoneJob]:
        return [job for job in self.zones.values() if job.next_at <= now]

    def zone_done(self, name: str, stored: int, error: str | None, now: float) -> float:
        """Record a publish attempt; returns when the zone is due again."""
        job = self.zones.get(name)
        if job is None:  # removed by a reload while it was being published
            return now
        ok = error is None and stored >= self.cfg.min_stored
        job.last_at = now
        job.last_result = f"stored on {stored} nodes" if ok else (error or f"stored on {stored}")
        job.failures = 0 if ok else job.failures + 1
        wait = job.zone.interval if ok else min(self.cfg.retry_after, job.zone.interval)
        job.next_at = now + wait
        job.next_check = now + self.cfg.ip_check_interval if self.cfg.ip_check_interval \
            else float("inf")
        return job.next_at

    def due_checks(self, now: float) -> list[ZoneJob]:
        """Zones whose DynDNS address should be looked at now (not those due anyway)."""
        return [job for job in self.zones.values()
                if job.next_check <= now < job.next_at]

    def checked(self, name: str, changed: bool | None, now: float) -> bool:
        """Record an address check: True (changed) makes the zone due now, None (the zone
        uses no variable) stops the checks until its next publish. Returns whether the zone
        became due."""
        job = self.zones.get(name)
        if job is None:
            return False
        interval = self.cfg.ip_check_interval
        job.next_check = now + interval if interval and changed is not None else float("inf")
        if changed:
            job.next_at = now
        return bool(changed)

    # --- popular packets -----------------------------------------------------------------

    def due_popular(self, candidates: Iterable[Candidate], now: float,
                    exclude: Collection[bytes] = ()) -> list[bytes]:
        """Keys to re-put now, most-asked first, within the budget (``exclude``: our zones)."""
        if not self.cfg.popular or now < self._next_popular_check:
            return []
        self._next_popular_check = now + POPULAR_TICK
        scored = []
        for c in candidates:
            if c.key in exclude:
                continue
            state = self._popular.get(c.key)
            since = c.queries - state.queries_at_put if state else c.queries
            if since < 0:  # the counter was reset (evicted and re-counted)
                since = c.queries
            last = max(c.seen_at, state.last_put if state else float("-inf"))
            if since >= self.cfg.popular_min_queries and now - last >= self.cfg.republish_after:
                scored.append((since, c.key))
        scored.sort(reverse=True)
        out = []
        for _, key in scored:
            if not self.budget.take(now):
                break
            out.append(key)
        return out

    def popular_done(self, key: bytes, queries: int, stored: int, error: str | None,
                     now: float) -> None:
        """Record a re-put. A failed one is tried again ``retry_after`` later (if still asked)."""
        ok = error is None and stored >= self.cfg.min_stored
        last_put = now if ok else now - self.cfg.republish_after + self.cfg.retry_after
        result = f"stored on {stored} nodes" if ok else (error or f"stored on {stored}")
        self._popular[key] = _Popular(last_put, queries if ok else 0, result)

    def forget_popular(self, keep: Iterable[bytes]) -> None:
        """Drop bookkeeping for keys no longer cached (bounded by the packet cache)."""
        keep_set = set(keep)
        for key in [k for k in self._popular if k not in keep_set]:
            del self._popular[key]

    # --- timing and persistence ----------------------------------------------------------

    def next_wakeup(self, now: float) -> float:
        """When something may be due next."""
        times = [min(job.next_at, job.next_check) for job in self.zones.values()]
        if self.cfg.popular:
            times.append(self._next_popular_check)
        return max(now, min(times)) if times else now + POPULAR_TICK

    def entries(self) -> list[ScheduleEntry]:
        """The plan as rows for the state store."""
        out = [ScheduleEntry(j.name, j.next_at, j.last_result, j.last_at)
               for j in self.zones.values()]
        out += [ScheduleEntry(POPULAR_PREFIX + key.hex(), p.last_put + self.cfg.republish_after,
                              p.last_result, p.last_put) for key, p in self._popular.items()]
        return out
