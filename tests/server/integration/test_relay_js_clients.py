"""pkarr's own relay clients against pkdns's relay API: npm pkarr@1.3.0 (JS) and
@synonymdev/pubky@0.6.0 (Rust pkarr compiled to WASM). tests/interop/relay_clients.mjs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pkdns.clock import SYSTEM_CLOCK
from pkdns.pkarr.keys import Keypair
from tests.support.clock import FakeClock
from tests.support.http_rig import RelayRig
from tests.support.require import require_tool

SCRIPT = Path(__file__).parents[2] / "interop" / "relay_clients.mjs"
pytestmark = pytest.mark.interop
SEED = "11" * 32
HS_SEED = "22" * 32


@pytest.fixture
def fake_clock() -> FakeClock:
    """The relay's wall clock at the real time: the WASM client signs packets dated now, and
    the relay refuses packets dated more than an hour after its clock."""
    return FakeClock(wall_us=SYSTEM_CLOCK.wall_us())


async def _node(*args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        require_tool("node"), str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=SCRIPT.parent)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_pkarr_js_relay_put_and_get(relay: RelayRig) -> None:
    z32 = Keypair.from_seed(bytes.fromhex(SEED)).public_key.z32
    put = await _node("pkarr-put", "--relay", relay.url, "--seed", SEED,
                      "--seq", "1700000000000001", "--txt", "from js")
    assert put == {"status": 204, "ok": True, "z32": z32, "stored": "7"}
    (published,) = relay.publisher.published
    assert published.timestamp == 1700000000000001
    assert [str(rr.rname).rstrip(".") for rr in published.records] == [z32, f"_pkarr.{z32}"]
    got = await _node("pkarr-get", "--relay", relay.url, "--seed", SEED)
    assert got == {"ok": True, "seq": 1700000000000001,
                   "answers": [f"{z32} A 192.0.2.80", f"_pkarr.{z32} TXT from js"]}
    stale = await _node("pkarr-put", "--relay", relay.url, "--seed", SEED, "--seq", "5")
    assert stale["status"] == 409


async def test_pubky_wasm_client_publishes_and_resolves_through_pkdns(relay: RelayRig) -> None:
    pub = await _node("pubky-publish", "--relay", relay.url, "--seed", SEED,
                      "--homeserver-seed", HS_SEED)
    assert pub["ok"], pub
    user, homeserver = pub["user"], pub["homeserver"]
    (published,) = relay.publisher.published
    assert published.public_key.z32 == user
    assert any(homeserver in rr.toZone() for rr in published.records
               if str(rr.rname).startswith("_pubky."))
    res = await _node("pubky-resolve", "--relay", relay.url, "--pubkey", user)
    assert res == {"ok": True, "homeserver": homeserver}
