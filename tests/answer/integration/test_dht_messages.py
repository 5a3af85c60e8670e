"""``pkdns_dht_messages`` counts what the DHT socket sees: a malformed datagram and an
unsolicited reply (late or forged), sent over a real UDP socket to the daemon's node, show up
in ``/metrics`` with their kind, as do the queries the node sent."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

from pkdns.app import Daemon
from pkdns.config import Config, DhtConfig, DnsConfig, HttpConfig

UNSOLICITED = b"d1:rd2:id20:" + b"x" * 20 + b"e1:t2:zz1:y1:re"


def _count(text: str, direction: str, kind: str) -> float:
    m = re.search(rf'pkdns_dht_messages_total{{direction="{direction}",kind="{kind}"}} (\S+)',
                  text)
    return float(m.group(1)) if m else 0.0


async def test_malformed_and_unsolicited_krpc_are_counted(tmp_path: Path) -> None:
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # a bootstrap node that never answers
    quiet.bind(("127.0.0.1", 0))
    cfg = Config(state_dir=str(tmp_path / "state"),
                 dns=DnsConfig(listen=(("127.0.0.1", 0),), upstream=(("127.0.0.1", 9),)),
                 dht=DhtConfig(port=0, bind="127.0.0.1", bootstrap=(quiet.getsockname(),),
                               request_timeout=0.3),
                 http=HttpConfig(enabled=False))
    daemon = Daemon(cfg)
    await daemon.pkarr.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for data in (b"not bencode", b"d1:y1:qe", UNSOLICITED):
                s.sendto(data, daemon.pkarr.node.address)
        for _ in range(50):
            await asyncio.sleep(0.02)
            if daemon.pkarr.node.protocol.stats.received >= 3:
                break
        text = daemon.metrics.render().decode()
    finally:
        await daemon.pkarr.stop()
        quiet.close()
    assert _count(text, "in", "received") == 3
    assert _count(text, "in", "malformed") == 2
    assert _count(text, "in", "unsolicited") == 1
    assert _count(text, "out", "sent") >= 1          # the bootstrap queries to the quiet node
    text2 = daemon.metrics.render().decode()         # counted once, not again per render
    assert _count(text2, "in", "malformed") == 2
