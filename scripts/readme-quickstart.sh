#!/bin/sh
# Follow the README's quick start as a new user would: clone the repository, run the README's
# first command verbatim (it creates a venv, installs pkdns and starts `pkdns --testnet`), then
# run every `dig`/`kdig` line the demo prints and check each one answers with records.
# Needs PyPI (the install step) and dig/kdig; called at the end of scripts/test-all.sh.
set -eu
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill -s INT -- "-$pid" 2>/dev/null || true
    sleep 2
    kill -s KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  git clone -q "$repo" "$work/pkdns"
else   # a plain copy of the tree, without what a clone would not have
  mkdir "$work/pkdns"
  tar -C "$repo" --exclude=.venv --exclude=node_modules --exclude=.git -cf - . | tar -C "$work/pkdns" -xf -
fi
cd "$work/pkdns"
# The first ```sh block of the README is the install-and-run command.
cmd="$(awk '/^```sh/{f=1; next} /^```/{if (f) exit} f' README.md)"
[ -n "$cmd" ] || { echo "readme-quickstart: no command found in README.md" >&2; exit 1; }
echo "readme-quickstart: running: $cmd"
setsid sh -c "$cmd" > demo.log 2>&1 &
pid=$!

i=0
until grep -q '^  dig ' demo.log 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "readme-quickstart: the demo did not print its dig lines; its output:" >&2
    cat demo.log >&2
    exit 1
  fi
  sleep 1
done

grep -E '^  k?dig ' demo.log > lines.txt
while read -r line; do
  out="$(sh -c "$line")"
  if ! printf '%s\n' "$out" | grep -q 'status: NOERROR' || printf '%s\n' "$out" | grep -q 'ANSWER: 0'; then
    echo "readme-quickstart: FAILED: $line" >&2
    printf '%s\n' "$out" >&2
    exit 1
  fi
  echo "readme-quickstart: ok: $line"
done < lines.txt
echo "readme-quickstart: the README quick start works from a fresh clone"
