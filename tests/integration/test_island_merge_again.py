"""store.islandmerge run again after it was cut short, against the real database
(PostgreSQL in the second pass of `make test`; decision 0036).

A node killed in the middle of its merge (after some local records were written into
PostgreSQL, each in a transaction of its own) keeps its local store and merges it again at
its next start (engine/localstore.py `left_unmerged`, engine/runtime.py `start`). The kill
is stood in for by an error raised inside the merge of one record, whose transaction then
rolls back as a kill's would. The second run must merge the rest and nothing twice: one
record per email, one reopening, one journaled merge per local record, no second insert of
a record it inserted (not even of an email with no name in claims, found by its GUID).

Also: mail the killed island may have sent (its outbox row was `sending`) is recorded
unknown on the shared row, so that the journal box is asked before it is sent again.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from postroom.core.island import EmailKey
from postroom.core.lifecycle import State
from postroom.core.outbox import OutboxState
from postroom.engine.claimloss import end_lost
from postroom.store import islandmerge
from postroom.store.islandmerge import merge_back
from postroom.store.models import Interaction, JournalEvent, Mailbox, Outgoing
from tests.integration.test_island_merge import (
    BOX,
    SHA,
    WINNER,
    ar_id,
    local,
    shared_email,
    site,
    won_on_the_island,
)

pytestmark = pytest.mark.django_db

__all__ = ["local"]  # the fixture, shared with test_island_merge


class Killed(Exception):
    """Stands in for the SIGKILL that ends a merge part-way."""


def nameless_on_the_island(alias: str, now):  # type: ignore[no-untyped-def]
    """An email the island won that has no name in claims (no Message-ID): the merge can
    only insert it, and must find it by its GUID when run again."""
    box = Mailbox.objects.using(alias).get(address=BOX)
    return Interaction.objects.using(alias).create(
        node_id=WINNER, mailbox=box, uidvalidity=1, uid=99, customer="c99@customer.test",
        arrival_time=now - timedelta(minutes=5), message_id="", raw_sha256="",
        claim_node=WINNER, claim_time=now - timedelta(minutes=2),
    )


def merged_events(kind: str = "island_merged") -> int:
    return JournalEvent.objects.filter(kind=kind).count()


def test_a_merge_cut_short_merges_the_rest_and_nothing_twice_when_run_again(
    local: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = timezone.now()
    # In the local store's order: a nameless email, one the node on the database closed
    # because it lost the claim (reopened), one it still had open (taken over), one it
    # never saw (inserted).
    nameless = nameless_on_the_island(local, now)
    lost = shared_email(1, now)
    Outgoing.objects.create(key=f"auto_response:{lost.guid}", kind=Outgoing.AUTO_RESPONSE, interaction=lost,
                            envelope_from="", recipients=[lost.customer], message_id=ar_id(1),
                            raw=b"Subject: x\r\n\r\nx\r\n", state=OutboxState.RETRY_WAIT, next_attempt_at=now)
    assert end_lost(site(), EmailKey(BOX, lost.message_id, SHA), WINNER, now)
    won_on_the_island(local, 1, now)
    open_there = shared_email(2, now)
    won_on_the_island(local, 2, now)
    won_on_the_island(local, 3, now)

    real = islandmerge._carry_rows
    calls = []

    def killed_at_the_third(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        if len(calls) == 3:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(islandmerge, "_carry_rows", killed_at_the_third)
    with pytest.raises(Killed):
        merge_back(WINNER, local, now)
    # Two records merged, the third rolled back (its take-over undone), the fourth not reached.
    assert Interaction.objects.filter(guid=nameless.guid).exists()
    assert Interaction.objects.get(pk=lost.pk).state is State.QUEUED
    assert Interaction.objects.get(pk=open_there.pk).claim_node == ""
    assert not Interaction.objects.filter(message_id="<m3@customer.test>").exists()
    assert merged_events() == 2

    monkeypatch.setattr(islandmerge, "_carry_rows", real)
    report = merge_back(WINNER, local, now)

    assert report.again == 2, report.summary()
    assert Interaction.objects.count() == 4  # one record per email
    assert Interaction.objects.filter(guid=nameless.guid).count() == 1
    ix = Interaction.objects.get(pk=open_there.pk)
    assert (ix.node_id, ix.claim_node) == (WINNER, WINNER) and ix.claim_time is not None
    inserted = Interaction.objects.get(message_id="<m3@customer.test>")
    assert inserted.claim_node == WINNER
    # Reopened once, merged once per local record.
    assert merged_events("claim_returned") == 1 and merged_events() == 4
    assert Interaction.objects.get(pk=lost.pk).state is State.QUEUED
    # Each auto-response the island sent is recorded sent once, under its derived ID.
    for n in (1, 2, 3):
        (ar,) = Outgoing.objects.filter(message_id=ar_id(n))
        assert ar.state == OutboxState.SENT

    # Once more (a kill after the last record, before the store was prepared afresh):
    # nothing changes.
    versions = dict(Interaction.objects.values_list("pk", "version"))
    again = merge_back(WINNER, local, now)
    assert again.again == 4 and not again.done
    assert dict(Interaction.objects.values_list("pk", "version")) == versions
    assert merged_events() == 4 and Outgoing.objects.count() == 3


def test_mail_the_killed_island_may_have_sent_is_asked_of_the_journal_box_first(local: str) -> None:
    # Killed in the middle of the SMTP transaction of its auto-response: the local row
    # says `sending`. The shared row (cancelled by the losing node, due again once the
    # record is reopened) must not simply be sent: it may be in the customer's mailbox.
    now = timezone.now()
    shared = shared_email(6, now)
    Outgoing.objects.create(key=f"auto_response:{shared.guid}", kind=Outgoing.AUTO_RESPONSE, interaction=shared,
                            envelope_from="", recipients=[shared.customer], message_id=ar_id(6),
                            raw=b"Subject: x\r\n\r\nx\r\n", state=OutboxState.RETRY_WAIT, next_attempt_at=now)
    assert end_lost(site(), EmailKey(BOX, shared.message_id, SHA), WINNER, now)
    lx = won_on_the_island(local, 6, now, sent=False)
    Outgoing.objects.using(local).create(
        key=f"auto_response:{lx.guid}", kind=Outgoing.AUTO_RESPONSE, interaction=lx, envelope_from="",
        recipients=[lx.customer], message_id=ar_id(6), raw=b"ar", state=OutboxState.SENDING,
        next_attempt_at=now, claimed_by="node-p:1", lease_until=now + timedelta(minutes=1), attempts=1,
    )

    merge_back(WINNER, local, now)

    ix = Interaction.objects.get(pk=shared.pk)
    assert ix.state is State.QUEUED
    (ar,) = Outgoing.objects.filter(interaction=ix, kind=Outgoing.AUTO_RESPONSE)
    assert ar.message_id == ar_id(6) and ar.state == OutboxState.UNKNOWN and ar.next_attempt_at <= now
    assert (ar.claimed_by, ar.lease_until) == ("", None)
