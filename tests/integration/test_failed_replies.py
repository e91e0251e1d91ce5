"""A reply the mail server refused for good: the commands and their API (/api/failed-replies).
Who may act, what each action does to the interaction and its outbox row, conflicts."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.core.outbox import OutboxState
from postroom.store import commands
from postroom.store.commands import CommandError
from postroom.store.models import Interaction, JournalEvent, Outgoing, WrapUpCode
from tests.integration.test_api import bearer, make_agent, make_interaction, make_mailbox
from tests.integration.test_commands import reply_raw

pytestmark = pytest.mark.django_db

JSON = "application/json"


@pytest.fixture
def failed():
    """Alice's reply to a customer, refused for good; Sue supervises."""
    WrapUpCode.objects.create(code="phoned", label="Phoned the customer")
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    sue = make_agent("sue@example.test", is_supervisor=True)
    ix = make_interaction(mailbox, status=State.REPLY_FAILED, agent=alice)
    Outgoing.objects.create(
        key=f"reply:{ix.guid}",
        kind=Outgoing.REPLY,
        interaction=ix,
        envelope_from=mailbox.address,
        recipients=[ix.customer],
        message_id="<r1@postroom.example.test>",
        raw=reply_raw("Your parcel left today.\n"),
        state=OutboxState.DEAD,
        attempts=12,
        next_attempt_at=timezone.now(),
        last_error="550 5.1.1 no such user",
    )
    return ix, alice, sue


def reply_of(ix: Interaction) -> Outgoing:
    return Outgoing.objects.get(interaction=ix, kind=Outgoing.REPLY)


def test_only_supervisors_and_staff_act_on_a_failed_reply(failed) -> None:
    ix, alice, _ = failed
    for act in (
        lambda: commands.resend_reply(ix, by_user=alice.user, now=timezone.now()),
        lambda: commands.edit_reply(ix, by_user=alice.user, text="new", now=timezone.now()),
        lambda: commands.end_failed_reply(ix, by_user=alice.user, code="phoned", now=timezone.now()),
    ):
        with pytest.raises(CommandError) as refused:
            act()
        assert refused.value.status == 403
    assert Interaction.objects.get(pk=ix.pk).state is State.REPLY_FAILED
    assert reply_of(ix).state == OutboxState.DEAD


def test_resend_puts_the_same_row_back_in_the_outbox(failed) -> None:
    ix, _, sue = failed
    commands.resend_reply(ix, by_user=sue.user, now=timezone.now())
    ix.refresh_from_db()
    row = reply_of(ix)
    assert ix.state is State.REPLYING
    assert row.state == OutboxState.PENDING and row.attempts == 0
    assert row.message_id == "<r1@postroom.example.test>"  # the customer never got it
    event = JournalEvent.objects.filter(interaction=ix, kind="reply_retried").get()
    assert event.detail["by"] == "sue@example.test" and event.detail["edited"] is False
    # A second resend finds nothing to resend.
    with pytest.raises(CommandError) as again:
        commands.resend_reply(ix, by_user=sue.user, now=timezone.now())
    assert again.value.status == 409


def test_edit_replaces_the_text_and_keeps_the_threading(failed) -> None:
    ix, _, sue = failed
    before = message_from_bytes(bytes(reply_of(ix).raw), policy=policy.default)
    with pytest.raises(CommandError):
        commands.edit_reply(ix, by_user=sue.user, text="  ", now=timezone.now())
    commands.edit_reply(ix, by_user=sue.user, text="We are sorry: a corrected answer.", now=timezone.now())
    after = message_from_bytes(bytes(reply_of(ix).raw), policy=policy.default)
    assert after.get_body(("plain",)).get_content().strip() == "We are sorry: a corrected answer."
    assert after["Subject"] == before["Subject"] and after["To"] == before["To"]
    assert Interaction.objects.get(pk=ix.pk).state is State.REPLYING


def test_end_needs_a_known_code_and_a_failed_reply(failed) -> None:
    ix, _, sue = failed
    with pytest.raises(CommandError):
        commands.end_failed_reply(ix, by_user=sue.user, code="nope", now=timezone.now())
    commands.end_failed_reply(ix, by_user=sue.user, code="phoned", now=timezone.now())
    ix.refresh_from_db()
    assert ix.state is State.ENDED and ix.outcome == "wrapped_up" and ix.wrapup_code == "phoned"
    with pytest.raises(CommandError) as again:
        commands.end_failed_reply(ix, by_user=sue.user, code="phoned", now=timezone.now())
    assert again.value.status == 409


def test_the_api_lists_and_acts(client, failed) -> None:
    ix, alice, sue = failed
    assert client.get("/api/failed-replies").status_code == 401
    assert client.get("/api/failed-replies", **bearer(alice)).status_code == 403
    listed = client.get("/api/failed-replies", **bearer(sue))
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert item["guid"] == str(ix.guid) and item["agent"] == "alice@example.test"
    assert item["reason"] == "550 5.1.1 no such user" and "parcel left today" in item["text"]

    refused = client.post(f"/api/failed-replies/{ix.guid}/resend", **bearer(alice))
    assert refused.status_code == 403 and refused.json()["detail"]
    edited = client.post(
        f"/api/failed-replies/{ix.guid}/edit", {"text": "Corrected."}, content_type=JSON, **bearer(sue)
    )
    assert edited.status_code == 200 and edited.json()["items"] == []
    assert Interaction.objects.get(pk=ix.pk).state is State.REPLYING
    conflict = client.post(f"/api/failed-replies/{ix.guid}/end", {"code": "phoned"}, content_type=JSON, **bearer(sue))
    assert conflict.status_code == 409
