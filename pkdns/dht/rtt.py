"""Round-trip estimates for DHT requests (pure): how long a lookup waits on a node.

A lookup uses two times per request, both learnt from how long answers took:

- the **soft timeout**: past it the request stops holding one of the α slots, so the next
  candidate is asked (libtorrent's "short timeout"); the answer still counts when it comes;
- the **give-up time**: past it the node stops holding a place among the closest k, so the
  lookup can finish without it; an answer that comes before the lookup ends still counts.

The request itself ends at the transport's timeout. Mainline round trips are heavy-tailed
(median ~150 ms, a few % over 1 s), so the times come from quantiles of recent samples, not
RFC 6298's mean + 4 x deviation, which the tail would drag up to seconds. Per node, a smoothed
round trip (RFC 6298 §2, alpha = 1/8) lets a node known to be slow keep its place longer; it
never holds a slot longer than a typical node. One estimator is shared by a node's lookups.

A sample runs from the first send to the answer, whichever copy it answers: unlike the resend
gap (:mod:`pkdns.dht.resend`, which times an answer from the copy it answers because it
estimates the link's round trip), these times say how long an answer may still come, and on a
lossy link an answer to the second copy is an answer the lookup should have waited for.
"""

from __future__ import annotations

from collections import deque

from pkdns.dht.krpc import Address

SAMPLES = 256
"""Recent round trips the quantiles are taken over."""
MIN_SAMPLES = 8
"""Below this many samples the quantiles are not taken (see :meth:`RttEstimator.soft_timeout`
for the soft timeout's stand-in; the give-up time keeps its default)."""
DEFAULT_SOFT = 0.4
"""The soft timeout before any round trip is known."""
FEW_SAMPLES_FACTOR = 2.0
"""Below MIN_SAMPLES the soft timeout is this many times the slowest round trip seen."""
DEFAULT_GIVE_UP = 1.0
SOFT_MIN, SOFT_MAX = 0.1, 1.0
GIVE_UP_MIN, GIVE_UP_MAX = 0.5, 2.0
"""The floor keeps a busy machine (an event loop stalled for a few hundred ms) from dropping
nodes that are merely slow to be heard; on Mainline 1.25 x p90 is above it anyway."""
KNOWN_NODES = 4096
"""Per-node estimates kept (least recently answered forgotten first)."""
PRIOR_ANSWER_RATE = 0.7
ANSWER_RATE_GAIN = 1 / 16
MAX_WIDEN = 3
"""At most this many times α requests in flight however many answers go missing."""


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


class RttEstimator:
    """Round-trip samples of answered requests; quantile-based soft and give-up times."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=SAMPLES)
        self._sorted: list[float] | None = None
        self._nodes: dict[Address, float] = {}
        self.answer_rate = PRIOR_ANSWER_RATE
        """Moving share of requests answered before the transport's timeout."""

    def observe(self, addr: Address, rtt: float) -> None:
        """``addr`` answered a lookup's request ``rtt`` seconds after we asked."""
        if rtt < 0:
            return
        self.answer_rate += (1.0 - self.answer_rate) * ANSWER_RATE_GAIN
        self.hello(addr, rtt)

    def hello(self, addr: Address, rtt: float) -> None:
        """``addr`` answered a join's hello ``rtt`` seconds after that copy went out: a round
        trip and a node known to be alive, but not the answer rate (a join does not report
        the hellos that went unanswered). Without these a cold command's first lookup round
        ran on the defaults: the join ends at the first answer."""
        if rtt < 0:
            return
        self._samples.append(rtt)
        self._sorted = None
        old = self._nodes.pop(addr, None)
        self._nodes[addr] = rtt if old is None else old + (rtt - old) / 8
        if len(self._nodes) > KNOWN_NODES:
            del self._nodes[next(iter(self._nodes))]

    def lost(self) -> None:
        """A request got no answer before the transport's timeout."""
        self.answer_rate -= self.answer_rate * ANSWER_RATE_GAIN

    def parallelism(self, alpha: int) -> int:
        """Requests to keep in flight so that about ``alpha`` of them will be answered: when
        answers go missing (dead or NAT'd nodes, loss) the lookup widens, up to MAX_WIDEN x."""
        rate = max(self.answer_rate, 1.0 / MAX_WIDEN)
        return min(MAX_WIDEN * alpha, max(alpha, round(alpha / rate)))

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of recent round trips (None: too few samples yet)."""
        if len(self._samples) < MIN_SAMPLES:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._samples)
        return self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]

    def node(self, addr: Address) -> float | None:
        """The smoothed round trip of ``addr`` if it ever answered (and is still remembered)."""
        return self._nodes.get(addr)

    def soft_timeout(self) -> float:
        """Release the slot once three answers in four would have come (p75 x 1.25).

        With fewer than MIN_SAMPLES round trips, twice the slowest of them, never above
        DEFAULT_SOFT: a quantile of a handful says little, but the slowest answer seen bounds
        how long a live node took here. A cold command knows one round trip (its join's)
        when its first lookup round goes out, and that round's dead and lost requests held
        their slots for the whole default (kernel lab, loopback with 30 % loss, traced: a
        first packet at 0.18 s, the next requests at 0.58 s, printed at 1.18 s)."""
        q = self.quantile(0.75)
        if q is not None:
            return _clamp(1.25 * q, SOFT_MIN, SOFT_MAX)
        if not self._samples:
            return DEFAULT_SOFT
        return _clamp(FEW_SAMPLES_FACTOR * max(self._samples), SOFT_MIN, DEFAULT_SOFT)

    def give_up(self, addr: Address) -> float:
        """Stop counting on ``addr`` for the closest-k window: 1.25 x p90 of everyone, or
        twice its own smoothed round trip when that is longer."""
        q = self.quantile(0.90)
        base = DEFAULT_GIVE_UP if q is None else _clamp(1.25 * q, GIVE_UP_MIN, GIVE_UP_MAX)
        own = self._nodes.get(addr)
        return base if own is None else min(GIVE_UP_MAX, max(base, 2 * own))
