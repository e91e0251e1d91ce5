"""Rows put straight into the outbox by the sender tests: what a queued notice looks like."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

from django.utils import timezone

from postroom.store.models import Outgoing


def notice(center, n: int) -> Outgoing:
    """Notice `n` from support@ to Sam, due now (each test's database is its own, so the
    key only has to differ within a test)."""
    msg = EmailMessage()
    msg["From"] = center.address("support")
    msg["To"] = center.address("sam")
    msg["Subject"] = f"notice {n}"
    msg["Message-ID"] = make_msgid(f"n{n}", domain="example.test")
    msg.set_content(f"notice {n}\n")
    return Outgoing.objects.create(
        key=f"notice:test:{n}", kind=Outgoing.NOTICE, envelope_from=center.address("support"),
        recipients=[center.address("sam")], message_id=msg["Message-ID"], raw=msg.as_bytes(),
        next_attempt_at=timezone.now(),
    )
