"""The state directory: one sqlite3 file that lets a restart pick up where the daemon left off.

What is kept (all bounded by ``[state]`` options):

* ``nodes``      DHT contacts ``(node id, host, port)``, good ones first, so the next start
                 bootstraps from them instead of (or before) the public routers.
* ``packets``    the last verified signed packet per key (canonical bytes: key, sig, ts,
                 DNS packet) and the wall time it was last confirmed by the network. After a
                 restart these answer at once (stale if needed, RFC 8767 style) while a
                 refresh runs.
* ``schedule``   the republisher's plan: name -> next due time, last result.

Times here are wall-clock seconds (they must survive a reboot); callers convert to and from
monotonic time. Every method takes ``now`` instead of reading the clock.

The store never takes the daemon down: a file that is not a database, fails the integrity
check or has another schema is renamed aside (``state.sqlite3.corrupt-<time>``) and a fresh one
is created, with a warning; a failing write (disk full, read-only) is logged and skipped.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkdns import log

FILENAME = "state.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    host TEXT NOT NULL, port INTEGER NOT NULL, node_id BLOB NOT NULL, rank INTEGER NOT NULL,
    PRIMARY KEY (host, port));
CREATE TABLE IF NOT EXISTS packets (
    key BLOB PRIMARY KEY, timestamp INTEGER NOT NULL, data BLOB NOT NULL,
    seen_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS packets_seen ON packets (seen_at);
CREATE TABLE IF NOT EXISTS schedule (
    name TEXT PRIMARY KEY, next_at REAL NOT NULL, last_result TEXT NOT NULL,
    last_at REAL NOT NULL);
"""

_log = log.get("state")

SavedNode = tuple[bytes, str, int]
"""``(node id, host, port)``, the shape of ``DhtNode.export_nodes()``."""


@dataclass(frozen=True, slots=True)
class SavedPacket:
    """A verified signed packet as stored: re-verify with ``SignedPacket.from_bytes`` on load."""

    key: bytes          # 32-byte Ed25519 public key
    timestamp: int      # pkarr timestamp (µs), to keep only the most recent per key
    data: bytes         # canonical bytes: key + signature + timestamp + DNS packet
    seen_at: float      # wall seconds when the network last confirmed it


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One republish job: when it is next due and how it went last time."""

    name: str
    next_at: float
    last_result: str = ""
    last_at: float = 0.0


class StateStore:
    """The sqlite3 state file (WAL mode). Safe to call from one worker thread at a time."""

    def __init__(self, state_dir: str | os.PathLike[str], now: float) -> None:
        self.path = Path(state_dir) / FILENAME
        self._lock = threading.Lock()
        self.persistent = True
        self._db = self._open(now)

    # --- opening, recovery ----------------------------------------------------------------

    def _open(self, now: float) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                return self._connect(self.path)
            except sqlite3.DatabaseError as exc:
                self._move_aside(exc, now)
                return self._connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            # Unwritable state dir: run without persistence rather than not at all.
            _log.error("state_unavailable", path=str(self.path), error=str(exc))
            self.persistent = False
            return self._connect(":memory:")

    def _move_aside(self, exc: Exception, now: float) -> None:
        aside = self.path.with_name(f"{FILENAME}.corrupt-{int(now)}")
        _log.warning("state_corrupt", path=str(self.path), error=str(exc), moved_to=str(aside))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").rename(f"{aside}{suffix}")

    @staticmethod
    def _connect(where: Path | str) -> sqlite3.Connection:
        db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise sqlite3.DatabaseError("integrity check failed")
            with db:
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                           (str(SCHEMA_VERSION),))
            row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row != (str(SCHEMA_VERSION),):
                raise sqlite3.DatabaseError(f"unknown schema version {row}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction; a failure is logged and rolled back, never raised."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                _log.warning("state_save_failed", what=what, error=str(exc))

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                _log.warning("state_load_failed", error=str(exc))
                return []

    # --- routing table ----------------------------------------------------------------------

    def save_nodes(self, nodes: Iterable[SavedNode], max_nodes: int) -> int:
        """Replace the saved contacts with ``nodes`` (best first), at most ``max_nodes``."""
        rows = []
        for rank, (node_id, host, port) in enumerate(nodes):
            if rank >= max_nodes:
                break
            rows.append((host, port, node_id, rank))
        with self._write("nodes") as db:
            db.execute("DELETE FROM nodes")
            db.executemany("INSERT OR IGNORE INTO nodes VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    def load_nodes(self, limit: int) -> list[SavedNode]:
        """Saved contacts, best first."""
        rows = self._read("SELECT node_id, host, port FROM nodes ORDER BY rank LIMIT ?", (limit,))
        return [(bytes(i), str(h), int(p)) for i, h, p in rows if len(i) == 20]

    # --- signed packets ---------------------------------------------------------------------

    def save_packets(self, packets: Iterable[SavedPacket], now: float, *, max_packets: int,
                     max_age: float) -> int:
        """Upsert packets (a newer timestamp wins), then drop old and excess ones."""
        rows = [(p.key, p.timestamp, p.data, p.seen_at) for p in packets]
        with self._write("packets") as db:
            db.executemany(
                "INSERT INTO packets VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "timestamp = excluded.timestamp, data = excluded.data, "
                "seen_at = max(seen_at, excluded.seen_at) "
                "WHERE excluded.timestamp >= packets.timestamp", rows)
            db.execute("DELETE FROM packets WHERE seen_at < ?", (now - max_age,))
            db.execute("DELETE FROM packets WHERE key NOT IN "
                       "(SELECT key FROM packets ORDER BY seen_at DESC LIMIT ?)", (max_packets,))
        return len(rows)

    def load_packets(self, now: float, *, max_age: float, limit: int) -> list[SavedPacket]:
        """Saved packets seen within ``max_age``, most recently seen first."""
        rows = self._read("SELECT key, timestamp, data, seen_at FROM packets WHERE seen_at >= ? "
                          "ORDER BY seen_at DESC LIMIT ?", (now - max_age, limit))
        return [SavedPacket(bytes(k), int(t), bytes(d), float(s)) for k, t, d, s in rows]

    # --- republish schedule -----------------------------------------------------------------

    def save_schedule(self, entries: Iterable[ScheduleEntry]) -> None:
        """Replace the saved schedule."""
        rows = [(e.name, e.next_at, e.last_result, e.last_at) for e in entries]
        with self._write("schedule") as db:
            db.execute("DELETE FROM schedule")
            db.executemany("INSERT OR REPLACE INTO schedule VALUES (?, ?, ?, ?)", rows)

    def load_schedule(self) -> dict[str, ScheduleEntry]:
        rows = self._read("SELECT name, next_at, last_result, last_at FROM schedule")
        return {n: ScheduleEntry(str(n), float(t), str(r), float(a)) for n, t, r, a in rows}


__all__ = ["FILENAME", "SavedNode", "SavedPacket", "ScheduleEntry", "StateStore"]
