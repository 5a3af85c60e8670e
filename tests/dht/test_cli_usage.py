"""argparse usage errors of every subcommand: one line on stderr naming the command, exit 2.

design.md's CLI contract: errors are one line on stderr, exit 2 for usage. argparse's default
is the whole usage block, and for unknown flags the top-level usage; pkdns.cli.CliParser turns
both into ``pkdns <cmd>: error: <message> (see pkdns <cmd> --help)``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pkdns.cli import COMMANDS

PKDNS = str(Path(sys.executable).with_name("pkdns"))


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PKDNS, *argv], capture_output=True, text=True, timeout=30,
                          check=False)


def _assert_usage_error(proc: subprocess.CompletedProcess[str], command: str,
                        *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    prog = f"pkdns {command}"
    assert re.fullmatch(rf"{prog}: error: .+ \(see {prog} --help\)", lines[0]), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


# Enough positional arguments that only the flag is wrong (nothing is read before parsing).
_POSITIONALS = {"pubkey": ["seed"], "packet": ["seed", "zone"], "publish": ["seed", "zone"],
                "resolve": ["key"], "tlsa": ["cert.pem"], "ca": ["show"]}


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_flag_is_blamed_on_its_subcommand(command: str) -> None:
    proc = _run(command, *_POSITIONALS.get(command, []), "--bogus")
    _assert_usage_error(proc, command, "unrecognized arguments: --bogus")


def test_default_command_is_serve_for_unknown_flags() -> None:
    _assert_usage_error(_run("--bogus"), "serve", "--bogus")


@pytest.mark.parametrize(("argv", "missing"), [
    (("pubkey",), "SEEDFILE"),
    (("packet",), "SEEDFILE, ZONEFILE"),
    (("packet", "seed"), "ZONEFILE"),
    (("publish",), "SEEDFILE, ZONEFILE"),
    (("resolve",), "KEY"),
    (("tlsa",), "CERT.pem"),
])
def test_missing_positional_arguments(argv: tuple[str, ...], missing: str) -> None:
    _assert_usage_error(_run(*argv), argv[0], f"the following arguments are required: {missing}")


@pytest.mark.parametrize(("argv", "fragment"), [
    (("testnet", "--nodes", "many"), "argument --nodes: invalid int value: 'many'"),
    (("serve", "--dht-mode", "turbo"), "argument --dht-mode: invalid choice: 'turbo'"),
    (("serve", "--http", "127.0.0.1:1", "--no-http"), "not allowed with argument --http"),
    (("pubkey", "a", "b"), "unrecognized arguments: b"),
    (("resolve", "k", "--relay", "ftp://x.example"), "not an http(s) relay URL"),
])
def test_bad_values_and_extra_arguments(argv: tuple[str, ...], fragment: str) -> None:
    _assert_usage_error(_run(*argv), argv[0], fragment)


def test_help_and_version_still_work() -> None:
    proc = _run("packet", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: pkdns packet")
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("pkdns ")
