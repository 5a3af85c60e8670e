"""structlog configuration: JSON lines when stdout is not a TTY (systemd, docker, files), a
readable console otherwise.

Levels: lifecycle events (``started``, ``listening``, ``reloaded``, ``stopping``,
``zone_published``) are ``info``; one canonical line per query (``query``) is ``debug``, so
``-v`` or ``[log] level = "debug"`` turns the query log on. Event names are snake_case
(``query``, ``dht_lookup_done``); fields carry the data, never f-strings.

Records from the standard ``logging`` module (asyncio, aiohttp) go through the same renderer,
so a JSON log stays one JSON object per line.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_current_level = logging.INFO


class RecentProblems:
    """A structlog processor that keeps the last ``size`` warnings and errors, whatever the
    output format, so the status page can show an operator what went wrong lately without a
    log file to read (a router often has none)."""

    LEVELS = frozenset({"warning", "error", "critical", "exception"})

    def __init__(self, size: int = 50) -> None:
        self._events: deque[dict[str, str]] = deque(maxlen=size)

    def __call__(self, _logger: Any, _method: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        level = str(event.get("level", ""))
        if level in self.LEVELS:
            fields = " ".join(f"{k}={v}" for k, v in event.items()
                              if k not in ("event", "level", "timestamp", "_record",
                                           "_from_structlog"))
            self._events.append({"time": str(event.get("timestamp", "")), "level": level,
                                 "event": str(event.get("event", "")), "detail": fields[:300]})
        return event

    def events(self) -> list[dict[str, str]]:
        """Newest first."""
        return list(reversed(self._events))


RECENT = RecentProblems()
"""The process's recent warnings and errors (one process, one log configuration)."""


def _shared_processors() -> list[Any]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        RECENT,
    ]


def _renderer(fmt: str, stream: TextIO) -> Any:
    import structlog

    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """``auto`` becomes ``console`` on a TTY and ``json`` otherwise."""
    if fmt != "auto":
        return fmt
    return "console" if (stream or sys.stdout).isatty() else "json"


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog (and stdlib logging) for the process; safe to call again on reload.

    Args:
        level: ``debug`` | ``info`` | ``warning`` | ``error``.
        fmt: ``json``, ``console`` or ``auto``.
        stream: where lines go (stdout by default).
    """
    import structlog

    global _current_level
    out = stream or sys.stdout
    fmt = resolve_format(fmt, out)
    _current_level = LEVELS.get(level, logging.INFO)
    processors = _shared_processors()
    if fmt == "json":
        processors.append(structlog.processors.dict_tracebacks)
    structlog.configure(
        processors=[*processors, _renderer(fmt, out)],
        wrapper_class=structlog.make_filtering_bound_logger(_current_level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(fmt, out)


class _Handler(logging.StreamHandler[TextIO]):
    """Our stdlib handler (a type of its own, so a reconfigure replaces only ours)."""


def _configure_stdlib(fmt: str, out: TextIO) -> None:
    """Route stdlib logging (warnings and up) through the same renderer."""
    import structlog

    handler = _Handler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared_processors()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _renderer(fmt, out)]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(_current_level, logging.WARNING))


def is_enabled(level: str) -> bool:
    """Whether ``level`` is logged now (to skip building expensive fields)."""
    return LEVELS.get(level, logging.INFO) >= _current_level


class _Logger:
    """structlog's logger for a component, looked up at its first use: modules get their
    logger when imported, and a command that never logs (``pkdns resolve``) then never
    imports structlog (a noticeable part of a cold command's start-up)."""

    __slots__ = ("_name", "_bound")

    def __init__(self, name: str) -> None:
        self._name = name
        self._bound: structlog.typing.BindableLogger | None = None

    def __getattr__(self, method: str) -> Any:
        if self._bound is None:
            import structlog

            self._bound = structlog.get_logger(component=self._name)
        return getattr(self._bound, method)


def get(name: str) -> Any:
    """A logger bound to a component name."""
    return _Logger(name)
