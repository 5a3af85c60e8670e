#!/usr/bin/env python3
"""DNS benchmark lab: start servers by hand on 127.0.0.1 high ports, run dnsperf, stop by pid.

Sub-commands
  campaign  -- the full side-by-side measurement (all servers, hit/miss/latency, interleaved rounds)
  harness   -- compare a TARGET host:port against peers (dnsmasq, unbound, ...) and print QPS ratios
  serve     -- start auth + chosen servers and wait (Ctrl-C stops them), for manual poking

Only 127.0.0.0/8 is ever queried; every dnsperf run is bounded by -l (and -n for miss runs).
Standard library only. (The minimal Python forwarder baselines
(pyfwd/) are not part of this project.)
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

BASE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(BASE, "data")
RUN = os.path.join(BASE, "run")
RES = os.path.join(BASE, "results")
CLK = os.sysconf("SC_CLK_TCK")

# name -> default port
PORTS = {
    "auth": 5300, "dnsmasq": 5301, "dnsmasq-qport": 5311, "unbound-1t": 5302, "unbound-2t": 5312,
    "kresd": 5303, "kresd-2p": 5313,
}

# ----------------------------------------------------------------------------- configs


def conf_knot(port, d):
    return f"""server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: warning
database:
    storage: "{d}/db"
template:
  - id: default
    storage: "{DATA}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: bench.test.
    file: bench.test.zone
"""


def conf_unbound(port, threads, auth, d):
    return f"""server:
    interface: 127.0.0.1@{port}
    port: {port}
    num-threads: {threads}
    so-reuseport: yes
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: ""
    logfile: ""
    use-syslog: no
    verbosity: 0
    do-ip6: no
    do-not-query-localhost: no
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
    msg-cache-size: 64m
    rrset-cache-size: 128m
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{auth}
"""


def conf_kresd(port, auth, d):
    return f"""-- Knot Resolver 5.x: forward everything to the local authoritative server, cache on,
-- no DNSSEC validation (the synthetic zone is unsigned; same as unbound module-config "iterator")
net.listen('127.0.0.1', {port}, {{ kind = 'dns' }})
trust_anchors.remove('.')
cache.open(256 * MB, 'lmdb://{d}/cache')
policy.add(policy.all(policy.FORWARD('127.0.0.1@{auth}')))
"""

# ----------------------------------------------------------------------------- processes


class Server:
    """One logical server: a list of Popen objects (kresd-2p has two)."""

    def __init__(self, name, port, procs, logs, group=False):
        self.name, self.port, self.procs, self.logs = name, port, procs, logs
        self.group = group      # procs[i].pid is also a process-group id we created

    def _sig(self, p, sig):
        if self.group:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        else:
            p.send_signal(sig)

    def pids(self):
        return [p.pid for p in self.procs]

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                self._sig(p, signal.SIGTERM)
        deadline = time.monotonic() + 6
        resent = False
        for p in self.procs:
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                if not resent and time.monotonic() > deadline - 3:
                    self._sig(p, signal.SIGTERM)   # kresd sometimes needs a second TERM
                    resent = True
            if p.poll() is None:
                self._sig(p, signal.SIGKILL)
                p.wait()
        for f in self.logs:
            f.close()


def dns_query(host, port, name, qtype=1, timeout=0.3):
    qid = random.getrandbits(16)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack("!HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, (host, port))
        data, _ = s.recvfrom(4096)
        return data[3] & 0x0F if data[:2] == q[:2] else None
    except OSError:
        return None
    finally:
        s.close()


def wait_ready(host, port, procs, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        if dns_query(host, port, "ns.bench.test") == 0:
            return True
        time.sleep(0.1)
    return False


def start(name, port=None, auth_port=5300):
    port = port or PORTS[name]
    d = os.path.join(RUN, f"{name}-{port}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    logs = [open(os.path.join(d, "log.txt"), "w")]
    cwd = d
    cmds = []
    if name == "auth":
        open(os.path.join(d, "knot.conf"), "w").write(conf_knot(port, d))
        cmds = [["knotd", "-c", os.path.join(d, "knot.conf")]]
    elif name.startswith("dnsmasq"):
        cmds = [["dnsmasq", "-k", "--conf-file=/dev/null", f"--port={port}",
                 "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                 f"--server=127.0.0.1#{auth_port}", "--cache-size=10000", "--cache-rr=TXT",
                 f"--pid-file={d}/dnsmasq.pid", "--user=root", "--log-facility=-"]]
        # one fixed upstream source port instead of a random port per query
        if name == "dnsmasq-qport":
            cmds[0].append(f"--query-port={port + 88}")
    elif name.startswith("unbound-"):
        threads = int(name.split("-")[1].rstrip("t"))
        open(os.path.join(d, "unbound.conf"), "w").write(conf_unbound(port, threads, auth_port, d))
        cmds = [["unbound", "-d", "-c", os.path.join(d, "unbound.conf")]]
    elif name.startswith("kresd"):
        os.makedirs(os.path.join(d, "cache"))
        open(os.path.join(d, "kresd.conf"), "w").write(conf_kresd(port, auth_port, d))
        n = 2 if name == "kresd-2p" else 1
        cmds = [["kresd", "-n", "-c", os.path.join(d, "kresd.conf"), d] for _ in range(n)]
        logs = logs + [open(os.path.join(d, f"log{i}.txt"), "w") for i in range(1, n)]
    else:
        raise SystemExit(f"unknown server {name}")
    procs = []
    for i, c in enumerate(cmds):
        procs.append(subprocess.Popen(c, cwd=cwd, stdout=logs[i], stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL))
        if i == 0 and len(cmds) > 1:
            time.sleep(0.5)      # let the first kresd create the shared LMDB cache
    srv = Server(name, port, procs, logs)
    if not wait_ready("127.0.0.1", port, procs):
        srv.stop()
        raise SystemExit(f"{name} on port {port} did not become ready; see {d}/log.txt")
    return srv

# ----------------------------------------------------------------------------- measurement


def cpu_ticks(pids):
    t = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])      # utime + stime (all threads)
        except OSError:
            pass
    return t


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v), idle


def rss_kb(pids):
    t = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    t += int(line.split()[1])
        except OSError:
            pass
    return t


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(q * len(sorted_vals))) - 1))
    return sorted_vals[i]


def dnsperf(host, port, datafile, tag, *, duration=15, clients=16, outstanding=100, maxruns=None,
            qps=None, verbose=True, server_pids=(), auth_pids=()):
    cmd = ["dnsperf", "-s", host, "-p", str(port), "-d", datafile, "-c", str(clients),
           "-q", str(outstanding), "-l", str(duration)]
    if maxruns:
        cmd += ["-n", str(maxruns)]
    if qps:
        cmd += ["-Q", str(qps)]
    if verbose:
        cmd += ["-v"]
    os.makedirs(os.path.join(RES, "raw"), exist_ok=True)
    raw = os.path.join(RES, "raw", tag + ".out")
    s0, a0 = cpu_ticks(server_pids), cpu_ticks(auth_pids)
    m0 = machine_ticks()
    t0 = time.monotonic()
    with open(raw, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    s1, a1 = cpu_ticks(server_pids), cpu_ticks(auth_pids)
    m1 = machine_ticks()
    ncpu = os.cpu_count() or 1
    perf_cpu = 100.0 * (ru.ru_utime + ru.ru_stime) / wall
    srv_cpu = 100.0 * (s1 - s0) / CLK / wall
    auth_cpu = 100.0 * (a1 - a0) / CLK / wall
    busy_core = ncpu * 100.0 * (1 - (m1[1] - m0[1]) / max(1, m1[0] - m0[0]))
    r = {"tag": tag, "cmd": " ".join(cmd), "wall_s": round(wall, 3), "rc": p.returncode,
         "srv_cpu_s": (s1 - s0) / CLK, "auth_cpu_s": (a1 - a0) / CLK,
         "other_cpu_pct": round(busy_core - perf_cpu - (srv_cpu if server_pids else 0)
                                - (auth_cpu if auth_pids else 0), 1),
         "server_cpu_pct": round(100.0 * (s1 - s0) / CLK / wall, 1) if server_pids else None,
         "auth_cpu_pct": round(100.0 * (a1 - a0) / CLK / wall, 1) if auth_pids else None,
         "dnsperf_cpu_pct": round(100.0 * (ru.ru_utime + ru.ru_stime) / wall, 1),
         "machine_busy_pct": round(100.0 * (1 - (m1[1] - m0[1]) / max(1, m1[0] - m0[0])), 1)}
    lats, rcodes, summary = [], {}, []
    with open(raw) as f:
        for line in f:
            if line.startswith("> "):
                parts = line.split()
                rc = parts[1]
                rcodes[rc] = rcodes.get(rc, 0) + 1
                if rc != "T":
                    try:
                        lats.append(float(parts[-1]))
                    except ValueError:
                        pass
            else:
                summary.append(line)
    for line in summary:
        ls = line.strip()
        if ls.startswith("Queries sent:"):
            r["sent"] = int(ls.split()[2])
        elif ls.startswith("Queries completed:"):
            r["completed"] = int(ls.split()[2])
        elif ls.startswith("Queries lost:"):
            r["lost"] = int(ls.split()[2])
        elif ls.startswith("Queries per second:"):
            r["qps"] = float(ls.split()[3])
        elif ls.startswith("Run time (s):"):
            r["run_s"] = float(ls.split()[3])
        elif ls.startswith("Average Latency (s):"):
            r["avg_lat_ms"] = round(1000 * float(ls.split()[3]), 3)
    if lats:
        lats.sort()
    if r.get("completed"):
        r["srv_us_per_q"] = round(1e6 * r["srv_cpu_s"] / r["completed"], 2) if server_pids else None
        r["auth_us_per_q"] = round(1e6 * r["auth_cpu_s"] / r["completed"], 2) if auth_pids else None
    if lats:
        r["p50_ms"] = round(1000 * pct(lats, 0.50), 3)
        r["p99_ms"] = round(1000 * pct(lats, 0.99), 3)
    r["rcodes"] = rcodes
    with open(raw, "w") as f:
        f.writelines(summary)
    return r


def miss_file(tag, n=100000):
    """100,000 never-before-seen names under the *.m.bench.test wildcard (fresh per run)."""
    path = os.path.join(RUN, f"miss-{tag}.txt")
    salt = f"{tag}-{time.time_ns() & 0xffffffff:x}".replace("_", "-")
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"q{i}-{salt}.m.bench.test A\n")
    return path


def warm(host, port):
    subprocess.run(["dnsperf", "-s", host, "-p", str(port), "-d", os.path.join(DATA, "hit.txt"),
                    "-n", "2", "-l", "10", "-c", "4", "-q", "20"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"

# ----------------------------------------------------------------------------- campaign


def summarize(runs, test, names):
    rows = []
    for n in names:
        rs = [r for r in runs if r["server"] == n and r["test"] == test]
        if not rs:
            continue
        q = sorted(r.get("qps", 0) for r in rs)
        rows.append({
            "server": n, "n": len(rs), "qps_min": q[0], "qps_med": med(q), "qps_max": q[-1],
            "avg_lat_ms": med([r.get("avg_lat_ms") for r in rs]),
            "p50_ms": med([r.get("p50_ms") for r in rs]),
            "p99_ms": med([r.get("p99_ms") for r in rs]),
            "lost": sum(r.get("lost", 0) for r in rs), "sent": sum(r.get("sent", 0) for r in rs),
            "server_cpu": med([r.get("server_cpu_pct") for r in rs]),
            "auth_cpu": med([r.get("auth_cpu_pct") for r in rs]),
            "dnsperf_cpu": med([r.get("dnsperf_cpu_pct") for r in rs]),
            "busy": med([r.get("machine_busy_pct") for r in rs]),
            "other": med([r.get("other_cpu_pct") for r in rs]),
            "us_q": med([r.get("srv_us_per_q") for r in rs]),
            "auth_us_q": med([r.get("auth_us_per_q") for r in rs]),
            "rcodes": {k: sum(r["rcodes"].get(k, 0) for r in rs)
                       for k in set().union(*[r["rcodes"] for r in rs])},
        })
    return rows


def table_md(rows, title):
    out = [f"### {title}", "",
           "| server | runs | QPS min | QPS median | QPS max | avg lat ms | p50 ms | p99 ms "
           "| lost/sent | server CPU % | server CPU µs/q | auth CPU % | auth µs/q "
           "| dnsperf CPU % | other procs CPU % | machine busy % |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['server']} | {r['n']} | {fmt(r['qps_min'])} | {fmt(r['qps_med'])} | "
                   f"{fmt(r['qps_max'])} | {fmt(r['avg_lat_ms'], 3)} | {fmt(r['p50_ms'], 3)} | "
                   f"{fmt(r['p99_ms'], 3)} | {r['lost']}/{r['sent']} | {fmt(r['server_cpu'])} | "
                   f"{fmt(r['us_q'], 2)} | {fmt(r['auth_cpu'])} | {fmt(r['auth_us_q'], 2)} | "
                   f"{fmt(r['dnsperf_cpu'])} | {fmt(r['other'])} | {fmt(r['busy'])} |")
    return "\n".join(out) + "\n"


def campaign(a):
    names = [n for n in a.servers.split(",") if n]
    os.makedirs(RES, exist_ok=True)
    started = []
    runs = []
    out_json = os.path.join(RES, a.out + ".json")

    def save():
        with open(out_json, "w") as f:
            json.dump({"runs": runs, "args": vars(a)}, f, indent=1)

    try:
        auth = start("auth")
        started.append(auth)
        srv = {"auth": auth}
        for n in names:
            if n != "auth":
                srv[n] = start(n, auth_port=auth.port)
                started.append(srv[n])
        for n in names:
            if n != "auth":
                warm("127.0.0.1", srv[n].port)
        tests = [t for t in a.tests.split(",") if t]
        for test in tests:
            for rnd in range(a.rounds):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for n in order:
                    s = srv[n]
                    if not s.alive():
                        raise SystemExit(f"{n} died")
                    tag = f"{a.out}-{test}-r{rnd}-{n}"
                    spids = s.pids()
                    apids = auth.pids() if n != "auth" else []
                    if test == "hit":
                        if n != "auth":
                            warm("127.0.0.1", s.port)
                        r = dnsperf("127.0.0.1", s.port, os.path.join(DATA, "hit.txt"), tag,
                                    duration=a.duration, clients=a.clients,
                                    outstanding=a.outstanding, server_pids=spids, auth_pids=apids)
                    elif test == "hitq1000":
                        if n != "auth":
                            warm("127.0.0.1", s.port)
                        r = dnsperf("127.0.0.1", s.port, os.path.join(DATA, "hit.txt"), tag,
                                    duration=10, clients=a.clients, outstanding=1000,
                                    server_pids=spids, auth_pids=apids)
                    elif test == "miss":
                        mf = miss_file(f"r{rnd}-{n}")
                        r = dnsperf("127.0.0.1", s.port, mf, tag, duration=60, maxruns=1,
                                    clients=a.clients, outstanding=a.outstanding,
                                    server_pids=spids, auth_pids=apids)
                        os.unlink(mf)
                    elif test == "missreal":   # the real n0..n99999 records; auth only (no cache)
                        r = dnsperf("127.0.0.1", s.port, os.path.join(DATA, "miss.txt"), tag,
                                    duration=60, maxruns=1, clients=a.clients,
                                    outstanding=a.outstanding, server_pids=spids, auth_pids=apids)
                    elif test == "lat":
                        if n != "auth":
                            warm("127.0.0.1", s.port)
                        r = dnsperf("127.0.0.1", s.port, os.path.join(DATA, "hit.txt"), tag,
                                    duration=5, clients=a.clients, outstanding=a.outstanding,
                                    qps=a.lat_qps, server_pids=spids, auth_pids=apids)
                    r.update(server=n, test=test, round=rnd)
                    runs.append(r)
                    save()
                    print(f"{test:5s} r{rnd} {n:16s} qps={fmt(r.get('qps'))} "
                          f"us/q={r.get('srv_us_per_q')} "
                          f"other={r['other_cpu_pct']}% avg={r.get('avg_lat_ms')}ms "
                          f"p99={r.get('p99_ms')}ms lost={r.get('lost')} "
                          f"cpu={r['server_cpu_pct']}% auth={r['auth_cpu_pct']}% "
                          f"perf={r['dnsperf_cpu_pct']}% busy={r['machine_busy_pct']}%",
                          flush=True)
        rss = {n: rss_kb(srv[n].pids()) for n in names}
    finally:
        for s in reversed(started):
            s.stop()
    md = [f"# campaign {a.out}", ""]
    titles = {"hit": "cache-hit (1,000 names looped, closed loop)",
              "miss": "cache-miss (100,000 fresh names, each once, closed loop)",
              "missreal": "n0..n99999 real records, each once",
              "hitq1000": "cache-hit, 10 s closed loop with 1,000 outstanding (-q 1000)",
              "lat": f"latency at a fixed {a.lat_qps} QPS (cache hits)"}
    for test in a.tests.split(","):
        md.append(table_md(summarize(runs, test, names), titles.get(test, test)))
    md.append("RSS after campaign (KiB): " + ", ".join(f"{n}={v}" for n, v in rss.items()))
    with open(os.path.join(RES, a.out + ".md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))

# ----------------------------------------------------------------------------- harness


def harness(a):
    peers = [p for p in a.peers.split(",") if p]
    started = []
    target_srv = None
    runs = []
    try:
        auth = start("auth", port=a.auth_port)
        started.append(auth)
        if a.target_cmd:
            logf = open(os.path.join(RUN, "target.log"), "w")
            tp = subprocess.Popen("exec " + a.target_cmd, shell=True, stdout=logf,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
            target_srv = Server("target", a.target_port, [tp], [logf], group=True)
            started.append(target_srv)
            if not wait_ready(a.target_host, a.target_port, [tp]):
                raise SystemExit("target did not answer ns.bench.test; see run/target.log")
        elif dns_query(a.target_host, a.target_port, "ns.bench.test", timeout=1.0) != 0:
            raise SystemExit(f"target {a.target_host}:{a.target_port} does not answer "
                             f"ns.bench.test A (it must forward to 127.0.0.1:{a.auth_port})")
        srv = {}
        for i, p in enumerate(peers):
            port = PORTS[p] if PORTS[p] != a.target_port else 5400 + i
            srv[p] = start(p, port=port, auth_port=auth.port)
            started.append(srv[p])
        targets = [("target", a.target_host, a.target_port, target_srv.pids() if target_srv else
                    ([int(x) for x in a.target_pid.split(",")] if a.target_pid else []))]
        targets += [(p, "127.0.0.1", srv[p].port, srv[p].pids()) for p in peers]
        for _, h, port, _ in targets:
            warm(h, port)
        for test in a.tests.split(","):
            for rnd in range(a.rounds):
                order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
                for name, h, port, pids in order:
                    tag = f"harness-{test}-r{rnd}-{name}"
                    if test == "hit":
                        warm(h, port)
                        r = dnsperf(h, port, os.path.join(DATA, "hit.txt"), tag,
                                    duration=a.duration, clients=a.clients,
                                    outstanding=a.outstanding, server_pids=pids,
                                    auth_pids=auth.pids())
                    else:
                        mf = miss_file(f"h{rnd}-{name}")
                        r = dnsperf(h, port, mf, tag, duration=60, maxruns=1, clients=a.clients,
                                    outstanding=a.outstanding, server_pids=pids,
                                    auth_pids=auth.pids())
                        os.unlink(mf)
                    r.update(server=name, test=test, round=rnd)
                    runs.append(r)
                    print(f"  {test:4s} r{rnd} {name:12s} {fmt(r.get('qps')):>9s} qps  "
                          f"p99 {r.get('p99_ms')} ms  lost {r.get('lost')}  "
                          f"cpu {r['server_cpu_pct']}%",
                          file=sys.stderr, flush=True)
    finally:
        for s in reversed(started):
            s.stop()
    with open(os.path.join(RES, "harness-last.json"), "w") as f:
        json.dump(runs, f, indent=1)
    names = ["target"] + peers
    print()
    print(f"target {a.target_host}:{a.target_port}; {a.rounds} interleaved rounds; "
          f"hit = {a.duration}s closed loop (-c {a.clients} -q {a.outstanding}); "
          f"miss = 100k fresh names once")
    print()
    print("| test | server | QPS min | QPS median | QPS max | p99 ms (median) | lost | CPU % "
          "| CPU µs/q | target/peer (median QPS) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for test in a.tests.split(","):
        rows = {r["server"]: r for r in summarize(runs, test, names)}
        t = rows.get("target")
        for n in names:
            r = rows.get(n)
            if not r:
                continue
            ratio = "-" if n == "target" else f"{t['qps_med'] / r['qps_med']:.2f}x"
            print(f"| {test} | {n} | {fmt(r['qps_min'])} | {fmt(r['qps_med'])} "
                  f"| {fmt(r['qps_max'])} | {fmt(r['p99_ms'], 3)} | {r['lost']} "
                  f"| {fmt(r['server_cpu'])} | {fmt(r['us_q'], 2)} | {ratio} |")


def serve(a):
    started = []
    try:
        auth = start("auth")
        started.append(auth)
        for n in [n for n in a.servers.split(",") if n]:
            started.append(start(n, auth_port=auth.port))
        for s in started:
            print(f"{s.name:16s} 127.0.0.1:{s.port} pids={s.pids()}", flush=True)
        deadline = time.monotonic() + a.seconds
        while time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for s in reversed(started):
            s.stop()


def _term(signum, frame):
    # turn SIGTERM/SIGHUP into an exception so every `finally:` stops what it started (by pid)
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("campaign")
    c.add_argument("--servers", default="auth,dnsmasq,unbound-1t,unbound-2t,kresd,kresd-2p")
    c.add_argument("--tests", default="hit,miss,lat")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--duration", type=int, default=15)
    c.add_argument("--clients", type=int, default=16)
    c.add_argument("--outstanding", type=int, default=100)
    c.add_argument("--lat-qps", type=int, default=5000)
    c.add_argument("--out", default="campaign")
    h = sub.add_parser("harness")
    h.add_argument("--target-port", type=int, required=True)
    h.add_argument("--target-host", default="127.0.0.1")
    h.add_argument("--target-cmd", default=None,
                   help="shell command that starts the target (forwarding to 127.0.0.1:AUTH_PORT); "
                        "it is started after the auth server and stopped (by pid / process "
                        "group) at the end")
    h.add_argument("--target-pid", default=None,
                   help="pid(s) of an already-running target, for CPU %%")
    h.add_argument("--peers", default="dnsmasq,unbound-1t")
    h.add_argument("--tests", default="hit,miss")
    h.add_argument("--rounds", type=int, default=3)
    h.add_argument("--duration", type=int, default=15)
    h.add_argument("--clients", type=int, default=16)
    h.add_argument("--outstanding", type=int, default=100)
    h.add_argument("--auth-port", type=int, default=5300)
    s = sub.add_parser("serve")
    s.add_argument("--servers", default="dnsmasq,unbound-1t")
    s.add_argument("--seconds", type=int, default=600)
    a = ap.parse_args()
    def ipok(h):
        return h.startswith("127.")

    if getattr(a, "target_host", "127.0.0.1") and not ipok(getattr(a, "target_host", "127.0.0.1")):
        raise SystemExit("only 127.0.0.0/8 targets are allowed in this lab")
    if not os.path.exists(os.path.join(DATA, "hit.txt")):
        subprocess.run([sys.executable, os.path.join(BASE, "gen_data.py")], check=True)
    os.makedirs(RUN, exist_ok=True)
    {"campaign": campaign, "harness": harness, "serve": serve}[a.cmd](a)


if __name__ == "__main__":
    main()
