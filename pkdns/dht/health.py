"""Is the DHT reachable from here? Counters and one verdict, pure (pass ``now``).

Many hosts cannot reach the DHT at all: cloud firewalls that drop UDP, networks that allow
only DNS and HTTP(S). A node there sends query after query and hears nothing; without this
module it would look like a slow DHT, and every cold key would wait out a full lookup deadline
before the relays' answer or the SERVFAIL. The node reports each query it sends, each reply
and each lookup's result here; the daemon shows the verdict on the status page and in
/metrics and, when relays are configured, stops asking the DHT while it is unreachable.

The verdict: **unreachable** once at least ``min_silent`` queries went out since the last
reply *and* the last reply (or the start) is ``silent_for`` seconds old -- one lost burst is not
a blocked network, and a daemon that has just started has had no chance to hear anything. Any
reply makes it reachable again at once. The node keeps sending (upkeep re-bootstraps with
backoff), so it notices when the network comes back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MIN_SILENT = 8
SILENT_FOR = 3.0
WINDOW = 60.0
"""Seconds over which the answered/asked ratio is computed."""


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What the status page and /metrics show."""

    reachable: bool
    asked: int          # queries sent in the last WINDOW seconds
    answered: int       # replies (answers or KRPC errors) to them
    unanswered_in_a_row: int
    last_reply_age: float | None
    last_found_age: float | None
    """Seconds since a lookup last returned a verified value (None: never)."""

    @property
    def answered_ratio(self) -> float | None:
        return None if self.asked == 0 else round(min(1.0, self.answered / self.asked), 3)

    def as_dict(self) -> dict[str, object]:
        return {"reachable": self.reachable, "asked": self.asked, "answered": self.answered,
                "answered_ratio": self.answered_ratio,
                "unanswered_in_a_row": self.unanswered_in_a_row,
                "last_reply_age": _round(self.last_reply_age),
                "last_found_age": _round(self.last_found_age)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


class DhtHealth:
    """Sent/answered counters with a reachability verdict."""

    def __init__(self, now: float, *, min_silent: int = MIN_SILENT,
                 silent_for: float = SILENT_FOR, window: float = WINDOW) -> None:
        self.min_silent, self.silent_for, self.window = min_silent, silent_for, window
        self._since = now          # start, or the last reply
        self._last_reply: float | None = None
        self._last_found: float | None = None
        self._silent = 0           # queries sent since the last reply
        self._sent: deque[float] = deque()
        self._replies: deque[float] = deque()

    def sent(self, now: float) -> None:
        self._silent += 1
        self._sent.append(now)
        self._trim(now)

    def replied(self, now: float) -> None:
        self._silent = 0
        self._since = self._last_reply = now
        self._replies.append(now)
        self._trim(now)

    def found(self, now: float) -> None:
        """A lookup returned a verified value."""
        self._last_found = now

    def reachable(self, now: float) -> bool:
        return self._silent < self.min_silent or now - self._since < self.silent_for

    def snapshot(self, now: float) -> HealthSnapshot:
        self._trim(now)
        return HealthSnapshot(
            self.reachable(now), len(self._sent), len(self._replies), self._silent,
            None if self._last_reply is None else now - self._last_reply,
            None if self._last_found is None else now - self._last_found)

    def _trim(self, now: float) -> None:
        for q in (self._sent, self._replies):
            while q and now - q[0] > self.window:
                q.popleft()
