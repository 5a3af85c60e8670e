"""The kernel lab's own peers, in one process: honest pkdns nodes, broken nodes, Sybils.

    python -m tests.support.klab_peers --join 127.0.0.1:4000 --honest 6 --no-bep44 4 --errors 2

* honest: server-mode :class:`~pkdns.dht.node.DhtNode` s with upkeep, as a pkdns daemon in
  ``mode = "server"`` runs them;
* no-bep44: nodes that know BEP 5 only -- they answer ``ping``/``find_node``/``get_peers``
  with real contacts and ``get``/``put`` with error 204 "Method Unknown", as old DHT clients do;
* errors: nodes that answer every query with error 202 "Server Error" (overloaded or broken);
* Sybil clusters (stdin ``sybil {json}``): ``size`` nodes whose ids share 40 bits with a
  key's target, so they are the closest nodes to it, that hold an older validly signed item
  of that key (or nothing), list only each other, give write tokens and drop every put.

Broken nodes and Sybils join the way a real attacker does: they send ``find_node`` to the
honest swarm every few seconds, and both bittorrent-dht and libtorrent add a querying node to
their tables. Prints one ``{"ready": true, ...}`` line; stdin ``kill 0,3`` closes those honest
nodes (``{"killed": [...]}``), ``stats`` prints per-cluster query counts; exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Any, cast

from pkdns.dht import krpc
from pkdns.dht.ids import target_of
from pkdns.dht.krpc import Address, ErrorMessage, NodeInfo, Query, Response
from pkdns.dht.node import DhtNode
from pkdns.errors import DecodeError

JOIN_EVERY = 5.0
"""Seconds between a fake node's find_node rounds to the swarm, so it stays in tables."""


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _near(target: bytes, rng: random.Random) -> bytes:
    """An id sharing the first 40 bits with ``target`` (closer than any honest node)."""
    return target[:5] + rng.randbytes(15)


@dataclass
class FakeNode(asyncio.DatagramProtocol):
    """One misbehaving node on its own UDP port: ``kind`` is no-bep44, errors or sybil."""

    kind: str
    id: bytes
    contacts: list[NodeInfo] = field(default_factory=list)
    item: dict[str, Any] | None = None
    asked: dict[str, int] = field(default_factory=dict)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            msg = krpc.decode(data)
        except DecodeError:
            return
        if isinstance(msg, Query) and self.transport is not None:
            self.asked[msg.method] = self.asked.get(msg.method, 0) + 1
            self.transport.sendto(krpc.encode(self._reply(msg)), addr)

    def _reply(self, q: Query) -> Response | ErrorMessage:
        if self.kind == "errors":
            return ErrorMessage(q.tid, 202, "Server Error")
        if self.kind == "no-bep44" and q.method in ("get", "put"):
            return ErrorMessage(q.tid, 204, "Method Unknown")
        if q.method in ("ping", "put", "announce_peer"):
            return Response(q.tid, self.id)  # a Sybil swallows puts
        nodes = tuple(self.contacts[:8])
        token = self.id[:4]
        if q.method != "get" or self.item is None:
            return Response(q.tid, self.id, nodes=nodes, token=token)
        it = self.item
        if q.seq is not None and it["seq"] <= q.seq:
            return Response(q.tid, self.id, nodes=nodes, token=token, seq=it["seq"])
        return Response(q.tid, self.id, nodes=nodes, token=token, k=it["k"], v=it["v"],
                        sig=it["sig"], seq=it["seq"])

    def announce(self, swarm: list[Address], rng: random.Random) -> None:
        """find_node for our own id to some of the swarm: they add us to their tables."""
        if self.transport is None:
            return
        for addr in rng.sample(swarm, min(len(swarm), 12)):
            q = Query(tid=rng.randbytes(2), method="find_node", id=self.id, target=self.id)
            self.transport.sendto(krpc.encode(q), addr)


class Lab:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.join = [_addr(a) for a in args.join.split(",") if a]
        self.honest: list[DhtNode] = []
        self.fakes: list[FakeNode] = []
        self.clusters: list[list[FakeNode]] = []
        self.swarm: list[Address] = list(self.join)

    async def start(self) -> None:
        for _ in range(self.args.honest):
            node = DhtNode(mode="server", request_rate_limit=0, request_timeout=1.0)
            await node.start("127.0.0.1", 0)
            self.honest.append(node)
        await asyncio.gather(*(n.bootstrap(self.join, timeout=5.0) for n in self.honest))
        for n in self.honest:
            n.start_upkeep(self.join)
        self.swarm += [n.address for n in self.honest]
        for e in self.honest[0].table.entries() if self.honest else []:
            self.swarm.append(e.addr)
        contacts = [NodeInfo(n.id, *n.address) for n in self.honest]
        for kind, count in (("no-bep44", self.args.no_bep44), ("errors", self.args.errors)):
            for _ in range(count):
                self.fakes.append(await self._fake(kind, self.rng.randbytes(20), contacts))

    async def _fake(self, kind: str, node_id: bytes, contacts: list[NodeInfo],
                    item: dict[str, Any] | None = None) -> FakeNode:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: FakeNode(kind, node_id, contacts, item), local_addr=("127.0.0.1", 0))
        proto.transport = transport  # connection_made runs only on the next loop turn
        return proto

    async def sybil(self, spec: dict[str, Any]) -> list[Address]:
        k = bytes.fromhex(spec["k"])
        target = target_of(k)
        old = spec.get("old")
        item = None if old is None else {"k": k, "seq": int(old["seq"]),
                                         "v": bytes.fromhex(old["v"]),
                                         "sig": bytes.fromhex(old["sig"])}
        cluster: list[FakeNode] = []
        for _ in range(int(spec.get("size", 16))):
            cluster.append(await self._fake("sybil", _near(target, self.rng), [], item))
        t = int.from_bytes(target, "big")
        for node in cluster:  # each lists the others, closest to the target first
            others = sorted((o for o in cluster if o is not node),
                            key=lambda o: int.from_bytes(o.id, "big") ^ t)
            node.contacts = [NodeInfo(o.id, *o.address) for o in others]
            node.announce(self.swarm, self.rng)
        self.clusters.append(cluster)
        return [n.address for n in cluster]

    async def keep_announcing(self) -> None:
        while True:
            await asyncio.sleep(self.args.announce_every)
            for node in self.fakes + [n for c in self.clusters for n in c]:
                node.announce(self.swarm, self.rng)

    def stats(self) -> dict[str, Any]:
        return {"clusters": [{"get": sum(n.asked.get("get", 0) for n in c),
                              "all": sum(sum(n.asked.values()) for n in c)}
                             for c in self.clusters],
                "broken": sum(sum(n.asked.values()) for n in self.fakes)}

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.honest))
        for f in self.fakes + [n for c in self.clusters for n in c]:
            if f.transport is not None:
                f.transport.close()


def _addr(text: str) -> Address:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def run(args: argparse.Namespace) -> None:
    lab = Lab(args)
    await lab.start()
    for fake in lab.fakes:
        fake.announce(lab.swarm, lab.rng)
    _emit({"ready": True, "pid": os.getpid(),
           "honest": [list(n.address) for n in lab.honest],
           "broken": [list(f.address) for f in lab.fakes]})
    announcer = asyncio.create_task(lab.keep_announcing())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with asyncio.timeout(args.time_limit):
            while line := (await reader.readline()).decode().strip():
                cmd, _, rest = line.partition(" ")
                if cmd == "kill":
                    killed = [int(i) for i in rest.split(",") if i]
                    await asyncio.gather(*(lab.honest[i].close() for i in killed))
                    _emit({"killed": killed})
                elif cmd == "sybil":
                    _emit({"sybil": [list(a) for a in await lab.sybil(json.loads(rest))]})
                elif cmd == "stats":
                    _emit({"stats": lab.stats()})
                else:
                    _emit({"error": f"unknown command {cmd!r}"})
    except TimeoutError:
        pass
    finally:
        announcer.cancel()
        await lab.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--join", required=True, help="HOST:PORT[,HOST:PORT...] of the swarm")
    ap.add_argument("--honest", type=int, default=6)
    ap.add_argument("--no-bep44", type=int, default=4)
    ap.add_argument("--errors", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=1200)
    ap.add_argument("--announce-every", type=float, default=JOIN_EVERY,
                    help="seconds between the fake nodes' find_node rounds to the swarm")
    asyncio.run(run(ap.parse_args()))
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
