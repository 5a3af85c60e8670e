"""The sqlite3 state store: round trips, bounds, newer-wins, and recovery from bad files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from structlog.testing import capture_logs

from pkdns.state import FILENAME, SavedPacket, ScheduleEntry, StateStore

NOW = 1_700_000_000.0


def _packet(n: int, timestamp: int = 1, seen_at: float = NOW) -> SavedPacket:
    key = bytes([n]) * 32
    return SavedPacket(key, timestamp, key + b"s" * 64 + timestamp.to_bytes(8, "big") + b"dns",
                       seen_at)


def _node(n: int) -> tuple[bytes, str, int]:
    return (bytes([n]) * 20, f"10.0.0.{n}", 6881 + n)


def test_nodes_round_trip_in_order_and_bounded(tmp_path: Path) -> None:
    store = StateStore(tmp_path, NOW)
    assert store.load_nodes(100) == []
    assert store.save_nodes([_node(i) for i in range(10)], max_nodes=5) == 5
    assert store.load_nodes(100) == [_node(i) for i in range(5)]
    assert store.load_nodes(2) == [_node(0), _node(1)]
    store.save_nodes([_node(9), _node(8)], max_nodes=5)  # replaces, keeps the new order
    assert store.load_nodes(100) == [_node(9), _node(8)]
    store.close()
    reopened = StateStore(tmp_path, NOW + 10)
    assert reopened.load_nodes(100) == [_node(9), _node(8)]
    reopened.close()


def test_packets_newer_timestamp_wins(tmp_path: Path) -> None:
    store = StateStore(tmp_path, NOW)
    store.save_packets([_packet(1, timestamp=5)], NOW, max_packets=10, max_age=100)
    store.save_packets([_packet(1, timestamp=3, seen_at=NOW + 1)], NOW, max_packets=10,
                       max_age=100)
    (got,) = store.load_packets(NOW, max_age=100, limit=10)
    assert got.timestamp == 5 and got == _packet(1, timestamp=5)
    store.save_packets([_packet(1, timestamp=7, seen_at=NOW + 2)], NOW, max_packets=10,
                       max_age=100)
    assert store.load_packets(NOW, max_age=100, limit=10) == [
        _packet(1, timestamp=7, seen_at=NOW + 2)]
    store.close()


def test_packets_pruned_by_age_and_count(tmp_path: Path) -> None:
    store = StateStore(tmp_path, NOW)
    packets = [_packet(i, seen_at=NOW - 10 * i) for i in range(1, 8)]
    store.save_packets(packets, NOW, max_packets=4, max_age=55)
    kept = store.load_packets(NOW, max_age=1000, limit=100)
    assert [p.key[0] for p in kept] == [1, 2, 3, 4]     # 5 (50 s) survives age, not the count
    assert [p.key[0] for p in store.load_packets(NOW + 25, max_age=55, limit=100)] == [1, 2, 3]
    assert len(store.load_packets(NOW, max_age=1000, limit=2)) == 2
    store.close()


def test_schedule_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path, NOW)
    entries = [ScheduleEntry("zone:abc", NOW + 60, "stored 8", NOW),
               ScheduleEntry("popular:def", NOW + 3600)]
    store.save_schedule(entries)
    store.close()
    again = StateStore(tmp_path, NOW)
    assert again.load_schedule() == {e.name: e for e in entries}
    again.save_schedule([])
    assert again.load_schedule() == {}
    again.close()


def test_file_is_wal_mode_sqlite(tmp_path: Path) -> None:
    StateStore(tmp_path, NOW).close()
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_garbage_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b"this is not a database" * 200)
    with capture_logs() as logs:
        store = StateStore(tmp_path, NOW)
    assert store.persistent
    assert (tmp_path / f"{FILENAME}.corrupt-{int(NOW)}").read_bytes().startswith(b"this is not")
    assert [e["event"] for e in logs] == ["state_corrupt"]
    assert logs[0]["log_level"] == "warning"
    store.save_nodes([_node(1)], max_nodes=5)
    assert store.load_nodes(5) == [_node(1)]
    store.close()


def test_truncated_database_is_moved_aside(tmp_path: Path) -> None:
    store = StateStore(tmp_path, NOW)
    store.save_packets([_packet(i) for i in range(1, 200)], NOW, max_packets=1000, max_age=10)
    store.close()
    data = (tmp_path / FILENAME).read_bytes()
    (tmp_path / FILENAME).write_bytes(data[: len(data) // 2] + b"\xff" * 4096)
    with capture_logs() as logs:
        fresh = StateStore(tmp_path, NOW)
        loaded = fresh.load_packets(NOW, max_age=10, limit=1000)
    assert loaded == []
    assert [e["event"] for e in logs] == ["state_corrupt"]
    assert "malformed" in logs[0]["error"]
    fresh.close()


def test_other_schema_version_is_moved_aside(tmp_path: Path) -> None:
    StateStore(tmp_path, NOW).close()
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    db.commit()
    db.close()
    with capture_logs() as logs:
        StateStore(tmp_path, NOW).close()
    assert logs[0]["event"] == "state_corrupt" and "schema" in logs[0]["error"]


def test_unusable_state_dir_runs_in_memory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with capture_logs() as logs:
        store = StateStore(tmp_path / "file" / "state", NOW)
    assert not store.persistent
    assert logs[0]["event"] == "state_unavailable" and logs[0]["log_level"] == "error"
    store.save_nodes([_node(1)], max_nodes=1)
    assert store.load_nodes(1) == [_node(1)]
    store.close()


def test_failed_write_is_logged_not_raised(tmp_path: Path) -> None:
    store = StateStore(tmp_path, NOW)
    other = sqlite3.connect(tmp_path / FILENAME)
    other.execute("DROP TABLE packets")
    other.commit()
    other.close()
    with capture_logs() as logs:
        store.save_packets([_packet(1)], NOW, max_packets=1, max_age=1)
        assert store.load_packets(NOW, max_age=1, limit=1) == []
    assert [e["event"] for e in logs] == ["state_save_failed", "state_load_failed"]
    store.close()
