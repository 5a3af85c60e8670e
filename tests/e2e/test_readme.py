"""The README's "Publish your own key" block, run as written in a namespace with no network.

The README says which of those commands need the network; this runs them where there is none
(a namespace with only ``lo``): ``keygen``, the zone file and ``packet`` exactly as printed
must work there, and ``publish`` / ``resolve`` must work once ``--bootstrap`` points them at a
``pkdns testnet`` in the same namespace (the README says so). The README's zone once used
``{external_ipv4}``, so its "no network" ``packet`` line failed offline.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.netns import netns, unavailable
from tests.support.require import require

pytestmark = [pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def publish_block() -> list[str]:
    """The lines of the ```sh block after "**Publish your own key.**" in README.md."""
    text = (ROOT / "README.md").read_text()
    after = text.split("**Publish your own key.**", 1)[1]
    m = re.search(r"```sh\n(.*?)```", after, re.S)
    assert m, "README.md: no ```sh block after 'Publish your own key.'"
    return m.group(1).splitlines()


def test_the_readme_publish_example_works_offline(tmp_path: Path) -> None:
    require(unavailable())
    lines = publish_block()
    upto = next(i for i, ln in enumerate(lines) if ln.startswith("pkdns packet "))
    offline = "\n".join(lines[:upto + 1]) + "\n"
    rest = [ln.split("#")[0].strip() for ln in lines[upto + 1:]]
    assert [ln.split()[:2] for ln in rest] == [["pkdns", "publish"], ["pkdns", "resolve"]]
    tmp_path.chmod(0o755)
    env = f"PATH={BIN}:/usr/bin:/bin"
    with netns("nameserver 127.0.0.1\n") as ns:
        done = ns.run(["env", env, "sh", "-euc", f"cd {tmp_path}\n{offline}"], timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        key = (tmp_path / "seed.txt").exists() and ns.run(
            ["env", env, "pkdns", "pubkey", str(tmp_path / "seed.txt")]).stdout.strip()
        assert key and f"; public key {key}" in done.stdout, done.stdout
        testnet = subprocess.Popen([*ns.prefix(), str(BIN / "pkdns"), "testnet", "--nodes", "8"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert testnet.stdout is not None
            boot = testnet.stdout.readline().strip()
            for line in rest:
                argv = line.replace("<public-key>", key).split()
                run = ns.run(["env", "-C", str(tmp_path), env, *argv, "--bootstrap", boot],
                             timeout=60)
                assert run.returncode == 0, (line, run.stdout, run.stderr)
            assert "192.0.2.10" in run.stdout and '"hello"' in run.stdout, run.stdout
        finally:
            testnet.terminate()
            testnet.wait(10)
            if testnet.stdout is not None:
                testnet.stdout.close()
