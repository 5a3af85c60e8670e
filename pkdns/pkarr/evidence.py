"""What a signed packet or a DHT lookup must show before the daemon believes it (pure checks).

Two project decisions that every way a packet comes in shares (DHT lookups, relay lookups,
relay PUTs, the state dir, the relay API's NetworkOnly GET):

- a packet dated more than an hour after our wall clock is refused (pkarr itself sets no bound;
  accepting it would let a signer with a broken clock freeze its record);
- a key is absent (NXDOMAIN, relay 404) only when enough close nodes answered without it;
  otherwise the lookup proved nothing (SERVFAIL, relay 503).
"""

from __future__ import annotations

from typing import Protocol

from pkdns.pkarr.signed_packet import SignedPacket

FUTURE_SLACK_US = 3600 * 1_000_000
"""Reject packets dated more than this after our wall clock."""

ENOUGH_RESPONDERS = 8
"""Close nodes that must answer without the item before a key counts as absent; fewer when the
lookup knew fewer nodes (a small loopback testnet)."""


class LookupCounters(Protocol):
    """The counters of a finished DHT lookup (``pkdns.dht.lookup.Outcome``)."""

    @property
    def queried(self) -> int: ...

    @property
    def responded(self) -> int: ...

    @property
    def deadline_hit(self) -> bool: ...

    @property
    def timed_out(self) -> int: ...


def from_the_future(packet: SignedPacket, wall_us: int) -> bool:
    """True when ``packet`` is dated more than :data:`FUTURE_SLACK_US` after ``wall_us``.

    pkarr itself has no bound; ours keeps a key holder with a broken clock from freezing the
    record: a packet dated years ahead would win every ``more_recent_than`` until then.
    """
    return packet.timestamp > wall_us + FUTURE_SLACK_US


def absence_proven(outcome: LookupCounters) -> bool:
    """Did this DHT lookup show that no node holds the item?

    Yes iff it finished before its deadline and at least ``min(8, queried)`` nodes responded
    (and at least one). ``queried`` stands for the nodes the lookup knew: a lookup that
    finishes normally has asked every candidate in its closest-20 window, so the candidates it
    never asked lie beyond 20 responders. A lookup that timed out, or whose close nodes were
    mostly silent, proves nothing: the packet may sit on the nodes that did not answer.

    Nor does a lookup where more than one node in three stayed silent (timed_out > responded
    / 2): a lookup gives up on slow nodes and fills its window with farther ones that answer,
    so on a lossy network "every node in the window answered" says nothing about the closest
    ones. Measured in the kernel lab at 50 % loss with a third of the nodes dead, the old rule
    answered NXDOMAIN for 47 of 100 keys that were stored.
    """
    if outcome.deadline_hit or outcome.timed_out * 2 > outcome.responded:
        return False
    return outcome.responded > 0 and outcome.responded >= min(ENOUGH_RESPONDERS,
                                                               outcome.queried)


__all__ = ["ENOUGH_RESPONDERS", "FUTURE_SLACK_US", "LookupCounters", "absence_proven",
           "from_the_future"]
