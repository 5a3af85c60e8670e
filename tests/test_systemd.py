"""systemd units: `systemd-analyze verify` accepts them and the hardening is what we promise."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
PKDNS = ROOT / ".venv" / "bin" / "pkdns"


def _directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"(\w+)=(.*)", line.strip())
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


@pytest.fixture
def installed_copy(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this checkout's pkdns (verify checks it exists)."""
    assert PKDNS.exists(), "the package must be installed in .venv"
    for name in ("pkdns.service", "pkdns.socket"):
        text = (UNITS / name).read_text().replace("/usr/local/bin/pkdns", str(PKDNS))
        (tmp_path / name).write_text(text)
    return tmp_path


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is required (Debian package systemd)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_systemd_analyze_verify_is_clean(installed_copy: Path) -> None:
    # verify exits 0 on unknown keys and bad values ("ignoring"), so any output is a failure.
    proc = _analyze("verify", str(installed_copy / "pkdns.service"),
                    str(installed_copy / "pkdns.socket"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == ""


def test_verify_catches_a_broken_unit(installed_copy: Path) -> None:
    """The check above can fail: a typo in a value is reported."""
    unit = installed_copy / "pkdns.service"
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    proc = _analyze("verify", str(unit))
    assert "Failed to parse service type" in proc.stderr


def test_security_exposure_is_low(installed_copy: Path) -> None:
    proc = _analyze("security", "--offline=true",
                    str(installed_copy / "pkdns.service"))
    # (systemd 252 exits 1 here even under --threshold, so read the figure instead.)
    m = re.search(r"Overall exposure level for pkdns.service: ([\d.]+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout


def test_service_hardening_directives() -> None:
    d = _directives(UNITS / "pkdns.service")
    expect = {
        "Type": "notify", "DynamicUser": "yes", "StateDirectory": "pkdns",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "Restart": "on-failure",
    }
    for key, value in expect.items():
        assert d.get(key) == [value], key
    assert "@system-service" in d["SystemCallFilter"]
    assert d["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert any("--check" in cmd for cmd in d["ExecStartPre"])
    assert d["ExecStart"][0].startswith("/usr/local/bin/pkdns serve --config /etc/pkdns/")


def test_socket_unit_listens_udp_and_tcp() -> None:
    d = _directives(UNITS / "pkdns.socket")
    assert d["ListenDatagram"] == ["127.0.0.1:53", "[::1]:53"]
    assert d["ListenStream"] == ["127.0.0.1:53", "[::1]:53"]
    assert d["Service"] == ["pkdns.service"]
