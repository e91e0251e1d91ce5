"""Rows put straight into the outbox by the sender and send-order tests: a queued notice,
a row of a kind due some seconds ago."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from django.utils import timezone

from postroom.core.outbox import OutboxState
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


def due_row(kind: str, n: int, age_s: float, state: OutboxState = OutboxState.PENDING) -> Outgoing:
    """Row `n` of `kind`, in `state`, due `age_s` seconds ago."""
    return Outgoing.objects.create(
        key=f"{kind}:{n}", kind=kind, envelope_from="support@example.test", recipients=["c@customer.test"],
        message_id=f"<{kind}-{n}@postroom.example.test>", raw=b"Subject: x\r\n\r\nx\r\n", state=state,
        next_attempt_at=timezone.now() - timedelta(seconds=age_s),
    )
