"""systemd-resolved in front of pkdns, with the drop-in docs/operations.md documents.

resolved is the resolver of most desktops, so its set-up is tested for real, without systemd
as PID 1: Debian's ``systemd-resolved`` package unpacked with ``dpkg -x`` (scripts/test-all.sh
downloads it; installing it would take over the machine's /etc/resolv.conf), run as root in a
network namespace of its own (:mod:`tests.e2e.netns`) and a private mount namespace with a
tmpfs on /run, a private system D-Bus (``resolvectl`` talks to resolved over it), a
``systemd-resolve`` user in the namespace's /etc/passwd, and /etc/systemd holding the drop-in
copied verbatim from the docs. Its stub then answers on 127.0.0.53, and the namespace's
resolv.conf points glibc there, as Debian does. Behind it runs ``pkdns --testnet`` on
127.0.0.1:53 (the demo key: A 127.0.0.1, AAAA ::1, ``www`` CNAME to the apex; ICANN names
from its loopback stand-in resolver: example.com A 192.0.2.1).

Proven through resolved -> pkdns with ``getent hosts`` and ``resolvectl query``: ``<key>``
(a single-label name, which resolved only sends to DNS with ``ResolveUnicastSingleLabel=yes``),
``www.<key>``, ``<key>.key`` and an ICANN name.

resolved only sends queries while some link has a routable address ("Network is down"
otherwise), so the namespace gets a veth pair with a documentation address and a default
route; nothing can leave it, the other end of the pair is in the same namespace.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.demoproc import run_demo
from tests.e2e.netns import ETC_NETNS, IP, Netns, netns, unavailable
from tests.support.require import require

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEB_GLOBS = (str(ROOT / ".cache" / "debs" / "systemd-resolved_*.deb"),
             "/var/cache/apt/archives/systemd-resolved_*.deb")
BASE_CONF = "[Resolve]\nLLMNR=no\nMulticastDNS=no\n"   # no multicast on the namespace's links
DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="method_return"/>
    <allow send_type="signal"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="signal"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""
RESOLVE_UID = 61053


def resolved_deb() -> Path | None:
    """The downloaded systemd-resolved package whose version matches the installed systemd
    (its binaries use the installed ``libsystemd-shared``), newest first."""
    env = os.environ.get("PKDNS_RESOLVED_DEB")
    if env:
        return Path(env)
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "systemd"],
                             capture_output=True, text=True, check=False).stdout.strip()
    found = [Path(p) for pattern in DEB_GLOBS for p in glob.glob(pattern)]
    exact = [p for p in found if p.name.startswith(f"systemd-resolved_{version}_".replace(
        ":", "%3a"))]
    return (exact or sorted(found))[-1] if found else None


def documented_dropin() -> str:
    """The ``ini`` block of docs/operations.md that follows its drop-in path, verbatim."""
    text = (ROOT / "docs" / "operations.md").read_text()
    m = re.search(r"```ini\n# /etc/systemd/resolved\.conf\.d/pkdns\.conf\n(.*?)```", text, re.S)
    assert m, "docs/operations.md: no ```ini block for /etc/systemd/resolved.conf.d/pkdns.conf"
    return m.group(1)


def _etc(ns: Netns, dropin: str) -> None:
    """Files ``ip netns exec`` mounts over /etc: the resolved user, config and drop-in."""
    etc = ETC_NETNS / ns.name
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    (etc / "passwd").write_text(
        passwd + f"systemd-resolve:x:{RESOLVE_UID}:{RESOLVE_UID}::/:/usr/sbin/nologin\n")
    (etc / "group").write_text(group + f"systemd-resolve:x:{RESOLVE_UID}:\n")
    (etc / "systemd" / "resolved.conf.d").mkdir(parents=True)
    (etc / "systemd" / "resolved.conf").write_text(BASE_CONF)
    (etc / "systemd" / "resolved.conf.d" / "pkdns.conf").write_text(dropin)


def _routable(ns: Netns) -> None:
    for cmd in (["link", "add", "pk0", "type", "veth", "peer", "name", "pk1"],
                ["addr", "add", "192.0.2.2/24", "dev", "pk0"], ["link", "set", "pk0", "up"],
                ["link", "set", "pk1", "up"], ["route", "add", "default", "dev", "pk0"]):
        subprocess.run([IP, "-n", ns.name, *cmd], check=True, capture_output=True)


@contextlib.contextmanager
def resolved(ns: Netns, unpacked: Path, tmp: Path) -> Iterator[list[str]]:
    """Start dbus-daemon and resolved in the namespace; yields the ``nsenter`` prefix that
    runs a command in their mount and network namespaces."""
    (tmp / "dbus.conf").write_text(DBUS_CONF)
    log = tmp / "resolved.log"
    script = (f"mount -t tmpfs tmpfs /run && mkdir -p /run/dbus /run/systemd && "
              f"(dbus-daemon --config-file={tmp}/dbus.conf --nofork --nopidfile &) && "
              f"exec {unpacked}/lib/systemd/systemd-resolved")
    with open(log, "wb") as out:
        proc = subprocess.Popen([*ns.prefix(), "unshare", "--mount", "--propagation",
                                 "private", "sh", "-c", script], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    enter = ["nsenter", "-t", str(proc.pid), "-m", "-n"]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            up = subprocess.run([*enter, f"{unpacked}/usr/bin/resolvectl", "status"],
                                capture_output=True, text=True, check=False)
            if up.returncode == 0 and "127.0.0.1" in up.stdout:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"resolved did not come up: {log.read_text()}")
        assert proc.poll() is None, f"resolved exited: {log.read_text()}"
        yield enter
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_documented_dropin_sends_every_form_through_resolved(tmp_path: Path) -> None:
    require(unavailable())
    deb = resolved_deb()
    require(None if deb else "the systemd-resolved .deb (scripts/test-all.sh downloads it "
            "to .cache/debs with apt-get download)")
    assert deb is not None
    require(None if Path("/usr/bin/dbus-daemon").exists() else "dbus-daemon (package dbus)")
    tmp_path.chmod(0o755)
    unpacked = tmp_path / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True, capture_output=True)
    dropin = documented_dropin()
    assert "ResolveUnicastSingleLabel=yes" in dropin
    assert all(line.lstrip().startswith("#") or "#" not in line
               for line in dropin.splitlines()), "resolved takes whole-line comments only"
    with netns("nameserver 127.0.0.53\n") as ns:
        _etc(ns, dropin)
        _routable(ns)
        with run_demo(tmp_path, "--listen", "127.0.0.1:53", "--no-http",
                      prefix=ns.prefix()) as demo, resolved(ns, unpacked, tmp_path) as enter:
            key = demo.key
            resolvectl = f"{unpacked}/usr/bin/resolvectl"
            expect = {key: "127.0.0.1", f"www.{key}": "127.0.0.1", f"{key}.key": "127.0.0.1",
                      "example.com": "192.0.2.1"}
            for name, address in expect.items():
                q = subprocess.run([*enter, resolvectl, "query", "--cache=no", name],
                                   capture_output=True, text=True, timeout=30, check=False)
                assert q.returncode == 0 and address in q.stdout, (name, q.stdout, q.stderr)
                assert "via protocol DNS" in q.stdout, q.stdout
                g = subprocess.run([*enter, "getent", "ahostsv4", name], capture_output=True,
                                   text=True, timeout=30, check=False)
                assert g.returncode == 0 and address in g.stdout, (name, g.stdout, g.stderr)
                h = subprocess.run([*enter, "getent", "hosts", name], capture_output=True,
                                   text=True, timeout=30, check=False)
                assert h.returncode == 0 and name in h.stdout.split(), (name, h.stdout)
            www = subprocess.run([*enter, resolvectl, "query", f"www.{key}"],
                                 capture_output=True, text=True, timeout=30, check=False)
            assert f"({key})" in www.stdout, www.stdout      # the CNAME, shown by resolvectl
