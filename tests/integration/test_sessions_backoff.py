"""engine.connections.Sessions: a failing box backs off alone, and comes back."""

from __future__ import annotations

import socket
import time

import pytest

from postroom.core.keys import KeyRing
from postroom.engine.connections import BoxBackingOff, Sessions
from postroom.engine.site import Site
from postroom.mail.imap import MailboxUnavailable
from postroom.mail.smtp import SmtpAccount
from postroom.store.models import Mailbox

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sessions() -> Sessions:
    site = Site(
        node_id="n", keys=KeyRing.from_secrets([b"x" * 32]), imap_host="127.0.0.1", imap_port=closed_port(), imap_tls="none",
        smtp=SmtpAccount(host="127.0.0.1", port=1, tls="none", login="", password=""),
    )
    return Sessions(site)


def test_a_failed_box_is_refused_without_a_connection_until_its_backoff_passes(sessions, monkeypatch) -> None:
    box = Mailbox.objects.create(address="support@example.test", login="support@example.test")
    other = Mailbox.objects.create(address="sales@example.test", login="sales@example.test")
    with sessions.isolated(box):
        sessions.get(box)  # connection refused: noted, not raised
    with pytest.raises(BoxBackingOff):
        sessions.get(box)
    # Other boxes are not affected by this one's backoff (they fail on their own here).
    with pytest.raises(MailboxUnavailable) as failed:
        sessions.get(other)
    assert not isinstance(failed.value, BoxBackingOff)

    # Being refused while backing off is not a new failure: it must not push the next
    # try back (that once kept a box backing off for ever after an outage).
    retry_at = sessions._trouble[box.pk].retry_at
    for _ in range(5):
        with sessions.isolated(box):
            sessions.get(box)
    assert sessions._trouble[box.pk].retry_at == retry_at and sessions._trouble[box.pk].failures == 1

    monkeypatch.setattr(time, "monotonic", lambda: retry_at + 0.1)
    with pytest.raises(MailboxUnavailable) as again:
        sessions.get(box)  # tried again for real
    assert not isinstance(again.value, BoxBackingOff)
