"""Composition root: builds the parts from a Config, starts and stops them in order."""

from __future__ import annotations

from pkdns.config import Config
from pkdns.errors import PkdnsError


def main(cfg: Config) -> int:
    """Run the daemon until stopped; returns the exit code."""
    raise PkdnsError("the daemon is being assembled; see issues 4 and 7")
