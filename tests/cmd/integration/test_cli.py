"""`pkdns testnet`, `pkdns publish`, `pkdns resolve` end to end: against our own testnet
(as a subprocess) and against swarms made only of foreign nodes (bittorrent-dht, libtorrent)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkdns.cli import main
from pkdns.dht.node import DhtNode
from pkdns.pkarr.client import to_item
from tests.support.peers import BittorrentSwarm, LibtorrentSwarm, bittorrent_swarm, node_script
from tests.support.pkarr_factory import keypair, packet

ZONE = '@ 300 IN A 192.0.2.7\nwww 300 IN CNAME @\n_txt 60 IN TXT "hello dht"\n'


@pytest.fixture
def keyfiles(tmp_path: Path) -> tuple[str, str, str]:
    seed, zone = tmp_path / "seed", tmp_path / "zone"
    seed.write_text(os.urandom(32).hex() + "\n")
    zone.write_text(ZONE)
    out = subprocess.run([sys.executable, "-m", "pkdns", "pubkey", str(seed)],
                         capture_output=True, text=True, check=True)
    return str(seed), str(zone), out.stdout.strip()


def _publish_resolve(boot: list[str], keyfiles: tuple[str, str, str],
                     capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    seed, zone, key = keyfiles
    flags = [x for b in boot for x in ("--bootstrap", b)]
    assert main(["publish", seed, zone, *flags]) == 0
    published = capsys.readouterr().out
    assert published.startswith(f"{key}: stored on ") and int(published.split()[3]) >= 5
    assert main(["resolve", key, *flags]) == 0
    text = capsys.readouterr().out
    assert f"; public key {key}" in text and "@ 300 IN A 192.0.2.7" in text
    assert '_txt 60 IN TXT "hello dht"' in text and "www 300 IN CNAME @" in text
    assert main(["resolve", key, "--json", *flags]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


@pytest.fixture(scope="module")
def testnet_process() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "pkdns", "testnet", "--nodes", "12"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        proc.stdout.close()


def test_publish_resolve_on_our_testnet(testnet_process: str, keyfiles: tuple[str, str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    result = _publish_resolve([testnet_process], keyfiles, capsys)
    assert result["public_key"] == keyfiles[2] and isinstance(result["timestamp"], int)


def test_resolve_prints_before_it_closes_the_node(testnet_process: str,
                                                  keyfiles: tuple[str, str, str],
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is out (flushed) before the node's teardown: the kernel lab times a cold
    resolve to its answer line, and a script reading it need not wait for the exit."""
    seed, zone, key = keyfiles
    assert main(["publish", seed, zone, "--bootstrap", testnet_process]) == 0
    capsys.readouterr()
    close = DhtNode.close

    async def closing(node: DhtNode) -> None:
        print("<node closes>")
        await close(node)

    monkeypatch.setattr(DhtNode, "close", closing)
    assert main(["resolve", key, "--json", "--bootstrap", testnet_process]) == 0
    answer, closed = capsys.readouterr().out.splitlines()
    assert json.loads(answer)["public_key"] == key and closed == "<node closes>"


def test_resolve_unknown_key_is_exit_1(testnet_process: str, keyfiles: tuple[str, str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    key = "pk:" + keyfiles[2]  # never published
    code = main(["resolve", key, "--bootstrap", testnet_process])
    err = capsys.readouterr().err
    assert code == 1 and "no signed packet found" in err and "answered" in err


def test_resolve_refuses_a_packet_from_the_future(testnet_process: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A packet dated two hours ahead is stored on the DHT (nodes keep the highest seq):
    ``pkdns resolve`` refuses it as the daemon does, instead of printing it (before, the
    command line's copy of the lookup skipped the one-hour bound)."""
    kp = keypair(31)
    ahead = packet(kp, ["@ 300 IN A 192.0.2.99"], ts=time.time_ns() // 1000 + 7200 * 10**6)
    host, port = testnet_process.rsplit(":", 1)

    async def put() -> int:
        node = DhtNode(mode="client")
        await node.start("127.0.0.1", 0)
        try:
            assert await node.join([(host, int(port))], timeout=5.0)
            return (await node.put_mutable(to_item(ahead), timeout=5.0)).stored
        finally:
            await node.close()

    assert asyncio.run(put()) > 0
    code = main(["resolve", kp.public_key.z32, "--bootstrap", testnet_process])
    captured = capsys.readouterr()
    assert code == 1 and "192.0.2.99" not in captured.out
    assert "no signed packet found" in captured.err
    assert "1 dated more than an hour ahead (refused)" in captured.err


def test_bad_inputs_are_exit_2(tmp_path: Path, keyfiles: tuple[str, str, str],
                               capsys: pytest.CaptureFixture[str]) -> None:
    seed, zone, _ = keyfiles
    assert main(["resolve", "not-a-key", "--bootstrap", "127.0.0.1:9"]) == 2
    assert main(["publish", str(tmp_path / "missing"), zone, "--bootstrap", "127.0.0.1:9"]) == 2
    bad = tmp_path / "bad.zone"
    bad.write_text("@ 300 IN A not-an-address\n")
    assert main(["publish", seed, str(bad), "--bootstrap", "127.0.0.1:9"]) == 2
    assert main(["testnet", "--nodes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("pkdns: error:") == 4 and "Traceback" not in err


def test_unreachable_bootstrap_is_exit_1(keyfiles: tuple[str, str, str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", keyfiles[2], "--bootstrap", "127.0.0.1:9"]) == 1
    assert "could not join the DHT" in capsys.readouterr().err


class LossyForwarder:
    """A UDP relay in front of one DHT node that drops each client's first ``lose`` datagrams
    (a lossy first hop); replies go back to the client from the relay's own address."""

    def __init__(self, target: tuple[str, int], lose: int) -> None:
        self.target, self.lose = target, lose
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.front.getsockname()[1]}"

    def _run(self) -> None:
        back: dict[tuple[str, int], socket.socket] = {}
        seen: dict[tuple[str, int], int] = {}
        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, *back.values()], [], [], 0.05)
            for sock in ready:
                data, addr = sock.recvfrom(65536)
                if sock is self.front:
                    seen[addr] = seen.get(addr, 0) + 1
                    if seen[addr] <= self.lose:
                        self.dropped += 1
                        continue
                    if addr not in back:
                        back[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        back[addr].bind(("127.0.0.1", 0))
                    back[addr].sendto(data, self.target)
                else:
                    client = next(c for c, s in back.items() if s is sock)
                    self.front.sendto(data, client)
        for sock in [self.front, *back.values()]:
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_resolve_survives_lost_bootstrap_datagrams(testnet_process: str,
                                                   keyfiles: tuple[str, str, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The only bootstrap host loses our first two datagrams: we resend and still resolve
    (before, the one find_node timed out and resolve exited "could not join the DHT")."""
    seed, zone, key = keyfiles
    assert main(["publish", seed, zone, "--bootstrap", testnet_process]) == 0
    host, port = testnet_process.rsplit(":", 1)
    lossy = LossyForwarder((host, int(port)), lose=2)
    try:
        code = main(["resolve", key, "--bootstrap", lossy.address])
    finally:
        lossy.close()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert lossy.dropped == 2 and "@ 300 IN A 192.0.2.7" in out


@pytest.fixture(scope="module")
def foreign_only() -> Iterator[tuple[BittorrentSwarm, LibtorrentSwarm]]:
    with bittorrent_swarm(12) as js:
        lt = LibtorrentSwarm(8, join=js.bootstrap)
        try:
            yield js, lt
        finally:
            lt.close()


@pytest.mark.interop
def test_publish_resolve_on_foreign_only_swarm(
        foreign_only: tuple[BittorrentSwarm, LibtorrentSwarm], keyfiles: tuple[str, str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    js, lt = foreign_only
    boot = [f"{h}:{p}" for h, p in js.bootstrap[:2] + lt.bootstrap[:1]]
    result = _publish_resolve(boot, keyfiles, capsys)
    theirs = node_script("dht_get.js", "--bootstrap", boot[0], "--ro", "--pubkey", keyfiles[2])
    assert theirs["found"] and theirs["sig_ok"] and theirs["v"] == result["packet_hex"]
    assert theirs["seq"] == result["timestamp"]
    got = lt.get(5, bytes.fromhex(theirs["public_key"]), 20)
    assert got is not None and got["v"].hex() == result["packet_hex"]


def test_resolve_accepts_every_form_the_resolver_answers(
        testnet_process: str, keyfiles: tuple[str, str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """``pkdns resolve <key>.key`` was refused ("'key' has 3 characters")."""
    seed, zone, key = keyfiles
    flags = ["--bootstrap", testnet_process]
    assert main(["publish", seed, zone, *flags]) == 0
    capsys.readouterr()
    for form in (f"{key}.key", f"www.{key}.key.", f"{key}.", f"WWW.{key.upper()}", f"pk:{key}",
                 f"https://{key}.key/path", f"http://www.{key}/"):
        assert main(["resolve", form, *flags]) == 0, (form, capsys.readouterr().err)
        assert f"; public key {key}" in capsys.readouterr().out, form
    assert main(["resolve", "garbage.key", "--bootstrap", "127.0.0.1:9"]) == 2
    assert "'garbage' is not a valid key" in capsys.readouterr().err
