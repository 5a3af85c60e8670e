"""The kernel lab, small: bittorrent-dht, libtorrent and pkdns nodes in a namespace of their own
with nft packet loss, killed, NAT'd, BEP 44-less, erroring and Sybil nodes; pkdns's cold
``resolve``, its warm daemon and its relay fallback measured in it (``bench/dhtlab.py`` is the
full size). One run is shared by the tests below; each checks one part of its result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.klab import LabConfig, run_lab, unavailable
from tests.support.require import require

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

SMALL = LabConfig(bt=8, lt=3, honest=2, no_bep44=1, errors=1, keys=4, cold_lookups=2,
                  cold_impls=("pkdns", "libtorrent"), cold_loss=30, warm_loss=30,
                  warm_queries=4, warm_settle=3.0, sybil_keys=1, sybil_size=8,
                  sybil_lookups=1, one_shot_timeout=10.0, seed=7)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require(unavailable())
    log: Path = tmp_path_factory.mktemp("klab") / "lab.log"
    try:
        yield run_lab(SMALL, timeout=150, log=log)
    except Exception as exc:  # the lab's own stderr says why
        pytest.fail(f"{exc}\n{log.read_text()[-3000:] if log.exists() else ''}")


def test_lab_builds_the_faulty_network(lab: dict[str, Any]) -> None:
    assert lab["put"]["stored_min"] >= 4  # stored while the network was clean
    assert min(lab["put"]["sybil_keys_stored"]) >= 4  # honest holders exist for Sybil keys
    setup = lab["setup"]
    assert setup["nodes"] == {"bt": 8, "lt": 3, "honest": 2, "broken": 2}
    assert setup["dead"]["bt"] + setup["dead"]["lt"] + setup["dead"]["pkdns"] >= 3
    assert setup["nat"]["bt"] >= 1
    # the Sybils and the broken nodes made it into the swarm's tables: they get queries
    assert lab["sybil"]["cluster_queries"]["clusters"][0]["all"] > 0
    assert lab["sybil"]["cluster_queries"]["broken"] > 0


def test_cold_lookups_of_each_implementation_ran(lab: dict[str, Any]) -> None:
    cold = lab["cold"]
    assert cold["loss"] == 30
    for impl in ("pkdns", "libtorrent"):
        assert cold[impl]["lookups"] == 2


def test_warm_daemon_never_says_nxdomain_for_a_key_that_exists(lab: dict[str, Any]) -> None:
    warm = lab["warm"]
    assert warm["queries"] == 4
    assert warm["nxdomain"] == 0 and warm["wrong"] == 0, warm
    assert warm["answered"] + warm["servfail"] + warm["timeout"] == 4
    assert warm["answered"] >= 1, warm


def test_blocked_dht_answers_from_the_relay_and_says_unreachable(lab: dict[str, Any]) -> None:
    relay = lab["relay"]
    assert relay["first_after_up_s"] is not None and relay["first_after_up_s"] <= 1.0, relay
    assert relay["unreachable_shown_s"] is not None and relay["metrics_unreachable"], relay
