"""Shared fixtures: fake clock, test vectors, and helpers for processes and ports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.clock import FakeClock

DATA = Path(__file__).parent / "data"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


def load_vector(name: str) -> Any:
    """Load ``tests/data/<name>.json``."""
    return json.loads((DATA / f"{name}.json").read_text())
