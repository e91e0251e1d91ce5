"""Window 8 of issue 7: ending an interaction never destroys the only copy.

Replied and hung-up mail goes to the box's archive folder (default `Postroom-Archive`,
configurable, e.g. the Trash), and so does the agent's reply in the outbound box; mail a
rule discarded goes to the trash. Several due at once move as one UID set.
"""

from __future__ import annotations

import pytest

from postroom.core.lifecycle import State
from postroom.mail.imap import ImapSession
from postroom.store.commands import hang_up
from postroom.store.models import Interaction, WrapUpCode
from tests.e2e.boxes import customer_replies, mail, reply_as, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

ARCHIVE = "Postroom-Archive"


def subjects(center, who: str, folder: str = "INBOX") -> list[str]:
    return sorted(str(m["Subject"]) for m in center.messages(who, folder))


def test_replied_mail_and_the_reply_are_archived_not_expunged(center) -> None:
    center.ready("alice")
    write_in(center, mail(center, subject="Broken lid"))
    run(center)
    reply_as(center, "alice", "A new lid is on its way.")
    run(center, outbound=1)
    assert len(customer_replies(center)) == 1
    assert Interaction.objects.get().state is State.CLOSED

    assert center.messages("support") == [] and center.messages("outbound") == []
    assert subjects(center, "support", ARCHIVE) == ["Broken lid"]
    (reply,) = center.messages("outbound", ARCHIVE)
    assert "A new lid is on its way." in reply.get_body(("plain",)).get_content()


def test_hung_up_mail_is_archived(center) -> None:
    WrapUpCode.objects.get_or_create(code="no_action_needed", defaults={"label": "No action needed"})
    center.ready("alice")
    write_in(center, mail(center, subject="Never mind"))
    run(center)
    ix = Interaction.objects.get()
    hang_up(ix, by_user=ix.agent.user, code="no_action_needed", now=center.clock())
    run(center)
    assert Interaction.objects.get().state is State.CLOSED
    assert center.messages("support") == []
    assert subjects(center, "support", ARCHIVE) == ["Never mind"]


def test_the_archive_folder_is_configurable(make_center) -> None:
    center = make_center(
        """
[[incoming]]
address = "{sales}"
password = "{sales_pw}"
skills = ["support"]
archive_folder = "Trash"
"""
    )
    center.ready("alice")
    write_in(center, mail(center, subject="Quote please", to="sales"), "sales")
    run(center)
    reply_as(center, "alice", "Here is your quote.")
    run(center, outbound=1)
    assert center.messages("sales") == []
    assert subjects(center, "sales", "Trash") == ["Quote please"]


def test_mail_due_together_moves_as_one_uid_set(make_center, monkeypatch) -> None:
    center = make_center(
        """
[[rules]]
name = "Spam"
conditions = [{{field = "subject", op = "contains", value = "PRIZE"}}]
actions = [{{action = "delete", value = "spam"}}]
"""
    )
    moves: list[tuple[str, int]] = []
    real_move = ImapSession.move

    def counting_move(self, uids, folder):
        uids = list(uids)
        moves.append((folder, len(uids)))
        return real_move(self, uids, folder)

    monkeypatch.setattr(ImapSession, "move", counting_move)
    for n in range(3):
        write_in(center, mail(center, subject=f"WIN A PRIZE {n}"), count=n + 1)
    run(center)
    assert set(Interaction.objects.values_list("status", flat=True)) == {State.CLOSED}
    assert center.messages("support") == []
    assert len(center.messages("support", "Trash")) == 3
    assert moves == [("Trash", 3)]
