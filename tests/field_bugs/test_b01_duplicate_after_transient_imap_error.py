"""B-1: duplicate tickets after a transient IMAP error or an interrupted fetch.

In the field (zammad#1662, zammad#78, osTicket#494, osTicket#1908): a STORE failed, or a
fetch was interrupted, so the mail was imported again and the auto-responder re-sent.

Postroom: ingest changes nothing on the server (BODY.PEEK, no \\Seen, no move); the
tracking record, the auto-response row and the cursor are one transaction keyed on
(mailbox, UIDVALIDITY, UID); the server is changed only at the end (clean-up), after the
commit that says why, and each clean-up step is idempotent. Shown with the engine killed
(as in production, a subprocess) between the commit and each change on the server, and
with a fetch cut off in the middle of the message.
"""

from __future__ import annotations

import contextlib
import signal
import time

import pytest

from postroom.mail.imap import MailboxUnavailable
from postroom.store.models import Interaction, Outgoing
from tests.e2e.enginerun import make_deployment, wait_until
from tests.field_bugs.helpers import (
    AgentAtHerDesk,
    auto_responses,
    customer_mail,
    mail_to_support,
    send,
    through,
)

pytestmark = pytest.mark.mailstack


@pytest.mark.parametrize(
    "checkpoint",
    [
        "received",  # committed, nothing on the server touched yet
        "cleanup-reply-removed",  # the reply expunged from the outbound box, the original not yet
        "cleanup-original-removed",  # both gone from the server, the interaction not yet closed
    ],
)
def test_b01_killed_between_the_commit_and_the_change_on_the_server(mailstack, new_user, tmp_path, checkpoint) -> None:
    dep = make_deployment(mailstack, new_user, tmp_path)
    try:
        dep.load()
        dep.ready("alice")
        mail_to_support(dep)
        alice = AgentAtHerDesk(dep)
        crashing = dep.start_engine(crash_at=checkpoint)
        wait_until(f"the crash at {checkpoint}", lambda: crashing.poll() is not None, timeout=60, engine=crashing, step=alice)
        assert crashing.poll() == 137, crashing.tail()
        crashing.close()
        engine = dep.start_engine()
        wait_until("the interaction to close", lambda: dep.statuses() == ["closed"], timeout=60, engine=engine, step=alice)
        assert engine.stop(signal.SIGTERM) == 0

        assert len(dep.interactions()) == 1
        center = dep.center
        carol = center.wait_for("carol", 2)
        assert [m["Auto-Submitted"] for m in carol].count("auto-replied") == 1
        assert len(carol) == 2, [m["Subject"] for m in carol]
        assert center.messages("support") == [] and center.messages("outbound") == []
    finally:
        dep.cleanup()


@pytest.mark.django_db(transaction=True)
def test_b01_a_fetch_cut_off_mid_message_is_fetched_again_and_taken_once(center, proxy) -> None:
    """The server's connection drops in the middle of the message's literal; a later look
    (at once, or after the box's back-off) takes the message, and takes it once."""
    relay = proxy(center.stack.imap_port)
    engine = through(center, imap_port=relay.port, imap_tls="none")  # clear text, to see the FETCH
    msg = customer_mail(center)
    send(center, msg)
    relay.cut_on = b"BODY[] {"  # IMAP literal of the full message: cut right after its length

    with contextlib.suppress(MailboxUnavailable):  # raised, or handled by the box's own back-off
        engine.run_until_idle()
    assert relay.cut_on is None, "the fetch was never cut"

    deadline = time.monotonic() + 60
    while not Interaction.objects.exists():  # the next looks, after the back-off
        assert time.monotonic() < deadline, "the cut-off mail was never taken"
        center.clock.advance(minutes=1)
        with contextlib.suppress(MailboxUnavailable):
            engine.run_until_idle()
        time.sleep(0.2)
    engine.run_until_idle()  # and once more: nothing new
    (ix,) = Interaction.objects.all()
    assert ix.message_id == msg["Message-ID"]
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 1
    assert len(auto_responses(center)) == 1
    assert len(center.messages("support")) == 1  # still on the server, as it was
