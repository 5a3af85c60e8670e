"""The `pkdns` command line: argparse subcommands with the exit-code contract.

Exit codes: 0 success; 1 runtime failure (nothing found, network); 2 usage, configuration or
input error. Errors are one line on stderr; a traceback only with ``-v``.

Each subcommand lives in ``pkdns/cmd/<name>.py`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (``(args) -> int``). ``serve`` is the default command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence

from pkdns import __version__
from pkdns.errors import PkdnsError

# Module per command group, in the order the help lists them.
_COMMAND_MODULES = ("serve", "keys", "dhtcmd")
COMMANDS = ("serve", "keygen", "pubkey", "packet", "publish", "resolve", "testnet")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="pkdns",
        description="DNS resolver for pkarr public-key domains (Mainline DHT) and ICANN names.",
    )
    parser.add_argument("--version", action="version", version=f"pkdns {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"pkdns.cmd.{name}")
        module.register(sub)
    return parser


def _with_default_command(argv: Sequence[str]) -> list[str]:
    """`pkdns [serve] ...`: insert `serve` when no subcommand is named."""
    args = list(argv)
    if any(a in ("-h", "--help", "--version") for a in args[:1]):
        return args
    if not args or args[0] not in COMMANDS:
        return ["serve", *args]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args_list = _with_default_command(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    func: Callable[[argparse.Namespace], int] = args.func
    verbose = bool(getattr(args, "verbose", False))
    try:
        return func(args)
    except PkdnsError as exc:
        if verbose:
            traceback.print_exc()
        print(f"pkdns: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback without -v
        if verbose:
            traceback.print_exc()
        print(f"pkdns: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
