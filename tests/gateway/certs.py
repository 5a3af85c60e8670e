"""Certificates for gateway tests, made with the real ``openssl`` command line."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(tmp: Path, name: str = "origin", cn: str = "pkdns-origin",
                days: int = 2) -> tuple[Path, Path]:
    """A self-signed P-256 certificate and its key (PEM files ``NAME.crt``, ``NAME.key``)."""
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", str(days), "-subj", f"/CN={cn}"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def openssl_spki_sha256(cert: Path) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo, computed by openssl alone."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
                         check=True, capture_output=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True, timeout=30).stdout
    return subprocess.run(["openssl", "dgst", "-sha256", "-r"], input=der, check=True,
                          capture_output=True, timeout=30).stdout.split()[0].decode()
