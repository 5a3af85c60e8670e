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
SHUN_DENSITY = 1024
"""How much more tightly than chance a reply's contacts must be packed, away from the target,
for :func:`off_target_clusters` to call them a cluster: 8 contacts sharing 30 bits on a
10 M-node Mainline, where chance puts 0.02 nodes. An honest node names its contacts closest to
the target; even one whose bucket for it is empty names its own neighbourhood, about 20 bits."""
MIN_NAMED = 4
"""Fewer contacts than this in a reply say nothing about how they are packed."""
Prefix = tuple[int, int]
"""An id prefix ``(value, bits)``: the first ``bits`` of an id, as an int (a cluster's)."""

OFF_TARGET_BITS = 16
"""How many more bits a cluster's members share with each other than with the target, for it
to be planted away from the target (next to another key). Members of a cluster planted next to
the target share a few bits more with each other than with it too (a reply names some of
them): those are :func:`cluster_size`'s to judge, their older packet held back, not ignored."""


def off_target_clusters(ids: Sequence[bytes], target: bytes,
                        network_size: int) -> list[Prefix]:
    """The id prefixes ``(value, bits)`` of clusters that one reply named instead of contacts
    near ``target``.

    A cluster planted next to one key answers a query for any other key with its own members
    too (they are all it knows), and honest nodes whose tables it filled name its members
    among their closest. An honest node names the contacts it has closest to the target,
    spread over the part of the id space around it. So :data:`MIN_NAMED` or more contacts of
    one reply that share a prefix the target does not (by :data:`OFF_TARGET_BITS` more bits),
    packed :data:`SHUN_DENSITY` times more tightly than N node ids allow, are a cluster's: a
    lookup need not ask its members, they name only each other (kernel lab, five clusters of
    16 in a swarm of 60: lookups for other keys spent up to a hundred queries on them and
    found no value)."""
    n = network_size if network_size > 0 else UNKNOWN_SIZE
    depth = min(ID_BITS, (SHUN_DENSITY * n // MIN_NAMED).bit_length())
    groups: dict[int, list[int]] = {}
    for i in ids:
        v = int.from_bytes(i, "big")
        groups.setdefault(v >> (ID_BITS - depth), []).append(v)
    t = int.from_bytes(target, "big")
    found = []
    for members in groups.values():
        if len(members) < MIN_NAMED:
            continue
        lo, hi = min(members), max(members)
        bits = ID_BITS - (lo ^ hi).bit_length()  # the prefix every one of them shares
        if bits - (ID_BITS - (lo ^ t).bit_length()) >= OFF_TARGET_BITS:
            found.append((lo >> (ID_BITS - bits), bits))
    return found


SHELLS = 6
"""Walks around a key that a cluster hides (:func:`shell_targets`): the k closest honest nodes
span about three shells, and where they start is known only to a shell or two."""


def shell_targets(target: bytes, depth: int, cluster_depth: int, n: int = SHELLS) -> list[bytes]:
    """Targets next to ``target`` whose closest nodes are the honest ones a cluster hides.

    Every node asked about a key names the 8 contacts it has closest to it, and once a cluster
    sits next to the key (sharing ``cluster_depth`` bits with it) and has announced itself to
    the swarm, those are the cluster's members: no reply names the honest nodes around the
    key, the ones that hold it. Shell b -- the nodes sharing exactly b bits with the key -- is
    what a walk toward the key with bit b flipped finds, the cluster being farther from that
    target than anyone in the shell. ``depth`` is how many bits the closest node known outside
    the cluster shares with the key: the shells from ``depth + 1`` on, below the cluster."""
    t = int.from_bytes(target, "big")
    shells = range(depth + 1, min(depth + 1 + n, cluster_depth))
    return [(t ^ (1 << (ID_BITS - 1 - b))).to_bytes(len(target), "big") for b in shells]


def in_prefix(node_id: int, prefix: Prefix, bits: int = ID_BITS) -> bool:
    """Does ``node_id`` (an id as an int, or the first ``bits`` of one: a prefix itself) lie
    inside ``prefix`` (value, bits)?"""
    value, length = prefix
    return length <= bits and node_id >> (ID_BITS - length) == value


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
