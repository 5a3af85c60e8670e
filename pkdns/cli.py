"""The `pkdns` command line: argparse subcommands with the exit-code contract.

Exit codes: 0 success; 1 runtime failure (nothing found, network); 2 usage, configuration or
input error. Errors are one line on stderr; a traceback only with ``-v``.

Each subcommand lives in ``pkdns/cmd/<name>.py`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (``(args) -> int``). ``serve`` is the default command.

argparse's own usage errors follow the same contract: :class:`CliParser` prints one line
naming the command (``pkdns packet: error: ... (see pkdns packet --help)``) instead of the
whole usage block, and unknown flags are blamed on the subcommand that was given them, not on
the top-level parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pkdns import __version__
from pkdns.errors import PkdnsError

# Module per command group, in the order the help lists them.
_COMMAND_MODULES = ("serve", "keys", "dhtcmd", "gatewaycmd")
COMMANDS = ("serve", "keygen", "pubkey", "packet", "publish", "resolve", "testnet", "tlsa", "ca")
_MODULE_OF = {"serve": "serve", "keygen": "keys", "pubkey": "keys", "packet": "keys",
              "publish": "dhtcmd", "resolve": "dhtcmd", "testnet": "dhtcmd",
              "tlsa": "gatewaycmd", "ca": "gatewaycmd"}
"""The module that registers each command: a named command loads only its own."""


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2.

    argparse prints the whole usage block before the message; operators and scripts get the
    one-line contract of every other pkdns error instead, with a pointer to ``--help``.
    ``commands`` (set on the top-level parser) maps each subcommand to its parser, so that
    unknown flags can be reported by the subcommand they were given to.
    """

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see <prog> --help)`` and exit 2."""
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> CliParser:
    """The full parser, with every subcommand registered; with ``command``, only the
    subcommands of its module (what a run of that command parses with).

    A cold ``pkdns resolve`` would otherwise import the daemon's configuration and the
    gateway's commands just to list them, a tenth of its start-up; ``--help`` and an unknown
    command get the full parser.
    """
    parser = CliParser(
        prog="pkdns",
        description="DNS resolver for pkarr public-key domains (Mainline DHT) and ICANN names.",
    )
    parser.add_argument("--version", action="version", version=f"pkdns {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    for name in _COMMAND_MODULES if command is None else (_MODULE_OF[command],):
        module = importlib.import_module(f"pkdns.cmd.{name}")
        module.register(sub)
    parser.commands = dict(sub.choices)
    return parser


def parse_command_line(parser: CliParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args``, but unknown arguments are a usage error of their subcommand.

    argparse lets a subparser pass unknown arguments up, and the top-level parser then
    reports them with the top-level usage (``pkdns keygen --bogus`` would point at
    ``pkdns --help``); here the subcommand's parser reports them.
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = parser.commands.get(getattr(args, "command", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _with_default_command(argv: Sequence[str]) -> list[str]:
    """`pkdns [serve] ...`: insert `serve` when no subcommand is named.

    Only an empty command line or one that starts with a flag means `serve`: a first word
    that is not a command (``pkdns bogus``) is left for argparse to report as an unknown
    command, instead of becoming a confusing ``pkdns serve`` error about an extra argument.
    """
    args = list(argv)
    if any(a in ("-h", "--help", "--version") for a in args[:1]):
        return args
    if not args or args[0].startswith("-"):
        return ["serve", *args]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args_list = _with_default_command(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in _MODULE_OF else None
    args = parse_command_line(build_parser(command), args_list)
    func: Callable[[argparse.Namespace], int] = args.func
    verbose = bool(getattr(args, "verbose", False))
    try:
        return func(args)
    except PkdnsError as exc:
        if verbose:
            import traceback  # only with -v

            traceback.print_exc()
        print(f"pkdns: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: one line, never a traceback without -v
        if verbose:
            import traceback  # only with -v

            traceback.print_exc()
        print(f"pkdns: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
