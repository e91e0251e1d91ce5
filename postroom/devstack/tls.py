"""A fresh self-signed server certificate for one devstack instance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def make_self_signed(cert: Path, key: Path, hostname: str, days: int = 30) -> None:
    """Write ``cert`` (also the CA file clients verify against) and its private ``key``.

    EC P-256 because generating it is instant, unlike RSA. The extensions keep strict
    verifiers happy (Python 3.13's VERIFY_X509_STRICT wants keyUsage on a CA certificate).
    """
    cert.parent.mkdir(parents=True, exist_ok=True)
    tmp_cert, tmp_key = cert.with_suffix(".new"), key.with_suffix(".new")
    cmd = [
        "openssl", "req", "-x509", "-nodes", "-days", str(days),
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(tmp_key), "-out", str(tmp_cert),
        "-subj", f"/CN={hostname}",
        "-addext", f"subjectAltName=DNS:{hostname},DNS:localhost,IP:127.0.0.1",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext", "extendedKeyUsage=serverAuth",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl req failed: {done.stderr.strip()}")
    # Postfix and Dovecot read the key as root before dropping privileges.
    os.chmod(tmp_key, 0o600)
    os.chmod(tmp_cert, 0o644)
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
