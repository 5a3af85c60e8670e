"""tests.support.require: a missing tool skips on a workstation and fails in CI."""

from __future__ import annotations

import pytest

from tests.support.require import STRICT_VARS, require, require_tool, strict


@pytest.fixture
def relaxed(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in STRICT_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("relaxed")
def test_missing_tool_skips_when_not_strict() -> None:
    assert not strict()
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-pkdns is not installed"):
        require_tool("no-such-tool-pkdns")
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require("needs root")


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("var", STRICT_VARS)
def test_missing_tool_fails_when_required(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "1")
    assert strict()
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-pkdns .*must run"):
        require_tool("no-such-tool-pkdns")
    with pytest.raises(pytest.fail.Exception, match="needs root"):
        require("needs root")


@pytest.mark.usefixtures("relaxed")
def test_false_values_are_not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    monkeypatch.setenv("PKDNS_REQUIRE_ALL", "0")
    assert not strict()


def test_present_tool_and_nothing_missing_pass() -> None:
    assert require_tool("sh").endswith("/sh")
    assert require_tool("sh", "/no/such/sh").endswith("/sh")    # falls back to PATH
    require(None)
