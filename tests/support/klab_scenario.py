"""One kernel-lab run, inside the lab's namespace (:mod:`tests.support.klab` sets it up).

Phases, in order: swarms up (bittorrent-dht, libtorrent, the lab's own peers), a share of them
NAT'd; items put while clean (one packet per key, TXT ``key=<i> v=new``); a warm daemon joins;
Sybil clusters take the keys' closest ids holding ``v=old``; a share of the nodes is killed;
cold one-shot lookups at ``cold_loss``; Sybil lookups; DNS queries to the warm daemon at
``warm_loss``; a daemon with its DHT port blocked answers from a relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dnslib

from pkdns.dht.node import DhtNode
from pkdns.pkarr.client import to_item
from pkdns.pkarr.keys import Keypair
from pkdns.pkarr.signed_packet import SignedPacket
from tests.support.klab import (
    INTEROP,
    Child,
    Firewall,
    LabConfig,
    children,
    free_port,
    hostport,
    one_shot,
    summary,
)

PY = sys.executable
HOUR_US = 3600 * 1_000_000


@dataclass
class Key:
    """A lab key: its newest packet (stored on the swarm) and an older one (the Sybils')."""

    index: int
    keypair: Keypair
    new: SignedPacket
    old: SignedPacket

    @property
    def z32(self) -> str:
        return self.new.public_key.z32

    def version(self, txt: str) -> str | None:
        """'new', 'old' or None for a TXT string of this key."""
        for v in ("new", "old"):
            if txt == f"key={self.index} v={v}":
                return v
        return None


def make_key(i: int, rng: random.Random, now_us: int) -> Key:
    kp = Keypair.from_seed(rng.randbytes(32))

    def packet(v: str, ts: int) -> SignedPacket:
        rrs = [*dnslib.RR.fromZone(f'_lab 300 IN TXT "key={i} v={v}"'),
               *dnslib.RR.fromZone(f"@ 300 IN A 10.0.{i // 250}.{i % 250 + 1}")]
        return SignedPacket.sign(kp, rrs, ts)

    return Key(i, kp, packet("new", now_us), packet("old", now_us - HOUR_US))


# -- set-up ---------------------------------------------------------------------------------
class Swarm:
    """The lab's nodes by kind, with the commands to kill some of them."""

    def __init__(self, bt: Child, lt: Child | None, peers: Child, info: dict[str, Any]) -> None:
        self.bt, self.lt, self.peers, self.info = bt, lt, peers, info

    @property
    def bootstrap(self) -> str:
        return hostport(self.info["bt"][0])


async def start_swarm(cfg: LabConfig, kids: list[Child], tmp: Path) -> Swarm:
    out = tmp / "bt-nodes.json"
    bt = await Child.start("bittorrent-dht swarm", "node", str(INTEROP / "dht_swarm.js"),
                           "--n", str(cfg.bt), "--port", "0", "--quiet", "--stdin",
                           "--time-limit", "3000", "--out", str(out))
    kids.append(bt)
    ready = await bt.line("ready", 90)
    listed = [[n["host"], int(n["port"])] for n in json.loads(out.read_text())]
    info: dict[str, Any] = {"bt": listed, "bt_tables": ready["routing_table_sizes"]}
    join = ",".join(hostport(a) for a in listed[:3])
    lt = None
    if cfg.lt:
        lt = await Child.start("libtorrent swarm", PY, "-m", "tests.support.lt_proc", "swarm",
                               "--n", str(cfg.lt), "--join", join, "--time-limit", "3000")
        kids.append(lt)
        info["lt"] = (await lt.line("ready", 120))["nodes"]
    peer_join = join + ("," + hostport(info["lt"][0]) if cfg.lt else "")
    peers = await Child.start("lab peers", PY, "-m", "tests.support.klab_peers", "--join",
                              peer_join, "--honest", str(cfg.honest), "--no-bep44",
                              str(cfg.no_bep44), "--errors", str(cfg.errors),
                              "--seed", str(cfg.seed), "--time-limit", "3000",
                              "--announce-every", str(cfg.announce_every))
    kids.append(peers)
    p = await peers.line("ready", 90)
    info["honest"], info["broken"] = p["honest"], p["broken"]
    return Swarm(bt, lt, peers, info)


def choose(rng: random.Random, n: int, share: float, skip: int = 0) -> list[int]:
    pool = list(range(skip, n))
    return sorted(rng.sample(pool, min(len(pool), round(share * n))))


# -- phases ---------------------------------------------------------------------------------
async def put_all(writer: DhtNode, keys: list[Key]) -> dict[str, Any]:
    stored: list[int] = []

    async def put(key: Key) -> None:
        best = 0
        for _ in range(3):
            r = await writer.put_mutable(to_item(key.new), timeout=5.0)
            best = max(best, r.stored)
            if best >= 8:
                break
        stored.append(best)

    for i in range(0, len(keys), 8):
        await asyncio.gather(*(put(k) for k in keys[i:i + 8]))
    return {"keys": len(keys), "stored_min": min(stored),
            "stored_median": sorted(stored)[len(stored) // 2], "stored": stored,
            "paced": writer.paced}


async def cold_lookup(impl: str, key: Key, boot: str, timeout: float) -> dict[str, Any]:
    """One cold one-shot lookup by ``impl``: when it answered and which version it found."""
    hexkey = key.new.public_key.raw.hex()
    if impl == "pkdns":
        shot = await one_shot([PY, "-m", "pkdns", "resolve", key.z32, "--bootstrap", boot,
                               "--json"], "records", timeout)
        txt = _txt_of_records(shot.out["records"]) if shot.out else []
    elif impl == "libtorrent":
        shot = await one_shot([PY, "-m", "tests.support.lt_proc", "get", "--bootstrap", boot,
                               "--pubkey", hexkey, "--timeout", str(timeout)], "first", timeout)
        txt = _txt_of_v(shot.out["first"]["v"]) if shot.out else []
    else:
        shot = await one_shot(["node", str(INTEROP / "dht_get.js"), "--bootstrap", boot,
                               "--pubkey", hexkey, "--ro", "--timeout", str(int(timeout))],
                              "ok", timeout)
        txt = _txt_of_v(shot.out["v"]) if shot.out and shot.out.get("v") else []
    version = next((v for v in map(key.version, txt) if v), None)
    return {"impl": impl, "key": key.index, "t": shot.t if version else None,
            "version": version, "error": None if version else (shot.stderr or "no answer")[:160]}


def _txt_of_records(records: list[str]) -> list[str]:
    return [r.split('"')[1] for r in records if " TXT " in r and '"' in r]


def _txt_of_v(v_hex: str) -> list[str]:
    try:
        msg = dnslib.DNSRecord.parse(bytes.fromhex(v_hex))
    except Exception:
        return []
    return [b"".join(rr.rdata.data).decode() for rr in msg.rr if rr.rtype == dnslib.QTYPE.TXT]


def tally(rows: list[dict[str, Any]], impls: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for impl in impls:
        mine = [r for r in rows if r["impl"] == impl]
        found = [r for r in mine if r["version"] == "new"]
        errors: dict[str, int] = {}
        for r in mine:
            if r["version"] is None:
                errors[r["error"]] = errors.get(r["error"], 0) + 1
        out[impl] = {"lookups": len(mine), "newest": len(found),
                     "older": sum(1 for r in mine if r["version"] == "old"),
                     **summary([r["t"] for r in found]),
                     "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:4])}
    for impl in impls[1:]:  # medians over the keys both found (each one's own set favours
        both = _found_by_both(rows, impls[0], impl)  # the one that found only easy keys)
        out[impl]["common"] = {"keys": len(both),
                               impls[0]: summary([a for a, _ in both])["median_s"],
                               impl: summary([b for _, b in both])["median_s"]}
    return out


def _found_by_both(rows: list[dict[str, Any]], a: str, b: str) -> list[tuple[float, float]]:
    """(time by ``a``, time by ``b``) for each key both found the newest packet of."""
    def times(impl: str) -> dict[int, float]:
        return {r["key"]: r["t"] for r in rows if r["impl"] == impl and r["version"] == "new"}
    ta, tb = times(a), times(b)
    return [(ta[k], tb[k]) for k in ta if k in tb]


async def dns_query(port: int, name: str, budget: float = 3.0,
                    per_try: float = 1.0) -> tuple[str, list[str], float]:
    """A stub's query: retry every ``per_try`` s until ``budget``; (rcode or 'timeout', TXT
    strings, seconds). A datagram from elsewhere (a swarm node writing to a port it once knew,
    now the stub's) is ignored, as a stub resolver does."""
    t0 = time.monotonic()
    q = dns.message.make_query(name, "TXT")
    while (left := budget - (time.monotonic() - t0)) > 0:
        try:
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=min(per_try, left),
                                         ignore_unexpected=True)
        except (TimeoutError, dns.exception.Timeout):
            continue
        txt = [b"".join(rd.strings).decode() for rrset in r.answer for rd in rrset
               if rrset.rdtype == dns.rdatatype.TXT]
        return dns.rcode.to_text(r.rcode()), txt, time.monotonic() - t0
    return "timeout", [], time.monotonic() - t0


async def start_daemon(tmp: Path, name: str, boot: str, dns_port: int, dht_port: int,
                       http_port: int | None, relays: list[str] = (),  # type: ignore[assignment]
                       toml: str = "") -> asyncio.subprocess.Process:
    home = tmp / name
    home.mkdir()
    cmd = [PY, "-m", "pkdns", "serve", "--listen", f"127.0.0.1:{dns_port}", "--upstream",
           "127.0.0.1:9", "--dht-port", str(dht_port), "--state-dir", str(home / "state"),
           "--log-format", "json"]
    cmd += [x for b in boot.split(",") for x in ("--bootstrap", b)]
    cmd += ["--http", f"127.0.0.1:{http_port}"] if http_port else ["--no-http"]
    if relays:
        toml += f"\n[pkarr]\nrelays = {json.dumps(relays)}\n"
    if toml:
        (home / "pkdns.toml").write_text(toml)
        cmd += ["--config", str(home / "pkdns.toml")]
    log = open(home / "log.json", "wb")  # noqa: SIM115 (closed with the process)
    return await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=log,
                                                stdin=asyncio.subprocess.DEVNULL)


async def wait_dns(port: int, timeout: float = 30.0) -> float:
    """Seconds until the daemon answers anything on ``port``."""
    t0 = time.monotonic()
    q = dns.message.make_query("probe.invalid.", "A")
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(Exception):
            await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.1)
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise RuntimeError(f"no DNS answer on port {port}")


async def dht_messages(http_port: int) -> dict[str, float]:
    """The daemon's ``pkdns_dht_messages`` counters by kind (sent, paced, received, ...)."""
    out: dict[str, float] = {}
    with contextlib.suppress(Exception):
        text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{http_port}/metrics")
        for line in text.splitlines():
            if line.startswith("pkdns_dht_messages_total{"):
                labels, value = line[len("pkdns_dht_messages_total{"):].split("} ")
                kind = dict(kv.split("=") for kv in labels.split(","))["kind"].strip('"')
                out[kind] = out.get(kind, 0) + float(value)
    return out


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback, our daemon)
        return str(r.read().decode())


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def scenario(cfg: LabConfig, tmp: Path, rng: random.Random) -> dict[str, Any]:
    started = time.monotonic()
    res: dict[str, Any] = {"config": {k: v for k, v in vars(cfg).items()}}
    dns_a, dht_a, http_a = free_port(), free_port(), free_port()
    dns_c, dht_c = free_port(), free_port()
    fw = Firewall(f"pkdns_lab_{rng.randrange(1 << 30)}", [dns_a, dns_c])
    daemons: list[asyncio.subprocess.Process] = []
    # The lab's own instrument, not under test: unpaced. Paced (40 queries per node per 10 s,
    # as a daemon must be on Mainline), putting 105 keys on a 70-node swarm left the second
    # half of them on no node at all (every client then "missed" them, Sybil keys included).
    writer = DhtNode(mode="server", request_rate_limit=0, request_timeout=1.0, pace_limit=0)
    try:
        async with children() as kids:
            swarm = await start_swarm(cfg, kids, tmp)
            boot = swarm.bootstrap
            nat_bt = choose(rng, cfg.bt, cfg.nat_share, skip=3)
            nat_lt = choose(rng, cfg.lt, cfg.nat_share)
            fw.add("nat", [swarm.info["bt"][i][1] for i in nat_bt]
                   + [swarm.info["lt"][i][1] for i in nat_lt] + [dht_a])
            await writer.start("127.0.0.1", 0)
            first = swarm.info["bt"][0]
            await writer.bootstrap([(first[0], int(first[1]))], timeout=5.0)
            now_us = int(time.time() * 1_000_000)
            keys = [make_key(i, rng, now_us) for i in range(cfg.keys + cfg.sybil_keys)]
            sybil = keys[cfg.keys:]
            daemons.append(await start_daemon(tmp, "warm", boot, dns_a, dht_a, http_a,
                                              toml=cfg.warm_toml))
            warm_since = time.monotonic()
            res["put"] = await put_all(writer, keys)
            res["put"]["sybil_keys_stored"] = res["put"]["stored"][cfg.keys:]
            res["setup"] = {"nodes": {k: len(v) for k, v in swarm.info.items()
                                      if isinstance(v, list) and v and isinstance(v[0], list)},
                            "nat": {"bt": len(nat_bt), "lt": len(nat_lt)}}
            for key in sybil:
                old = to_item(key.old) if cfg.sybil_holds_old else None
                spec = {"k": key.new.public_key.raw.hex(), "size": cfg.sybil_size,
                        "old": None if old is None else
                        {"seq": old.seq, "v": old.v.hex(), "sig": old.sig.hex()}}
                await swarm.peers.command("sybil " + json.dumps(spec), "sybil")
            await wait_dns(dns_a)
            await asyncio.sleep(max(0.0, cfg.warm_settle - (time.monotonic() - warm_since)))
            # a share of the nodes dies (never the three bootstrap nodes)
            dead_bt = choose(rng, cfg.bt, cfg.dead_share, skip=3)
            dead_lt = choose(rng, cfg.lt, cfg.dead_share)
            dead_honest = choose(rng, cfg.honest, cfg.dead_share)
            await swarm.bt.command("kill " + ",".join(map(str, dead_bt)), "killed")
            if swarm.lt is not None and dead_lt:
                await swarm.lt.command("kill " + ",".join(map(str, dead_lt)), "killed")
            if dead_honest:
                await swarm.peers.command("kill " + ",".join(map(str, dead_honest)), "killed")
            res["setup"]["dead"] = {"bt": len(dead_bt), "lt": len(dead_lt),
                                    "pkdns": len(dead_honest)}
            res["setup"]["seconds"] = round(time.monotonic() - started, 1)

            fw.loss(cfg.cold_loss)
            rows = []
            for key in keys[:cfg.cold_lookups]:
                for impl in rng.sample(cfg.cold_impls, len(cfg.cold_impls)):
                    rows.append(await cold_lookup(impl, key, boot, cfg.one_shot_timeout))
            res["cold"] = tally(rows, cfg.cold_impls)
            res["cold"]["loss"] = cfg.cold_loss

            srows = []
            for key in sybil:
                for n in range(cfg.sybil_lookups):
                    impls = cfg.cold_impls if n < 2 else ("pkdns",)
                    for impl in impls:
                        srows.append(await cold_lookup(impl, key, boot, cfg.one_shot_timeout))
            res["sybil"] = tally(srows, cfg.cold_impls) if sybil else {}
            if sybil:  # per key: a cluster that hides a key from everyone shows as one row
                res["sybil"]["pkdns_by_key"] = {
                    k.index: {v or "none": sum(1 for r in srows if r["impl"] == "pkdns"
                                               and r["key"] == k.index and r["version"] == v)
                              for v in ("new", "old", None)} for k in sybil}
            if sybil:
                stats = await swarm.peers.command("stats", "stats")
                res["sybil"]["cluster_queries"] = stats["stats"]

            fw.loss(cfg.warm_loss)
            before = await dht_messages(http_a)
            res["warm"] = await warm_phase(cfg, dns_a, keys[:cfg.warm_queries], sybil)
            after = await dht_messages(http_a)
            res["warm"]["messages"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            with contextlib.suppress(Exception):
                res["warm"]["status"] = json.loads(http_get(f"http://127.0.0.1:{http_a}/api/status"))

            if cfg.relay:
                fw.loss(0)
                fw.add("block", [dht_c])
                held = set(res["warm"].pop("held"))  # the relay has these: it answered them
                relayed = [k for k in keys if k.index in held] + [
                    k for k in keys if k.index not in held]
                # four bootstrap hosts, as the default configuration has
                hosts = swarm.info["bt"][:3] + swarm.info["honest"][:1]
                boot4 = ",".join(hostport(a) for a in hosts)
                res["relay"] = await relay_phase(tmp, boot4, dns_c, dht_c, http_a, relayed,
                                                 daemons, free_port())
    finally:
        for d in daemons:
            await stop(d)
        await writer.close()
        fw.delete()
    res["seconds"] = round(time.monotonic() - started, 1)
    return res


async def warm_phase(cfg: LabConfig, port: int, keys: list[Key],
                     sybil: list[Key]) -> dict[str, Any]:
    sem = asyncio.Semaphore(5)
    rows: list[tuple[str, str | None, float]] = []
    held: list[int] = []

    async def ask(key: Key) -> None:
        async with sem:
            rcode, txt, t = await dns_query(port, f"_lab.{key.z32}.")
            rows.append((rcode, next((v for v in map(key.version, txt) if v), None), t))
            if rows[-1][:2] == ("NOERROR", "new"):
                held.append(key.index)

    await asyncio.gather(*(ask(k) for k in keys))
    answered = [t for rcode, v, t in rows if rcode == "NOERROR" and v == "new"]
    srows: list[tuple[str, str | None, float]] = []
    for key in sybil:
        rcode, txt, t = await dns_query(port, f"_lab.{key.z32}.")
        srows.append((rcode, next((v for v in map(key.version, txt) if v), None), t))
    return {"loss": cfg.warm_loss, "queries": len(rows), "answered": len(answered),
            "servfail": sum(1 for r in rows if r[0] == "SERVFAIL"),
            "nxdomain": sum(1 for r in rows if r[0] == "NXDOMAIN"),
            "timeout": sum(1 for r in rows if r[0] == "timeout"),
            "wrong": sum(1 for r in rows if r[0] == "NOERROR" and r[1] != "new"),
            "held": held,
            **summary(answered),
            "sybil": {"queries": len(srows), "newest": sum(1 for r in srows if r[1] == "new"),
                      "older": sum(1 for r in srows if r[1] == "old")}}


async def relay_phase(tmp: Path, boot: str, dns_c: int, dht_c: int, http_a: int,
                      keys: list[Key], daemons: list[asyncio.subprocess.Process],
                      http_c: int) -> dict[str, Any]:
    """A daemon whose DHT port is blocked, with the warm daemon as its one relay: how soon
    after start-up it answers ``keys[0]`` (one the relay holds), then a few more.

    The key is asked from the spawn on, every 50 ms: a probe for another name would be
    forwarded to the (dead) upstream and answered only after the upstream timeout, seconds
    after the daemon could have answered the key. When DNS was up comes from the daemon's
    ``listening`` log line."""
    key = keys[0]
    t0, wall0 = time.monotonic(), time.time()
    proc = await start_daemon(tmp, "relayed", boot, dns_c, dht_c, http_c,
                              [f"http://127.0.0.1:{http_a}"])
    daemons.append(proc)
    first = None
    while time.monotonic() - t0 < 30:
        rcode, txt, _ = await dns_query(dns_c, f"_lab.{key.z32}.", budget=0.05, per_try=0.05)
        if rcode == "NOERROR" and any(key.version(t) == "new" for t in txt):
            first = time.monotonic() - t0
            break
    cpu = cpu_seconds(proc.pid)
    events = start_up(tmp / "relayed" / "log.json", wall0)
    up = events.get("listening")
    others = []
    for k in keys[1:6]:
        rcode, txt, t = await dns_query(dns_c, f"_lab.{k.z32}.")
        others.append(t if rcode == "NOERROR" and any(k.version(x) == "new" for x in txt) else None)
    unreachable = None  # when the daemon's status page says the DHT is unreachable
    while time.monotonic() - t0 < (first or 0.0) + 20 and unreachable is None:
        with contextlib.suppress(Exception):
            status = json.loads(await asyncio.to_thread(
                http_get, f"http://127.0.0.1:{http_c}/api/status"))
            if status["dht_health"]["reachable"] is False:
                unreachable = round(time.monotonic() - t0, 1)
                break
        await asyncio.sleep(0.5)
    metrics = ""
    with contextlib.suppress(Exception):
        metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{http_c}/metrics")
    return {"start_up_s": events,
            "cpu_at_first_answer_s": cpu,
            "unreachable_shown_s": unreachable,
            "metrics_unreachable": "pkdns_dht_reachable 0.0" in metrics,
            "dns_up_s": up, "first_answer_s": None if first is None else round(first, 3),
            "first_after_up_s": None if first is None or up is None else round(first - up, 3),
            "more_keys_s": [None if t is None else round(t, 3) for t in others]}


def start_up(log: Path, wall0: float) -> dict[str, float]:
    """Seconds from spawn to each start-up event in a daemon's JSON log (where its start-up
    time goes: imports before the first event, then each part's start)."""
    seen: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = json.loads(line)
            if event["event"] in ("state_loaded", "dht_started", "http_listening", "listening",
                                  "started") and event["event"] not in seen:
                stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                seen[event["event"]] = round(stamp.timestamp() - wall0, 3)
    return seen


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (start-up's cost, whatever else the lab's
    machine is running meanwhile); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
