"""Sybil clusters around a key (pure): more node ids next to a target than chance allows.

Node ids are uniformly random (BEP 42 ties them to IP addresses), so among N nodes the i-th
closest to any target lies about i/N of the id space away. An attacker who wants a key's
neighbourhood picks ids right next to its target: 16 nodes where chance puts one or two. They
can answer with an older packet (validly signed, so the signature cannot tell), or with nothing,
and point only at each other; a lookup that stops once the closest k answered would hear only
them. So the closest candidates packed more than :data:`DENSITY` times as tightly as N predicts
do not count toward k (the lookup asks k nodes beyond them), and a packet only they gave is held
back until those k answered.

For honest ids the chance of a false alarm is that of Poisson(m / DENSITY) >= m for some m >= 8:
about 1e-5 with a right N, 5 % if N is underestimated four times (which costs a wider lookup,
nothing else).
"""

from __future__ import annotations

from collections.abc import Sequence

from pkdns.dht.ids import ID_BITS

DENSITY = 8
MIN_CLUSTER = 8
UNKNOWN_SIZE = 4_000_000
"""N assumed when the routing table cannot tell (a one-shot command that only joined): large
enough that an honest neighbourhood never looks packed unless Mainline has more than
DENSITY x this many nodes (it has 10-25 M), small enough that ids chosen next to a key (sharing
25+ bits with it) still do. Turning the test off instead let a cluster's older packet win
cold lookups (kernel lab: 4 of 20)."""
QUORUM = 4
"""Holders of the best packet among the closest k below which a lookup asks k more nodes."""


def cluster_size(dists: Sequence[int], network_size: int) -> int:
    """How many of ``dists`` (XOR distances to the target, closest first) form a cluster.

    First the largest m >= MIN_CLUSTER with d_m < (m / DENSITY) x 2^160 / N: the m closest are
    too many for their radius. Honest nodes just outside a cluster pass that test too (the
    cluster's members count toward their m), so the cluster ends at the widest gap (in bits of
    distance) between consecutive nodes from MIN_CLUSTER to m. N unknown (0): UNKNOWN_SIZE."""
    if network_size <= 0:
        network_size = UNKNOWN_SIZE
    unit = (1 << ID_BITS) // network_size
    dense = 0
    for i, d in enumerate(dists, start=1):
        if i >= MIN_CLUSTER and d * DENSITY < i * unit:
            dense = i
    if not dense:
        return 0
    bits = [d.bit_length() for d in dists]
    beyond = bits + [ID_BITS + 1]
    return max(range(MIN_CLUSTER, dense + 1), key=lambda j: (beyond[j] - bits[j - 1], j))
