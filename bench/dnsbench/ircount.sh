#!/bin/sh
# ircount.sh [LABEL]  --  user-space instructions per cache miss of the pkdns UDP front end.
#
# Why: dnsperf QPS on this shared 2-core VM moves +-10 % between runs, which hides the 1-3 %
# steps the miss path is made of. valgrind's callgrind counts instructions, the same for the
# same code whatever the machine is doing. micro.py (the daemon's real UDP path in-process,
# knotd on loopback as upstream) runs twice, with 500 and 2,500 misses; the difference / 2,000
# is the cost of one miss with start-up and warm-up cancelled out. It includes micro.py's own
# query building (~5 k) and no kernel work (system calls are the other half of a miss; see
# bench/RESULTS.md). Needs valgrind (apt-get install valgrind); takes about a minute.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${TMPDIR:-/tmp}/pkdns-ircount.$$"
mkdir -p "$out"
run() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" \
    "$root/.venv/bin/python" "$here/micro.py" --hits 0 --misses "$1" --window 50 \
    >"$out/log.$1" 2>&1
  awk '/^(summary|totals):/ {print $2; exit}' "$out/cg.$1"
}
a=$(run 500)
b=$(run 2500)
echo "${1:-pkdns}: $(( (b - a) / 2000 )) instructions per miss (callgrind: $out)"
