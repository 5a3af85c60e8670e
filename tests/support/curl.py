"""Drive the server with the real curl binary (asyncio subprocess, so the loop keeps serving)."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CurlResult:
    status: int
    headers: dict[str, str]
    body: bytes


async def curl(*args: str) -> CurlResult:
    """Run ``curl -s <args>`` and return status, last response's headers (lowercased), body."""
    with tempfile.TemporaryDirectory() as tmp:
        hdr, body = Path(tmp, "h"), Path(tmp, "b")
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--max-time", "10", "-D", str(hdr), "-o", str(body),
            "-w", "%{http_code}", *args, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, f"curl failed ({proc.returncode})"
        headers: dict[str, str] = {}
        for line in hdr.read_text("latin-1").splitlines():
            if line.startswith("HTTP/"):
                headers = {}
            elif ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return CurlResult(int(out.decode()), headers, body.read_bytes() if body.exists() else b"")
