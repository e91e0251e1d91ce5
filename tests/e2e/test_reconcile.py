"""Reconciliation (issue 7; field bug B-5): every message in a watched box is accounted
for by the ledger, or an alert names it.

Each watcher compares its box with the database when it starts and then every
[health] reconcile_interval: a live interaction, a quarantined message on its way out,
an outbound ledger row, or new mail. Anything else is unaccounted for: an alert names it
(UID, Message-ID, sender, subject) and clears once it is gone.
"""

from __future__ import annotations

import time

import pytest

from postroom.core.lifecycle import State
from postroom.store.models import Interaction, Mailbox
from tests.e2e.boxes import mail, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def test_mail_the_ledger_lost_track_of_is_named_in_an_alert(center) -> None:
    from postroom.engine.reconcile import reconcile
    from postroom.store.models import Alert

    kept = mail(center, subject="Still being handled")
    lost = mail(center, subject="Forgotten order")
    write_in(center, kept)
    write_in(center, lost, count=2)
    run(center)  # both queued: no agent is ready
    # The ledger loses one (a bug, a database restored from an older backup...).
    Interaction.objects.filter(subject="Forgotten order").update(status=State.CLOSED)

    center.engine.start()  # each watcher reconciles its box when it starts
    try:
        deadline = time.monotonic() + 30
        while not Alert.objects.filter(kind="unaccounted").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        center.engine.stop()
    (alert,) = Alert.objects.filter(kind="unaccounted", cleared_at=None)
    assert lost["Message-ID"] in alert.message and "Forgotten order" in alert.message
    assert center.address("carol") in alert.message
    assert alert.key.startswith(center.address("support") + ":")

    # Someone files it away by hand: the next reconciliation clears the alert.
    client = center.imap("support")
    try:
        client.create_folder("Filed")
        client.select_folder("INBOX")
        client.move(client.search(["HEADER", "Message-ID", lost["Message-ID"]]), "Filed")
    finally:
        client.logout()
    box = Mailbox.objects.get(address=center.address("support"))
    session = center.engine._sessions_for_worker().get(box)
    assert reconcile(box, session, center.clock()) == []
    assert not Alert.objects.filter(kind="unaccounted", cleared_at=None).exists()
