"""Decision 0053: the forward is built from the bytes reception fetched, kept in the
engine's memory, instead of a second FETCH; whatever is not kept is fetched as before.

On the real Dovecot + Postfix stack. Each test checks the forward queued against the one
delivery builds from the original FETCHed from the server at the end, byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postroom.core.lifecycle import State
from postroom.engine import delivery
from postroom.mail.imap import FetchedMessage
from postroom.store.models import Interaction, Outgoing
from tests.e2e.boxes import mail, rebuild, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def server_bytes(center, who: str = "support") -> dict[int, bytes]:
    client = center.imap(who)
    try:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        return {u: d[b"BODY[]"] for u, d in client.fetch(uids, ["BODY.PEEK[]"]).items()} if uids else {}
    finally:
        client.logout()


def forward_after_fetch(center, ix: Interaction) -> bytes:
    """The forward delivery builds for `ix`'s first delivery from the server's bytes."""
    site = center.engine.site
    sessions = center.engine._sessions_for_worker()
    session = sessions.get(ix.mailbox)
    fetched = session.fetch_one(ix.uid)
    assert fetched is not None
    ix.deliveries = 0  # as it was when the queued forward was built (not saved)
    made = delivery.build_forward(ix, site, session, fetched, datetime.now(UTC), delivery.outbound_box())
    assert isinstance(made, Outgoing)
    return bytes(made.raw)


def queued_forward(ix: Interaction) -> bytes:
    row = Outgoing.objects.get(interaction=ix, kind=Outgoing.FORWARD)
    return bytes(row.raw)


def take_then_deliver(center, subject: str, between=None) -> Interaction:
    write_in(center, mail(center, subject=subject, body="My kettle whistles in E flat.\n\u00e9t\u00e9"))
    run(center)  # taken, queued: no agent is ready yet
    ix = Interaction.objects.get(subject=subject)
    assert ix.state is State.QUEUED
    if between is not None:
        between(ix)
    center.ready("alice")
    run(center)
    ix.refresh_from_db()
    assert ix.state is State.DELIVERED, ix.status
    return ix


def test_the_forward_from_the_kept_bytes_is_the_one_after_a_fetch(center) -> None:
    kept = center.engine.site.originals
    ix = take_then_deliver(center, "Kept from reception")
    assert kept.hits == 1 and kept.misses == 0  # no second FETCH
    # The kept bytes are exactly the server's.
    got = kept.get(ix.mailbox, ix.uidvalidity, ix.uid)
    assert got is not None and got.raw == server_bytes(center)[ix.uid]
    assert queued_forward(ix) == forward_after_fetch(center, ix)
    forwarded = center.wait_for("alice", 1)
    assert len(forwarded) == 1 and "E flat" in forwarded[0].get_body(("plain",)).get_content()


def test_a_restarted_engine_fetches_the_original(center) -> None:
    # A new engine process starts with nothing kept.
    kept = center.engine.site.originals
    ix = take_then_deliver(center, "Taken before a restart", between=lambda _ix: kept.clear())
    assert kept.hits == 0 and kept.misses == 1
    assert queued_forward(ix) == forward_after_fetch(center, ix)


def test_an_evicted_original_is_fetched(center) -> None:
    kept = center.engine.site.originals

    def squeeze(_ix: Interaction) -> None:
        kept.max_bytes = 1  # as if many later mails had pushed it out
        kept.keep(_ix.mailbox, _ix.uidvalidity, [])

    ix = take_then_deliver(center, "Pushed out by later mail", between=squeeze)
    assert len(kept) == 0 and kept.hits == 0 and kept.misses == 1
    assert queued_forward(ix) == forward_after_fetch(center, ix)


def test_a_kept_original_under_an_old_uidvalidity_is_not_used(center) -> None:
    """The box is rebuilt (new UIDVALIDITY, new UIDs) between reception and delivery: the
    bytes kept under the old UIDVALIDITY are never taken for the new UID's."""
    kept = center.engine.site.originals
    write_in(center, mail(center, subject="First, before the rebuild"))
    write_in(center, mail(center, subject="Second, before the rebuild"), count=2)
    run(center)
    first = Interaction.objects.get(subject="First, before the rebuild")
    old_uid, old_validity = first.uid, first.uidvalidity
    # Poison what is kept under the old UIDVALIDITY: were it used for the rebound
    # interaction, the forward would differ from the server's.
    for uid in (1, 2):
        kept.keep(first.mailbox, old_validity, [FetchedMessage(uid, datetime.now(UTC), 20, b"Subject: wrong\r\n\r\nx\r\n")])
    old, new = rebuild(center, "support")
    assert old == old_validity and new != old
    center.ready("alice")
    run(center)
    first.refresh_from_db()
    assert first.state is State.DELIVERED and first.uidvalidity == new and (first.uidvalidity, first.uid) != (old_validity, old_uid)
    assert queued_forward(first) == forward_after_fetch(center, first)
    assert b"Subject: wrong" not in queued_forward(first)
