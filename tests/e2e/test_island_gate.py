"""Island mode's send gate in the engine (engine/claims.py, decision 0036), on the real
mail stack: for a mailbox in island mode nothing leaves for an email before this node has
won the email's claim in the sync box, and an email another node claimed first gets
nothing from this node. Judged from the real mailboxes (the customer's, the sync box).

The box is put in island mode the way the supervisor does when it takes a box from a node
that did not stop cleanly (`Claims.enter`); the claims' thread's step is run by hand
between the engine's steps, as `run_until_idle` drives the rest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy

import pytest

from postroom.core.island import EmailKey, SyncKind
from postroom.engine.island import IslandSettings
from postroom.engine.runtime import Engine
from postroom.mail.smtp import SmtpSender
from postroom.mail.syncbox import send as send_sync
from postroom.store.models import Interaction, Mailbox, Outgoing
from tests.e2e.conftest import Center
from tests.field_bugs.helpers import auto_responses, customer_mail, send

pytestmark = pytest.mark.mailstack


def island_center(center: Center, new_user) -> Center:  # type: ignore[no-untyped-def]
    """The center's engine with island mode on (a sync box of its own), support in island
    mode as if taken from a node that vanished."""
    center.users["sync"] = new_user(prefix="sync")
    sync, password = center.users["sync"]
    site = center.engine.site
    settings = IslandSettings(
        sync, center.address("outbound"), claim_expiry=timedelta(seconds=60), claim_reassert=timedelta(seconds=20),
        clock_margin=timedelta(seconds=1),
    )
    site = replace(site, island=settings, passwords={**site.passwords, sync: password})
    center.engine.close()
    center.engine = Engine(site, now=center.clock)
    assert center.engine.claims is not None
    center.engine.claims.enter(Mailbox.objects.get(address=center.address("support")).pk, "node-gone")
    return center


def sync_claims(center: Center) -> list[dict]:
    """The claims in the sync box, as the nodes wrote them."""
    return [json.loads(m.get_content()) for m in center.messages("sync") if "claim" in str(m["Subject"]).lower()]


def until(center: Center, what: str, done, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    claims = center.engine.claims
    assert claims is not None
    while not done():
        claims.step()
        center.engine.run_until_idle()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_nothing_is_sent_for_an_island_boxs_mail_before_its_claim_is_won(center: Center, new_user) -> None:  # type: ignore[no-untyped-def]
    center = island_center(center, new_user)
    send(center, customer_mail(center))
    center.engine.run_until_idle()

    # Received and answered in the outbox, but held back: no claim is won yet.
    (ix,) = Interaction.objects.all()
    row = Outgoing.objects.get(interaction=ix, kind=Outgoing.AUTO_RESPONSE)
    assert (row.state, row.attempts) == ("retry_wait", 0)
    assert auto_responses(center) == [] and ix.claim_node == ""

    until(center, "the auto-response", lambda: len(auto_responses(center)) == 1)
    ix.refresh_from_db()
    node = center.engine.site.node_id
    assert ix.claim_node == node and ix.claim_time is not None
    (claim,) = [c for c in sync_claims(center) if c["kind"] == SyncKind.CLAIM.value]
    assert claim["node"] == node and claim["email"]["message_id"] == ix.message_id
    assert claim["email"]["sha256"] == ix.raw_sha256
    time.sleep(1.5)  # a second round of the gate must not send it again
    until(center, "the outbox to settle", lambda: True)
    assert len(auto_responses(center)) == 1


@pytest.mark.django_db(transaction=True)
def test_an_email_another_node_claimed_first_gets_nothing_from_this_node(center: Center, new_user) -> None:  # type: ignore[no-untyped-def]
    center = island_center(center, new_user)
    send(center, customer_mail(center))
    # The other node read the same bytes from the same box and claimed the email first.
    client = center.imap("support")
    try:
        client.select_folder("INBOX", readonly=True)
        (uid,) = client.search(["ALL"])
        raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
    finally:
        client.logout()
    key = EmailKey(
        center.address("support"), str(message_from_bytes(raw, policy=email_policy.default)["Message-ID"]),
        hashlib.sha256(raw).hexdigest(),
    )
    site = center.engine.site
    other = SmtpSender(site.smtp)
    try:
        assert send_sync(
            other, center.address("outbound"), center.address("sync"), SyncKind.CLAIM, "node-other", datetime.now(UTC), key
        ).sent
    finally:
        other.close()
    center.wait_for("sync", 1)

    center.engine.run_until_idle()
    (ix,) = Interaction.objects.all()
    assert ix.raw_sha256 == key.sha256
    # Several rounds of claims and sends: the other node holds the claim, so nothing leaves.
    deadline = time.monotonic() + 4
    until(center, "rounds", lambda: time.monotonic() > deadline)
    ix.refresh_from_db()
    assert auto_responses(center) == []
    # The loss ends this node's copy (engine/claimloss.py): its auto-response never tried;
    # the record names the winning claim (a winner cut off from the database merges it back).
    assert ix.claim_node == "node-other" and ix.claim_time is not None
    assert (ix.status, ix.outcome) == ("closed", "claimed_elsewhere")
    row = Outgoing.objects.get(interaction=ix, kind=Outgoing.AUTO_RESPONSE)
    assert (row.state, row.attempts) == ("cancelled", 0)
    # This node lost the race for it: no claim of its own stands before the other's.
    kinds = [(c["node"], c["kind"]) for c in sync_claims(center)]
    assert kinds[0] == ("node-other", SyncKind.CLAIM.value), kinds
