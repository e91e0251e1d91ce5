"""Window 6 of issue 7: quarantine must never strand mail.

The quarantine row is committed before the IMAP MOVE; a MOVE that fails is retried until
it is done (the message is never left below the cursor, unlooked-at). A transient error
(the database away for a moment) is retried, never quarantined as "internal error". A
person can release a quarantined message (CLI, admin, API): it is taken again as mail.
"""

from __future__ import annotations

import contextlib

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError

from postroom import cli
from postroom.engine import reception
from postroom.mail.imap import ImapSession, MailboxUnavailable
from postroom.store.models import Interaction, Quarantined
from tests.e2e.boxes import auto_responses, mail, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

QUARANTINE = "Postroom-Quarantine"


def subjects(center, who: str, folder: str = "INBOX") -> list[str]:
    return sorted(str(m["Subject"]) for m in center.messages(who, folder))


def run_through_outages(center, rounds: int = 3) -> None:
    """Engine passes as the watcher makes them: a pass that hit trouble is followed by
    another once the backoff has passed (the engine's clock is moved on, not slept)."""
    for _ in range(rounds):
        with contextlib.suppress(MailboxUnavailable, OperationalError):
            run(center)
        center.clock.advance(hours=1)


def test_a_failed_quarantine_move_is_retried_until_done(center, monkeypatch) -> None:
    real_move = ImapSession.move
    drops = {"left": 2}

    def move_on_a_dying_connection(self, uids, folder):
        if folder == QUARANTINE and drops["left"]:
            drops["left"] -= 1
            self._c().shutdown()  # the connection drops under the MOVE, for real
        return real_move(self, uids, folder)

    monkeypatch.setattr(ImapSession, "move", move_on_a_dying_connection)
    center.append("support", b"\x00\x01 not a mail at all \xff\r\n")
    write_in(center, mail(center, subject="A real question"), count=2)

    run_through_outages(center)

    assert len(center.messages("support", QUARANTINE)) == 1
    assert subjects(center, "support") == ["A real question"]
    (row,) = Quarantined.objects.all()
    assert row.moved_at is not None and row.move_attempts >= 2
    assert Interaction.objects.get().subject == "A real question"


def test_a_transient_database_error_is_retried_not_quarantined(center, monkeypatch) -> None:
    # The batch's reads ahead (decision 0043) ask for every sender at once.
    real_lookup = reception.contacts.lookup_many
    failures = {"left": 1}

    def lookup_while_the_database_hiccups(addresses):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_lookup(addresses)

    monkeypatch.setattr(reception.contacts, "lookup_many", lookup_while_the_database_hiccups)
    write_in(center, mail(center, subject="Please call me back"))

    run_through_outages(center)

    assert not Quarantined.objects.exists()
    assert center.messages("support", QUARANTINE) == []
    assert Interaction.objects.get().subject == "Please call me back"
    assert failures["left"] == 0  # the hiccup happened
    assert len(center.wait_for("carol", 1)) == 1 and len(auto_responses(center)) == 1


def test_a_released_message_is_taken_again_as_mail(center, capsys) -> None:
    # A customer whose ticket system stamps X-Loop: classified as a loop and held.
    write_in(center, mail(center, subject="Order 17 question", X_Loop="tickets@customer.test"))
    run(center)
    (row,) = Quarantined.objects.all()
    assert "loop" in row.reason
    assert subjects(center, "support", QUARANTINE) == ["Order 17 question"]
    from postroom.store.models import Alert

    assert Alert.objects.filter(kind="quarantined", key=center.address("support"), cleared_at=None).exists()

    assert cli.main(["quarantine", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"{row.pk}" in listed and "loop" in listed and center.address("support") in listed
    assert cli.main(["quarantine", "release", str(row.pk)]) == 0
    run(center)

    assert center.messages("support", QUARANTINE) == []
    ix = Interaction.objects.get()
    assert ix.subject == "Order 17 question" and ix.customer == center.address("carol")
    row.refresh_from_db()
    assert row.released_at is not None and "moved back" in row.release_result
    assert cli.main(["quarantine", "release", str(row.pk)]) == 1  # already released


def test_release_from_the_admin(center, client) -> None:
    write_in(center, mail(center, subject="Held by mistake", X_Loop="tickets@customer.test"))
    run(center)
    row = Quarantined.objects.get()
    root = get_user_model().objects.create_superuser("root", "root@example.test", "pw-for-tests-only")
    client.force_login(root)
    page = client.post(
        "/admin/store/quarantined/", {"action": "release", "_selected_action": [row.pk]}, follow=True
    )
    assert page.status_code == 200
    row.refresh_from_db()
    assert row.release_requested_at is not None and row.release_requested_by == "root"
    run(center)
    assert Interaction.objects.get().subject == "Held by mistake"
