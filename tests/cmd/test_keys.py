"""`pkdns keygen|pubkey|packet` run as the installed console script (subprocess)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from pkdns.pkarr.keys import Keypair, PublicKey
from pkdns.pkarr.signed_packet import SignedPacket
from tests.conftest import load_vector

PKDNS = str(Path(sys.executable).with_name("pkdns"))
KEYS = load_vector("keys_z32")
DERIVED = load_vector("signed_packet_derived_compressed")
ZERO_HEX = "00" * 32

DERIVED_ZONE = """\
@                   30  IN A     1.1.1.1
foo                 30  IN TXT   "bar"
www                 300 IN CNAME example.com.
_derp_region.iroh   30  IN AAAA  2001:db8::1
"""


def pkdns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PKDNS, *args], capture_output=True, text=True, timeout=30)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pkdns: error: "), lines[0]
    for part in parts:
        assert part in lines[0]
    assert proc.stdout == ""


@pytest.fixture
def zero_seed(tmp_path: Path) -> Path:
    path = tmp_path / "seed"
    path.write_text(ZERO_HEX + "\n")
    path.chmod(0o600)   # as keygen makes it (a seed every user may read gets a warning)
    return path


def _zone(tmp_path: Path, text: str, name: str = "zone.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- keygen / pubkey ----------------------------------------------------------------------


def test_keygen_out_writes_0600_seed_and_prints_key(tmp_path: Path) -> None:
    seed = tmp_path / "k"
    proc = pkdns("keygen", "--out", str(seed))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    text = seed.read_text()
    assert len(text) == 65 and text.endswith("\n") and text == text.lower()
    z32 = proc.stdout.strip()
    assert Keypair.from_seed(bytes.fromhex(text)).public_key.z32 == z32
    assert pkdns("pubkey", str(seed)).stdout == z32 + "\n"


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    seed = tmp_path / "k"
    seed.write_text("precious")
    assert_one_line_error(pkdns("keygen", "--out", str(seed)), 2, str(seed), "overwrite")
    assert seed.read_text() == "precious"
    assert pkdns("keygen", "--out", str(seed), "--force").returncode == 0
    assert len(seed.read_text()) == 65


def test_keygen_without_out_prints_seed_and_key() -> None:
    proc = pkdns("keygen")
    assert proc.returncode == 0
    seed = proc.stdout.strip()
    assert len(seed) == 64 and proc.stdout == seed + "\n"
    assert proc.stderr.strip() == Keypair.from_seed(bytes.fromhex(seed)).public_key.z32


def test_keygen_bad_out_path(tmp_path: Path) -> None:
    bad = tmp_path / "missing-dir" / "k"
    assert_one_line_error(pkdns("keygen", "--out", str(bad)), 2, str(bad), "No such file")


@pytest.mark.parametrize("case", KEYS["seed_to_public_key"], ids=lambda c: c["public_key_z32"])
def test_pubkey_vectors(tmp_path: Path, case: dict[str, str]) -> None:
    for i, text in enumerate(filter(None, [case["seed_hex"], case.get("seed_zbase32")])):
        seed = tmp_path / f"s{i}"
        seed.write_text(text + "\n")
        proc = pkdns("pubkey", str(seed))
        assert (proc.returncode, proc.stdout) == (0, case["public_key_z32"] + "\n"), proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"zz" * 32, "not valid hex"),
        (b"abc\n", "got 3 characters"),
        (b"00" * 31, "got 62 characters"),
        (b"\x00\xff" * 32, "not text"),
    ],
)
def test_pubkey_bad_seed(tmp_path: Path, content: bytes, message: str) -> None:
    seed = tmp_path / "seed"
    seed.write_bytes(content)
    assert_one_line_error(pkdns("pubkey", str(seed)), 2, str(seed), message)


def test_pubkey_missing_and_unreadable(tmp_path: Path) -> None:
    assert_one_line_error(pkdns("pubkey", str(tmp_path / "nope")), 2, "No such file")
    assert_one_line_error(pkdns("pubkey", str(tmp_path)), 2, str(tmp_path), "Is a directory")


# --- packet -------------------------------------------------------------------------------


def test_packet_reproduces_the_derived_vector(tmp_path: Path, zero_seed: Path) -> None:
    out = tmp_path / "payload.bin"
    zone = _zone(tmp_path, DERIVED_ZONE)
    ts = str(DERIVED["timestamp_us"])
    proc = pkdns("packet", str(zero_seed), str(zone), "--out", str(out), "--timestamp", ts)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().hex() == DERIVED["relay_payload_hex"]
    assert f"; public key {DERIVED['public_key_z32']}" in proc.stdout
    assert f"; timestamp {ts} (2023-10-11T09:33:47.303000+00:00)" in proc.stdout
    assert "; size 175 bytes of DNS packet (limit 1000), relay payload 247 bytes" in proc.stdout
    assert proc.stdout.endswith(
        "@ 30 IN A 1.1.1.1\nfoo 30 IN TXT \"bar\"\nwww 300 IN CNAME example.com.\n"
        "_derp_region.iroh 30 IN AAAA 2001:db8::1\n"
    )


def test_packet_default_timestamp_is_now(tmp_path: Path, zero_seed: Path) -> None:
    out = tmp_path / "p"
    before = time.time_ns() // 1000
    proc = pkdns("packet", str(zero_seed), str(_zone(tmp_path, "@ A 1.2.3.4\n")), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    key = PublicKey.parse(DERIVED["public_key_z32"])
    sp = SignedPacket.from_relay_payload(key, out.read_bytes())
    assert before <= sp.timestamp <= time.time_ns() // 1000
    assert f"; timestamp {sp.timestamp} " in proc.stdout


def test_packet_without_out_only_prints(tmp_path: Path, zero_seed: Path) -> None:
    proc = pkdns("packet", str(zero_seed), str(_zone(tmp_path, "@ A 1.2.3.4\n")))
    assert proc.returncode == 0 and "@ 300 IN A 1.2.3.4" in proc.stdout
    assert "written" not in proc.stdout


@pytest.mark.parametrize(
    ("zone", "parts"),
    [
        ("ok A 1.1.1.1\nbad A 300.1.1.1\n", ["zone.txt:2:", "bad A 300.1.1.1"]),
        ("ok A 1.1.1.1\n\nx BOGUS 1\n", ["zone.txt:3:", "unknown rdatatype 'BOGUS'"]),
        ("@ SOA a. b. 1 2 3 4 5\n", ["zone.txt:1:", "SOA records cannot be published"]),
        ("x.example.com. A 1.1.1.1\n", ["zone.txt:1:", "outside the key's zone"]),
        ("".join(f"t{i} TXT {'x' * 250}\n" for i in range(4)),
         ["zone.txt:", "DNS packet is 1", "bytes, over the 1000-byte limit"]),
    ],
)
def test_packet_bad_zone(tmp_path: Path, zero_seed: Path, zone: str, parts: list[str]) -> None:
    out = tmp_path / "p"
    proc = pkdns("packet", str(zero_seed), str(_zone(tmp_path, zone)), "--out", str(out))
    assert_one_line_error(proc, 2, *parts)
    assert not out.exists()


def test_packet_bad_files(tmp_path: Path, zero_seed: Path) -> None:
    zone = _zone(tmp_path, "@ A 1.1.1.1\n")
    assert_one_line_error(pkdns("packet", str(tmp_path / "nope"), str(zone)), 2, "nope")
    assert_one_line_error(pkdns("packet", str(zero_seed), str(tmp_path / "nz")), 2,
                          "nz: cannot read zone file: No such file")
    assert_one_line_error(pkdns("packet", str(zero_seed), str(tmp_path)), 2, "Is a directory")
    latin = tmp_path / "latin.zone"
    latin.write_bytes(b"@ TXT caf\xe9\n")
    assert_one_line_error(pkdns("packet", str(zero_seed), str(latin)), 2, "not UTF-8")
    bad_out = tmp_path / "no-dir" / "p"
    assert_one_line_error(pkdns("packet", str(zero_seed), str(zone), "--out", str(bad_out)), 2,
                          str(bad_out), "cannot write")


def test_packet_bad_timestamp(tmp_path: Path, zero_seed: Path) -> None:
    zone = str(_zone(tmp_path, "@ A 1.1.1.1\n"))
    assert_one_line_error(pkdns("packet", str(zero_seed), zone, "--timestamp", "-1"), 2,
                          "--timestamp")
    proc = pkdns("packet", str(zero_seed), zone, "--timestamp", "soon")
    assert proc.returncode == 2 and "invalid int value" in proc.stderr


def test_verbose_error_shows_traceback(tmp_path: Path) -> None:
    proc = pkdns("pubkey", str(tmp_path / "nope"), "-v")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


# --- {external_ipv4} / {external_ipv6} with a local IP-echo server -------------------------


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=("192.0.2.44" if request.path == "/v4" else "2001:db8::44"))

    app = web.Application()
    app.router.add_get("/v4", handle)
    app.router.add_get("/v6", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _apkdns(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PKDNS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_packet_fills_external_ipv4(tmp_path: Path, zero_seed: Path, echo_url: str) -> None:
    zone = _zone(tmp_path, "@ A {external_ipv4}\nv4 A {external_ipv4}\n")
    code, out, err = await _apkdns("packet", str(zero_seed), str(zone),
                                   "--ip-echo", echo_url + "/v4")
    assert code == 0, err
    assert "@ 300 IN A 192.0.2.44\nv4 300 IN A 192.0.2.44\n" in out


async def test_packet_ipv6_variable_needs_an_ipv6_answer(
    tmp_path: Path, zero_seed: Path, echo_url: str
) -> None:
    # The echo server only listens on IPv4, and the IPv6 lookup must go over IPv6.
    zone = _zone(tmp_path, "@ AAAA {external_ipv6}\n")
    code, out, err = await _apkdns("packet", str(zero_seed), str(zone),
                                   "--ip-echo", echo_url + "/v6")
    assert code == 1 and out == ""
    assert err.startswith("pkdns: error: cannot discover the external IPv6 address: ")
    assert echo_url in err and len(err.splitlines()) == 1


def test_packet_ip_echo_unreachable_is_exit_1(tmp_path: Path, zero_seed: Path) -> None:
    zone = _zone(tmp_path, "@ A {external_ipv4}\n")
    proc = pkdns("packet", str(zero_seed), str(zone), "--ip-echo", "http://127.0.0.1:9/",
                 "--ip-echo", "http://127.0.0.1:9/other")
    assert_one_line_error(proc, 1, "cannot discover the external IPv4 address",
                          "http://127.0.0.1:9/other")


def test_publish_fills_in_variables_like_packet_and_the_daemon(tmp_path: Path,
                                                               zero_seed: Path) -> None:
    """``pkdns publish`` used to sign {external_ipv4} literally (a zone the daemon accepts);
    it now asks the IP-echo services first, so an unreachable one is the same exit 1."""
    zone = _zone(tmp_path, "@ A {external_ipv4}\n")
    proc = pkdns("publish", str(zero_seed), str(zone), "--ip-echo", "http://127.0.0.1:9/",
                 "--bootstrap", "127.0.0.1:9")
    assert_one_line_error(proc, 1, "cannot discover the external IPv4 address",
                          "http://127.0.0.1:9/")


def test_zone_without_variables_never_asks(tmp_path: Path, zero_seed: Path) -> None:
    zone = _zone(tmp_path, "@ A 1.1.1.1\n")
    proc = pkdns("packet", str(zero_seed), str(zone), "--ip-echo", "http://127.0.0.1:9/")
    assert proc.returncode == 0, proc.stderr


def test_environment_has_the_installed_script() -> None:
    assert os.access(PKDNS, os.X_OK), PKDNS


def test_cli_tools_warn_about_a_seed_every_user_may_read(tmp_path: Path) -> None:
    """As ssh does: the command still works, with a warning naming the file and the fix."""
    seed = tmp_path / "seed"
    seed.write_text("11" * 32 + "\n")
    seed.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "pkdns", "pubkey", str(seed)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and len(proc.stdout.strip()) == 52
    assert proc.stderr == (f"pkdns: warning: {seed}: seed file is readable by every user (mode "
                           f"0644); it is the private key: chmod 600 {seed}\n")
    seed.chmod(0o600)
    proc = subprocess.run([sys.executable, "-m", "pkdns", "pubkey", str(seed)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and proc.stderr == ""
