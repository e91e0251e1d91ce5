"""The identity of a customer mail across our boxes: Message-ID plus a digest.

One mail sent To support@ and Cc sales@ arrives twice, byte for byte the same headers: it
must be one interaction with one auto-response (B-3). But a Message-ID alone is not an
identity: some mailers reuse one for different mails (a constant ID, or one per thread),
and keying on it alone would silently drop the second, different mail as a duplicate. So
the key is the Message-ID together with what tells two mails apart without reading the
body: the sender, the Date and the Subject (docs/decisions/0011).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime


def dedupe_key(message_id: str | None, sender: str | None, date: datetime | None, subject: str | None) -> str:
    """A 64-character hex key, or "" for a mail without a Message-ID (never deduplicated)."""
    mid = (message_id or "").strip()
    if not mid:
        return ""
    when = date.astimezone(UTC).isoformat() if date is not None and date.tzinfo else (date.isoformat() if date else "")
    parts = (mid, (sender or "").strip().lower(), when, " ".join((subject or "").split()))
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
