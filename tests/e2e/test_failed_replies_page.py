"""The console's "Replies not sent" section in a real headless Chromium: a supervisor sends
one failed reply again, edits and sends another, ends a third with a wrap-up code."""

from __future__ import annotations

import os
from datetime import timedelta
from email.message import EmailMessage

import pytest
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.core.outbox import OutboxState
from postroom.store.models import Interaction, Mailbox, Outgoing, WrapUpCode
from tests.e2e.browser import needs_chromium, open_page
from tests.e2e.test_console_pages import log_in, make_agent, make_interaction

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop runs in this thread

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_chromium]


@pytest.fixture
def page(live_server):
    with open_page(height=1200) as page:
        yield page


def failed_reply(mailbox: Mailbox, agent, subject: str, text: str) -> Interaction:
    ix = make_interaction(mailbox, subject, status=State.REPLY_FAILED, agent=agent)
    msg = EmailMessage()
    msg["From"] = mailbox.address
    msg["To"] = ix.customer
    msg["Subject"] = f"Re: {subject}"
    msg["Message-ID"] = f"<reply-{ix.pk}@postroom.example.test>"
    msg.set_content(text)
    Outgoing.objects.create(
        key=f"reply:{ix.guid}",
        kind=Outgoing.REPLY,
        interaction=ix,
        envelope_from=mailbox.address,
        recipients=[ix.customer],
        message_id=msg["Message-ID"],
        raw=msg.as_bytes(),
        state=OutboxState.DEAD,
        attempts=1,
        next_attempt_at=timezone.now() - timedelta(minutes=1),
        last_error="550 5.1.1 mailbox unavailable",
    )
    return ix


def test_a_supervisor_resends_edits_and_ends_failed_replies(page, live_server) -> None:
    WrapUpCode.objects.create(code="phoned", label="Phoned the customer")
    support = Mailbox.objects.create(address="support@example.test", login="support")
    make_agent("sue@example.test", "Sue Supervisor", is_supervisor=True)
    alice = make_agent("alice@example.test", "Alice Archer", skills=["support"])
    resend = failed_reply(support, alice, "Parcel lost", "Your parcel is on its way.")
    edit = failed_reply(support, alice, "Invoice wrong", "Invoice attached.")
    end = failed_reply(support, alice, "Refund", "Refund issued.")

    log_in(page, live_server.url, "/supervisor/", "sue")
    section = page.locator("#failed-replies")
    card = section.locator(f'[data-failed="{resend.guid}"]')
    card.wait_for()
    assert "550 5.1.1 mailbox unavailable" in card.inner_text() and "on its way" in card.inner_text()
    assert page.locator("#failed-count").inner_text() == "(3)"

    card.locator('button[data-action="resend"]').click()
    card.wait_for(state="detached")
    assert Interaction.objects.get(pk=resend.pk).state is State.REPLYING
    assert Outgoing.objects.get(interaction=resend).state == OutboxState.PENDING

    card = section.locator(f'[data-failed="{edit.guid}"]')
    card.locator('button[data-action="edit"]').click()
    text = card.locator('textarea[name="text"]')
    text.wait_for(state="visible")
    assert text.input_value() == "Invoice attached."
    text.fill("Dear customer, the corrected invoice is attached.")
    card.locator('button[data-action="send-edited"]').click()
    card.wait_for(state="detached")
    assert b"the corrected invoice" in bytes(Outgoing.objects.get(interaction=edit).raw)
    assert Interaction.objects.get(pk=edit.pk).state is State.REPLYING

    card = section.locator(f'[data-failed="{end.guid}"]')
    card.locator('button[data-action="end"]').click()  # no code chosen: refused on the page
    page.locator("#flash p.error").wait_for()
    assert Interaction.objects.get(pk=end.pk).state is State.REPLY_FAILED
    card.locator('select[name="code"]').select_option("phoned")
    card.locator('button[data-action="end"]').click()
    card.wait_for(state="detached")
    ended = Interaction.objects.get(pk=end.pk)
    assert ended.state is State.ENDED and ended.wrapup_code == "phoned"
    section.locator("p.muted").wait_for()  # "Every reply went out."
    assert page.errors == []
