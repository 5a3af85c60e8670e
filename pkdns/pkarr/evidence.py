"""What a signed packet or a DHT lookup must show before the daemon believes it (pure checks).

Two project decisions that every way a packet comes in shares (DHT lookups, relay lookups,
relay PUTs, the state dir, the relay API's NetworkOnly GET):

- a packet dated more than an hour after our wall clock is refused (pkarr itself sets no bound;
  accepting it would let a signer with a broken clock freeze its record);
- a key is absent (NXDOMAIN, relay 404) only when the lookup's k closest nodes all answered
  without it; otherwise the lookup proved nothing (SERVFAIL, relay 503).
"""

from __future__ import annotations

from typing import Protocol

from pkdns.pkarr.signed_packet import SignedPacket

FUTURE_SLACK_US = 3600 * 1_000_000
"""Reject packets dated more than this after our wall clock."""


class LookupOutcome(Protocol):
    """What a finished DHT lookup reports (``pkdns.dht.lookup.Outcome``)."""

    @property
    def absent(self) -> bool: ...


def from_the_future(packet: SignedPacket, wall_us: int) -> bool:
    """True when ``packet`` is dated more than :data:`FUTURE_SLACK_US` after ``wall_us``.

    pkarr itself has no bound; ours keeps a key holder with a broken clock from freezing the
    record: a packet dated years ahead would win every ``more_recent_than`` until then.
    """
    return packet.timestamp > wall_us + FUTURE_SLACK_US


def absence_proven(outcome: LookupOutcome) -> bool:
    """Did this DHT lookup show that no node holds the item?

    The lookup decides (``Outcome.absent``, set by ``IterativeLookup.done``): only when the
    k closest nodes it learnt of all answered without a value. Counters cannot tell: a lookup
    gives up on silent close nodes and fills its window with farther ones that answer, so on a lossy
    network "enough nodes answered" says nothing about the closest ones (measured in the
    kernel lab at 50 % loss with a third of the nodes dead, a counter rule answered
    NXDOMAIN for 47 of 100 keys that were stored). A lookup that timed out while the
    closest were still silent therefore proves nothing: SERVFAIL, never NXDOMAIN.
    """
    return outcome.absent


__all__ = ["FUTURE_SLACK_US", "LookupOutcome", "absence_proven", "from_the_future"]
