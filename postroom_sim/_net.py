"""Small network helpers shared by the simulated customers and agents."""

from __future__ import annotations

import ssl
from email.utils import parseaddr

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

# What the simulated clients say in EHLO. Asking the OS (smtplib's default,
# socket.getfqdn()) can stall for seconds on machines without working DNS.
EHLO_NAME = "localhost"


def tls_context(host: str, cafile: str | None) -> ssl.SSLContext:
    """A client TLS context.

    With ``cafile`` the server certificate is verified against it. Without one,
    a loopback server (the dev stack's self-signed certificate) is accepted
    unverified; any other host is verified against the system trust store.
    """
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if host in LOCAL_HOSTS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context()


def bare_address(addr: str) -> str:
    """``"Name <a@b>"`` -> ``"a@b"``; a bare address is returned unchanged."""
    return parseaddr(addr)[1] or addr.strip()


def has_8bit(data: bytes) -> bool:
    return any(b > 127 for b in data)
