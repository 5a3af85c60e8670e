#!/bin/sh
# Install everything the test suite needs on a fresh Debian machine (Python 3.11), then run
# lint, type checks and the whole suite. Used by the README and by .ci/run.
set -eu
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
APT_PKGS="bind9-dnsutils knot-dnsutils knot dnsperf dnsmasq-base unbound chromium libnss3-tools iproute2 nftables openssl systemd dbus util-linux python3-venv gcc python3-dev"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
# Node.js and npm only when absent (a newer npm may already be installed outside dpkg).
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# systemd-resolved is only downloaded, never installed (installing it would take over this
# machine's /etc/resolv.conf): tests/e2e/test_resolved.py unpacks it with dpkg -x and runs it
# in a namespace. The version matches the installed systemd (same libsystemd-shared).
resolved_version="$(dpkg-query -W -f '${Version}' systemd)"
if ! ls .cache/debs/systemd-resolved_"$(echo "$resolved_version" | sed 's/:/%3a/')"_*.deb >/dev/null 2>&1; then
  mkdir -p .cache/debs
  (cd .cache/debs && apt-get download -q "systemd-resolved=$resolved_version" 2>/dev/null \
    || { $SUDO apt-get update -qq && apt-get download -q "systemd-resolved=$resolved_version"; })
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
npm install --prefix tests/interop --no-audit --no-fund --loglevel=error

.venv/bin/ruff check pkdns tests bench
.venv/bin/mypy
# pytest exits 5 when no test ran; set -e turns that into a failure. Every tool above is
# installed, so a test that would skip for a missing one fails instead (tests/support/require.py).
export PKDNS_REQUIRE_ALL=1
PYTHONASYNCIODEBUG=1 .venv/bin/pytest -n 2 --dist loadfile "$@"
# Last, the README's quick start from a fresh clone, exactly as written there.
sh scripts/readme-quickstart.sh
