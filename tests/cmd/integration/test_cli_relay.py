"""`pkdns publish/resolve --relay`: a real pkdns daemon is the relay (its HTTP relay API, on its
own loopback testnet), the CLI's DHT is a second testnet, so each source can hold a different
packet and resolve must pick the most recent one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkdns.cli import main
from tests.support.daemon import stop_process
from tests.support.knot import free_port

pytestmark = pytest.mark.slow
PKDNS = [sys.executable, "-m", "pkdns"]


def _testnet() -> subprocess.Popen[str]:
    return subprocess.Popen([*PKDNS, "testnet", "--nodes", "8"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    stop_process(proc, signal.SIGTERM, 10)
    if proc.stdout is not None:
        proc.stdout.close()


def _status(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/status", timeout=1) as resp:
            status: dict[str, object] = json.loads(resp.read())
            return status
    except OSError:
        return None


def _relay_daemon(tmp: Path, boot: str) -> tuple[subprocess.Popen[str], str]:
    """A pkdns daemon with its HTTP relay API on a free port, joined to ``boot``'s testnet.
    Retried on a fresh port if it exits (another test may take the free port first)."""
    for attempt in range(3):
        port = free_port()
        log_path = tmp / f"pkdns-{attempt}.log"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                [*PKDNS, "serve", "--listen", "127.0.0.1:0", "--http", f"127.0.0.1:{port}",
                 "--upstream", "127.0.0.1:9", "--dht-port", "0", "--bootstrap", boot,
                 "--state-dir", str(tmp / "state"), "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and daemon.poll() is None:
            status = _status(url)
            if status and int(str(status["routing_table_size"])) >= 4:
                return daemon, url
            time.sleep(0.1)
        _stop(daemon)
    raise AssertionError(f"relay daemon did not start and join: {log_path.read_text()}")


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(relay URL, bootstrap of the CLI's own testnet)."""
    relay_net, cli_net = _testnet(), _testnet()
    procs = [relay_net, cli_net]
    try:
        assert relay_net.stdout is not None and cli_net.stdout is not None
        relay_boot = relay_net.stdout.readline().strip()
        cli_boot = cli_net.stdout.readline().strip()
        daemon, url = _relay_daemon(tmp_path_factory.mktemp("relay"), relay_boot)
        procs.append(daemon)
        yield url, cli_boot
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture
def seed(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "seed"
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)   # a seed others may read draws a warning on stderr
    out = subprocess.run([*PKDNS, "pubkey", str(path)], capture_output=True, text=True,
                         check=True)
    return path, out.stdout.strip()


def _zone(tmp: Path, ip: str) -> str:
    path = tmp / f"zone-{ip}"
    path.write_text(f"@ 300 IN A {ip}\n")
    return str(path)


def test_relay_only_publish_and_resolve(nets: tuple[str, str], seed: tuple[Path, str],
                                        tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = nets
    path, key = seed
    assert main(["publish", str(path), _zone(tmp_path, "192.0.2.1"), "--relay", url,
                 "--no-dht"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{key}: published (timestamp ")
    assert out[1].startswith(f"relay {url}: stored (relay reports ")
    assert int(out[1].split("reports ")[1].split()[0]) >= 1
    assert main(["resolve", key, "--relay", url, "--no-dht"]) == 0
    text = capsys.readouterr().out
    assert "from the relays" in text and "@ 300 IN A 192.0.2.1" in text
    assert main(["resolve", key, "--relay", url, "--no-dht", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["source"] == "relay" and got["records"] == ["@ 300 IN A 192.0.2.1"]


def test_resolve_takes_the_most_recent_over_dht_and_relay(
        nets: tuple[str, str], seed: tuple[Path, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, boot = nets
    path, key = seed
    assert main(["publish", str(path), _zone(tmp_path, "192.0.2.1"), "--bootstrap", boot]) == 0
    assert main(["publish", str(path), _zone(tmp_path, "192.0.2.2"), "--relay", url,
                 "--no-dht"]) == 0                          # newer, relay (other DHT) only
    capsys.readouterr()
    both = ["--bootstrap", boot, "--relay", url, "--json"]
    assert main(["resolve", key, *both]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["source"] == "relay" and got["records"] == ["@ 300 IN A 192.0.2.2"]
    assert main(["publish", str(path), _zone(tmp_path, "192.0.2.3"), "--bootstrap", boot]) == 0
    capsys.readouterr()
    assert main(["resolve", key, *both]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["source"] == "dht" and got["records"] == ["@ 300 IN A 192.0.2.3"]


def test_publish_to_dht_and_relay_reports_both(nets: tuple[str, str], seed: tuple[Path, str],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    url, boot = nets
    path, key = seed
    dead = "http://127.0.0.1:9"
    assert main(["publish", str(path), _zone(tmp_path, "192.0.2.4"), "--bootstrap", boot,
                 "--relay", url, "--relay", dead]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{key}: stored on ") and int(lines[0].split()[3]) >= 5
    assert lines[1].startswith(f"relay {url}: stored")
    assert f"pkdns: warning: relay {dead}:" in captured.err


def test_nothing_stored_or_found_is_exit_1(nets: tuple[str, str], seed: tuple[Path, str],
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = nets
    path, key = seed
    dead = "http://127.0.0.1:9"
    assert main(["publish", str(path), _zone(tmp_path, "192.0.2.5"), "--relay", dead,
                 "--no-dht"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pkdns: error: {key}: not stored anywhere (relay {dead}: ")
    assert err.count("\n") == 1
    assert main(["resolve", key, "--relay", url, "--no-dht"]) == 1
    assert "no signed packet found (1 relay(s) had nothing)" in capsys.readouterr().err
    assert main(["resolve", key, "--relay", dead, "--no-dht"]) == 1
    assert f"relay {dead}:" in capsys.readouterr().err


def test_source_flags_are_checked(seed: tuple[Path, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, key = seed
    assert main(["resolve", key, "--no-dht"]) == 2
    assert main(["publish", str(path), _zone(tmp_path, "192.0.2.6"), "--no-dht"]) == 2
    assert main(["resolve", key, "--no-dht", "--relay", "http://127.0.0.1:9",
                 "--bootstrap", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("pkdns: error: --no-dht needs at least one --relay URL") == 2
    assert "contradict" in err
    with pytest.raises(SystemExit) as exc:
        main(["resolve", key, "--relay", "ftp://relay.example"])
    assert exc.value.code == 2
    assert "not an http(s) relay URL" in capsys.readouterr().err
