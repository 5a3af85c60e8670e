#!/usr/bin/env bash
# bench-pkdns.sh [harness options]  --  pkdns vs dnsmasq and unbound (1 thread), interleaved.
#
# Starts knotd (bench.test. on 127.0.0.1:5300), dnsmasq, unbound-1t and pkdns (the installed
# .venv/bin/pkdns on 127.0.0.1:5320, forwarding to :5300, config pkdns.toml), runs dnsperf
# cache-hit and cache-miss rounds over all three, prints the table, stops everything by pid.
#   bench/dnsbench/bench-pkdns.sh --rounds 3 --duration 15
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port=5320
pkdns="$root/.venv/bin/pkdns serve --listen 127.0.0.1:$port --upstream 127.0.0.1:5300"
pkdns="$pkdns --config $here/pkdns.toml --no-http --state-dir $here/run/pkdns-state"
pkdns="$pkdns --dht-port 0 --bootstrap 127.0.0.1:9"
exec "$here/bench.sh" "$port" --target-cmd "$pkdns" --peers dnsmasq,unbound-1t "$@"
