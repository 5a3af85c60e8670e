"""Issue 13 item 3, DNS rebinding: how many of the attack trial's addresses a resolver serves.

A stranger's key publishes each of 0.0.0.0, 10.0.0.1, 100.64.0.1, 127.0.0.1, 169.254.1.1,
172.16.0.1, 192.168.1.1, ::, ::1, ::ffff:127.0.0.1, fc00::1, fe80::1 under its own name, on a
loopback DHT testnet (8 of our nodes, in this process); an ICANN zone served by knot holds the
same addresses. Asked of:

* the installed pkdns (``.venv/bin/pkdns serve``), default configuration: key names with and
  without ``.key``, and the ICANN names (forwarded to knot);
* the same with ``[dns] rebind_protection = true`` (the option for ICANN names), and with
  ``[pkarr] rebind_protection = false`` (what every key name got before issue 13);
* unbound forwarding to knot, with and without ``private-address:`` for the same networks.

Prints, per resolver and name kind, how many of the 12 addresses reached the client. Bounded:
one query per name, 5 s timeouts, every process stopped by pid, loopback only, files in a
temporary directory. Needs knotd and unbound. Run: ``.venv/bin/python bench/attacks/rebinding.py``
(under ``flock /work/bench.lock`` on a shared machine).
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from pkdns.clock import SYSTEM_CLOCK  # noqa: E402
from pkdns.dht.testnet import Testnet  # noqa: E402
from pkdns.pkarr.client import to_item  # noqa: E402
from pkdns.pkarr.keys import Keypair  # noqa: E402
from pkdns.pkarr.signed_packet import SignedPacket  # noqa: E402
from pkdns.pkarr.zone import parse_zone  # noqa: E402
from tests.support.knot import free_port, knot_server  # noqa: E402

ATTACK = ["0.0.0.0", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1",
          "192.168.1.1", "::", "::1", "::ffff:127.0.0.1", "fc00::1", "fe80::1"]
NAMES = [(f"a{i}", "AAAA" if ":" in a else "A", a) for i, a in enumerate(ATTACK)]
PRIVATE = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
           "172.16.0.0/12", "192.168.0.0/16", "::/128", "::1/128", "::ffff:0:0/96",
           "fc00::/7", "fe80::/10"]


def zone(origin: str = "") -> str:
    head = (f"$ORIGIN {origin}\n$TTL 300\n@ SOA ns host 1 3600 600 86400 60\n@ NS ns\n"
            "ns A 192.0.2.53\n") if origin else "$TTL 300\n"
    return head + "".join(f"{n} IN {t} {a}\n" for n, t, a in NAMES)


async def ask(port: int, name: str, qtype: str) -> list[str] | None:
    """The addresses served for ``name`` (None: no answer in time)."""
    try:
        r = await dns.asyncquery.udp(dns.message.make_query(name, qtype), "127.0.0.1",
                                     port=port, timeout=5)
    except (dns.exception.Timeout, OSError):
        return None
    return [str(ipaddress.ip_address(rd.address)) for rrset in r.answer for rd in rrset
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]


async def served(port: int, suffix: str) -> tuple[int, int]:
    """(addresses served, names answered at all) over the 12 names ``a<i><suffix>``."""
    got = [await ask(port, f"{n}{suffix}", t) for n, t, _ in NAMES]
    return sum(len(g) for g in got if g), sum(g is not None for g in got)


async def wait_up(port: int, name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await ask(port, name, "TXT")
        if r is not None:
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PKDNS_RUNS = (   # label, [dns] rebind_protection, [pkarr] rebind_protection
    ("pkdns (default)", False, True),
    ("pkdns, dns.rebind_protection = true", True, True),
    ("pkdns, pkarr.rebind_protection = false (as before issue 13)", False, False),
)


async def pkdns_rows(d: Path, net: Testnet, z: str, upstream: tuple[str, int],
                     run: int) -> list[tuple[str, str, int, int]]:
    label, icann_filter, key_filter = PKDNS_RUNS[run]
    port = free_port()
    boot = ", ".join(f'"{h}:{p}"' for h, p in net.bootstrap)
    conf = d / f"pkdns-{run}.toml"
    conf.write_text(f'state_dir = "{d}/state-{run}"\n[log]\nlevel = "warning"\n'
                    f'[dns]\nlisten = ["127.0.0.1:{port}"]\nupstream = ["{upstream[0]}:'
                    f'{upstream[1]}"]\nrebind_protection = {str(icann_filter).lower()}\n'
                    f'[pkarr]\nrebind_protection = {str(key_filter).lower()}\n'
                    f'[dht]\nport = 0\nbind = "127.0.0.1"\nbootstrap = [{boot}]\n'
                    '[http]\nenabled = false\n')
    log = open(d / f"pkdns-{run}.log", "wb")
    proc = subprocess.Popen([str(ROOT / ".venv/bin/pkdns"), "serve", "--config", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_up(port, "rebind.test")
        rows = []
        if run != 1:
            await wait_up(port, f"a0.{z}")
            rows += [(label, "key, bare", *await served(port, f".{z}")),
                     (label, "key, .key", *await served(port, f".{z}.key"))]
        rows.append((label, "ICANN", *await served(port, ".rebind.test")))
        return rows
    except RuntimeError:
        print((d / f"pkdns-{run}.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        stop(proc)
        log.close()


def unbound_rows(d: Path, upstream: tuple[str, int],
                 private: bool) -> list[tuple[str, str, int, int]]:
    port = free_port()
    extra = "".join(f"    private-address: {n}\n" for n in PRIVATE) if private else ""
    conf = d / f"unbound-{private}.conf"
    conf.write_text(f"""server:
    interface: 127.0.0.1@{port}
    port: {port}
    num-threads: 1
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound-{private}.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    do-not-query-localhost: no
    module-config: "iterator"
    local-zone: "test." nodefault
{extra}forward-zone:
    name: "."
    forward-addr: {upstream[0]}@{upstream[1]}
""")
    proc = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        asyncio.run(wait_up(port, "rebind.test"))
        label = "unbound, private-address" if private else "unbound"
        return [(label, "ICANN", *asyncio.run(served(port, ".rebind.test")))]
    finally:
        stop(proc)


async def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pkdns-rebind-") as tmp:
        d = Path(tmp)
        attacker = Keypair.random()
        z = attacker.public_key.z32
        net = await Testnet.start(8)
        rows: list[tuple[str, str, int, int]] = []
        try:
            p = SignedPacket.sign(attacker, parse_zone(zone(), attacker.public_key),
                                  SYSTEM_CLOCK.wall_us())
            assert (await net.nodes[-1].put_mutable(to_item(p))).stored > 0
            with knot_server(d, {"rebind.test.": zone("rebind.test.")}) as knot:
                up = (knot.host, knot.port)
                for run in range(len(PKDNS_RUNS)):
                    rows += await pkdns_rows(d, net, z, up, run)
                for private in (False, True):
                    rows += await asyncio.to_thread(unbound_rows, d, up, private)
        finally:
            await net.close()
    print(f"{len(ATTACK)} addresses, one name each\n")
    print("| resolver | names | addresses served | names answered |")
    print("|---|---|---:|---:|")
    for label, kind, count, answered in rows:
        print(f"| {label} | {kind} | {count} of {len(ATTACK)} | {answered} of {len(NAMES)} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
