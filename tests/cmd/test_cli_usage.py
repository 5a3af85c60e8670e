"""argparse usage errors of every subcommand: one line on stderr naming the command, exit 2.

The CLI contract: errors are one line on stderr, exit 2 for usage. argparse's default
is the whole usage block, and for unknown flags the top-level usage; pkdns.cli.CliParser turns
both into ``pkdns <cmd>: error: <message> (see pkdns <cmd> --help)``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pkdns.cli import COMMANDS, build_parser

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


def test_a_mistyped_command_is_reported_as_an_unknown_command() -> None:
    """``pkdns bogus`` once became ``pkdns serve bogus`` ("unrecognized arguments")."""
    proc = _run("bogus")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("pkdns: error: argument COMMAND: invalid choice: 'bogus'"), line
    assert "serve" in line and "(see pkdns --help)" in line
    # Flags alone still mean serve.
    _assert_usage_error(_run("--bogus"), "serve", "--bogus")


def test_serve_help_describes_the_command_and_every_flag() -> None:
    proc = _run("serve", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "Run the resolver in the foreground" in text
    for flag in ("--dht-mode", "--state-dir", "--log-format"):
        block = re.search(rf"{flag}[^\n]*\n((?: {{10,}}.*\n)*)", proc.stdout)
        assert block is not None, flag
        assert len(" ".join((block.group(0)).split())) > len(flag) + 30, block.group(0)


def test_check_without_config_says_no_file_was_read() -> None:
    proc = _run("serve", "--check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "defaults (no --config given, no file read): configuration OK"


def test_a_named_command_parses_with_its_own_module_only() -> None:
    """``pkdns resolve`` registers dhtcmd's commands, not serve's or the gateway's; every
    command is in the map, and its own parser is the one the full parser has."""
    full = build_parser()
    assert sorted(full.commands) == sorted(COMMANDS)
    for command in COMMANDS:
        parser = build_parser(command)
        assert command in parser.commands
        assert parser.commands[command].format_help() == full.commands[command].format_help()
    assert sorted(build_parser("resolve").commands) == ["publish", "resolve", "testnet"]
