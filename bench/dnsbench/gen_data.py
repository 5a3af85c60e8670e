#!/usr/bin/env python3
"""Generate the synthetic zone bench.test. and the dnsperf query files.

zone:  n0..n99999 A, *.m wildcard A, n0..n9999 AAAA, n0..n999 TXT  (TTL 86400, SOA minimum 300)
hit.txt:  1,000 distinct (qname,qtype): n0..n999, 80% A, 10% AAAA, 10% TXT
miss.txt: 100,000 distinct names n0..n99999 A (each once), shuffled with a fixed seed
"""
import os
import random

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
os.makedirs(D, exist_ok=True)
with open(os.path.join(D, "bench.test.zone"), "w") as f:
    f.write("$ORIGIN bench.test.\n$TTL 86400\n")
    f.write("@ IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300\n")
    f.write("@ IN NS ns.bench.test.\nns IN A 127.0.0.1\n")
    # wildcard: fresh never-seen names for cache-miss runs without restarting servers
    f.write("*.m IN A 127.0.0.2\n")
    # big RRsets (> 1232 bytes) to exercise TC + TCP fallback
    for nm in ("big", "big2"):
        for k in range(8):
            f.write(f'{nm} IN TXT "{k:02d}' + "x" * 200 + '"\n')
    for i in range(100000):
        f.write(f"n{i} IN A 127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
    for i in range(10000):
        f.write(f"n{i} IN AAAA 2001:db8::{i:x}\n")
    for i in range(1000):
        f.write(f'n{i} IN TXT "bench record {i} v=spf1 -all padding-padding-padding"\n')
with open(os.path.join(D, "hit.txt"), "w") as f:
    for i in range(1000):
        t = "A" if i % 10 < 8 else ("AAAA" if i % 10 == 8 else "TXT")
        f.write(f"n{i}.bench.test {t}\n")
names = [f"n{i}.bench.test A\n" for i in range(100000)]
random.Random(42).shuffle(names)
with open(os.path.join(D, "miss.txt"), "w") as f:
    f.writelines(names)
print("ok")
