"""Foreign DHT peers on loopback: npm bittorrent-dht@11 swarms and libtorrent 2.1.1 sessions.

Recipes and gotchas learnt in a loopback lab of both implementations: bittorrent-dht replies
capped to 8 nodes (libtorrent drops > 1500-byte datagrams), libtorrent needs a literal listen
IP, relaxed per-IP rules when every node is on 127.0.0.1, and a high DoS-blocker threshold.
Every process has a time limit and is stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # libtorrent itself is imported only by the tests that use it
    from libtorrent import settings_pack

INTEROP = Path(__file__).resolve().parent.parent / "interop"
Address = tuple[str, int]


def node_script(script: str, *args: str, timeout: float = 40.0) -> dict[str, Any]:
    """Run a one-shot ``tests/interop`` script and return its last JSON line."""
    proc = subprocess.run(["node", str(INTEROP / script), *args, "--timeout", str(int(timeout))],
                          capture_output=True, text=True, timeout=timeout + 10, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{script} printed no JSON: {proc.stdout!r} {proc.stderr!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def node_script_async(script: str, *args: str, timeout: float = 40.0) -> dict[str, Any]:
    """:func:`node_script` in a thread, so our own nodes on the event loop keep serving."""
    return await asyncio.to_thread(node_script, script, *args, timeout=timeout)


@dataclass
class BittorrentSwarm:
    """N bittorrent-dht nodes in one ``node`` process (``dht_swarm.js``)."""

    nodes: list[Address] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None

    @property
    def bootstrap(self) -> list[Address]:
        return self.nodes[:3]

    def bootstrap_arg(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.bootstrap)


@contextlib.contextmanager
def bittorrent_swarm(n: int, *, join: list[Address] | None = None,
                     time_limit: int = 600) -> Iterator[BittorrentSwarm]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "nodes.json"
        args = ["node", str(INTEROP / "dht_swarm.js"), "--n", str(n), "--port", "0", "--quiet",
                "--time-limit", str(time_limit), "--out", str(out)]
        if join:
            args += ["--bootstrap", ",".join(f"{h}:{p}" for h, p in join)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("dht_swarm.js exited before it was ready")
                if '"ready":true' in line:
                    break
            listed = json.loads(out.read_text())
            yield BittorrentSwarm([(n["host"], int(n["port"])) for n in listed], proc)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


# -- libtorrent ------------------------------------------------------------------------------
LOOPBACK_DHT_SETTINGS: settings_pack = {
    "enable_dht": True, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "dht_bootstrap_nodes": "", "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False, "dht_enforce_node_id": False,
    "dht_prefer_verified_node_ids": False, "dht_block_ratelimit": 100000,
    "dht_block_timeout": 0, "dht_ignore_dark_internet": False,
    "dht_max_fail_count": 20, "dht_upload_rate_limit": 1000000,
    "aio_threads": 1, "hashing_threads": 1,
}


def expanded_secret(seed: bytes) -> bytes:
    """libtorrent wants the orlp 64-byte secret: SHA512(seed), scalar half clamped."""
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    return bytes(h)


class LibtorrentSwarm:
    """``n`` libtorrent sessions in this process, joined to each other (and ``join``)."""

    def __init__(self, n: int, join: list[Address] | None = None) -> None:
        import libtorrent as lt

        self.lt = lt
        self.sessions: list[Any] = []
        self.nodes: list[Address] = []
        for _ in range(n):
            settings = LOOPBACK_DHT_SETTINGS.copy()
            settings["listen_interfaces"] = "127.0.0.1:0"
            settings["alert_mask"] = (lt.alert.category_t.dht_notification
                                      | lt.alert.category_t.error_notification)
            params = lt.session_params()
            params.settings = settings
            ses = lt.session(params)
            self.sessions.append(ses)
            self.nodes.append(("127.0.0.1", ses.listen_port()))
        seeds = list(join or []) + self.nodes[:2]
        for _ in range(3):  # add_dht_node is fire-and-forget: repeat, then let pings settle
            for ses in self.sessions:
                for h, p in seeds + self.nodes[:: max(1, n // 5)]:
                    ses.add_dht_node((h, p))
            time.sleep(0.3)

    @property
    def bootstrap(self) -> list[Address]:
        return self.nodes[:3]

    def _wait(self, ses: Any, pred: Any, timeout: float) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ses.wait_for_alert(200)
            for a in ses.pop_alerts():
                if pred(a):
                    return a
        return None

    def routing_table_size(self, i: int) -> int:
        ses = self.sessions[i]
        ses.post_dht_stats()
        a = self._wait(ses, lambda a: isinstance(a, self.lt.dht_stats_alert), 5)
        return -1 if a is None else sum(b["num_nodes"] for b in a.routing_table)

    def put(self, i: int, seed: bytes, public_key: bytes, v: bytes,
            timeout: float = 30) -> dict[str, Any] | None:
        """libtorrent chooses seq itself: highest seen + 1 (the binding takes no seq)."""
        ses = self.sessions[i]
        ses.dht_put_mutable_item(expanded_secret(seed), public_key, v, b"")
        box: list[dict[str, Any]] = []

        def done(a: Any) -> bool:
            if isinstance(a, self.lt.dht_put_alert) and bytes(a.public_key) == public_key:
                box.append({"num_success": a.num_success, "seq": a.seq,
                            "signature": bytes(a.signature)})
                return True
            return False

        self._wait(ses, done, timeout)
        return box[0] if box else None

    def get(self, i: int, public_key: bytes, timeout: float = 30) -> dict[str, Any] | None:
        """The highest-seq item libtorrent found (until its authoritative alert)."""
        ses = self.sessions[i]
        ses.dht_get_mutable_item(public_key, b"")
        best: dict[str, Any] | None = None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ses.wait_for_alert(200)
            for a in ses.pop_alerts():
                if not (isinstance(a, self.lt.dht_mutable_item_alert)
                        and bytes(a.key) == public_key):
                    continue
                item = a.item
                v = item.encode("latin-1") if isinstance(item, str) else item
                cur = {"seq": int(a.seq), "v": v, "sig": bytes(a.signature)}
                if a.seq > 0 and (best is None or cur["seq"] > best["seq"]):
                    best = cur
                if a.authoritative or best is not None:
                    return best
        return best

    def close(self) -> None:
        for ses in self.sessions:
            with contextlib.suppress(Exception):
                ses.pause()
        self.sessions.clear()
