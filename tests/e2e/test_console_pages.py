"""The agent bar and the supervisor console in a real headless Chromium: log in through
the form, click the buttons, and find the decisions and transitions in the database."""

from __future__ import annotations

import itertools
import os
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store.models import (
    Agent,
    Approval,
    Interaction,
    JournalEvent,
    Mailbox,
    OutboundMessage,
    WrapUpCode,
)
from tests.e2e.browser import needs_chromium, open_page

# Playwright's sync API runs an event loop in this thread; Django's ORM calls from the test
# body would otherwise be refused as "called from an async context".
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

AGENT_SCREENSHOT = Path("/tmp/postroom-agent.png")
SUPERVISOR_SCREENSHOT = Path("/tmp/postroom-supervisor.png")
INTERACTION_SCREENSHOT = Path("/tmp/postroom-interaction.png")
LOGIN_SCREENSHOT = Path("/tmp/postroom-login.png")
PASSWORD = "correct horse battery staple"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]


@pytest.fixture
def page(live_server):
    with open_page(height=900) as page:
        yield page


_uid = itertools.count(1)


def make_interaction(mailbox: Mailbox, subject: str, **kw) -> Interaction:
    uid = next(_uid)
    fields = {
        "node_id": "node-a",
        "uidvalidity": 1,
        "uid": uid,
        "message_id": f"<m{uid}@customer.test>",
        "to_addr": mailbox.address,
        "customer": f"customer{uid}@customer.test",
        "subject": subject,
        "arrival_time": timezone.now() - timedelta(minutes=4 * uid),
    }
    fields.update(kw)
    return Interaction.objects.create(mailbox=mailbox, **fields)


def make_agent(address: str, name: str, **kw) -> Agent:
    user = get_user_model().objects.create_user(address.split("@")[0], password=PASSWORD)
    return Agent.objects.create(name=name, address=address, user=user, **kw)


def make_approval(ix: Interaction, approver: Agent, text: str) -> Approval:
    outbound, _ = Mailbox.objects.get_or_create(
        address="outbound@example.test", defaults={"login": "outbound", "kind": Mailbox.OUTBOUND}
    )
    reply = OutboundMessage.objects.create(
        mailbox=outbound,
        uidvalidity=1,
        uid=ix.uid,
        message_id=f"<reply{ix.uid}@example.test>",
        sender=ix.agent.address,
        interaction=ix,
        outcome=OutboundMessage.ACCEPTED,
    )
    msg = EmailMessage()
    msg["From"] = "Example Support <support@example.test>"
    msg["To"] = ix.customer
    msg["Subject"] = f"Re: {ix.subject}"
    msg.set_content(text)
    return Approval.objects.create(
        interaction=ix,
        reply=reply,
        raw=msg.as_bytes(),
        approvers=[approver.address],
        reason_held=f"{ix.agent.address} is on probation",
        requested_at=timezone.now() - timedelta(minutes=2),
    )


def log_in(page, base_url: str, path: str, username: str) -> None:
    """Open `path`, get sent to the login form, fill it in and land back on `path`."""
    page.goto(base_url + path)
    assert "/accounts/login/" in page.url
    page.screenshot(path=str(LOGIN_SCREENSHOT))
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', PASSWORD)
    page.click('#login-form button[type="submit"]')
    page.wait_for_url(base_url + path)


def test_supervisor_decides_approvals(page, live_server):
    support = Mailbox.objects.create(address="support@example.test", login="support")
    sue = make_agent("sue@example.test", "Sue Supervisor", is_supervisor=True, ready=True)
    alice = make_agent("alice@example.test", "Alice Archer", skills=["support"], probationary=True)
    alice.supervisors.add(sue)
    texts = {
        "approve": "Dear Ms Doe,\n\nyour parcel left our warehouse today.\n\nKind regards,\nAlice",
        "reject": "ur refund is coming i guess",
        "edit": "Dear Mr Roe,\n\nthe invoice is attached.\n\nAlice",
    }
    approvals = {}
    for n, (key, text) in enumerate(texts.items()):
        ix = make_interaction(
            support,
            ["Where is my parcel?", "Refund please", "Invoice 1042"][n],
            customer_name=["Jane Doe", "Max Mustermann", "Richard Roe"][n],
            status=State.AWAITING_APPROVAL,
            agent=alice,
            approval=True,
        )
        approvals[key] = make_approval(ix, sue, text)
    queued = make_interaction(
        support,
        "VIP: order never arrived",
        priority=55,
        queue="support",
        priority_reasons=[["box default", 5], ["contact level vip", 50]],
        rules={"hits": ["VIP customers"], "misses": ["Newsletter to trash", "Sales leads"]},
    )
    make_interaction(support, "Rechnung fehlt", queue="billing", priority=0)

    log_in(page, live_server.url, "/supervisor/", "sue")

    for approval in approvals.values():
        page.wait_for_selector(f'[data-approval="{approval.pk}"]')
    card = page.locator(f'[data-approval="{approvals["approve"].pk}"]')
    assert "your parcel left our warehouse today." in card.locator("pre.reply").inner_text()
    assert "Alice Archer" in card.inner_text()
    assert "Jane Doe" in card.inner_text()

    # The queue monitor says why an interaction has its priority.
    row = page.locator(f'#queues tr[data-guid="{queued.guid}"]')
    row.locator('button[data-action="why"]').click()
    why = page.locator(f'tr[data-why="{queued.guid}"]')
    why.wait_for(state="visible")
    assert "contact level vip" in why.inner_text()
    assert "VIP customers" in why.inner_text() and "Sales leads" in why.inner_text()
    page.wait_for_timeout(1200)  # a refresh must keep it open
    assert why.is_visible()
    assert (
        page.locator('#agents tr[data-agent="alice@example.test"]').inner_text().count("Not Ready")
    )
    page.screenshot(path=str(SUPERVISOR_SCREENSHOT), full_page=True)

    # Approve.
    card.locator('button[data-action="approve"]').click()
    card.wait_for(state="detached")
    approved = Approval.objects.get(pk=approvals["approve"].pk)
    assert (approved.state, approved.decided_by, approved.decided_via) == (
        "approved",
        "sue@example.test",
        "web",
    )
    assert approved.edited_text == ""

    # Reject, with a reason.
    card = page.locator(f'[data-approval="{approvals["reject"].pk}"]')
    card.locator('input[name="reason"]').fill("Please write in full sentences.")
    card.locator('button[data-action="reject"]').click()
    card.wait_for(state="detached")
    rejected = Approval.objects.get(pk=approvals["reject"].pk)
    assert (rejected.state, rejected.rejection_reason, rejected.decided_by) == (
        "rejected",
        "Please write in full sentences.",
        "sue@example.test",
    )

    # Edit, then approve: the textarea starts with the agent's wording.
    card = page.locator(f'[data-approval="{approvals["edit"].pk}"]')
    card.locator('button[data-action="edit"]').click()
    textarea = card.locator('textarea[name="text"]')
    textarea.wait_for(state="visible")
    assert textarea.input_value() == texts["edit"]
    page.wait_for_timeout(1200)  # typing survives a refresh
    textarea.fill("Dear Mr Roe,\n\nplease find invoice 1042 attached.\n\nKind regards,\nAlice")
    card.locator('button[data-action="approve-edited"]').click()
    card.wait_for(state="detached")
    edited = Approval.objects.get(pk=approvals["edit"].pk)
    assert edited.state == "approved"
    assert edited.edited_text.startswith("Dear Mr Roe,\n\nplease find invoice 1042 attached.")

    # Decided approvals move to the "recently decided" list; the interactions wait for
    # the engine.
    page.wait_for_selector(f'#decided tr[data-decided="{edited.pk}"]')
    assert "No replies are waiting" in page.locator("#approvals").inner_text()
    assert set(Interaction.objects.filter(approval=True).values_list("status", flat=True)) == {
        "awaiting_approval"
    }
    decided = JournalEvent.objects.filter(kind__startswith="approval_").order_by("id")
    assert [e.kind for e in decided] == ["approval_approve", "approval_reject", "approval_edit"]
    assert page.errors == []


def test_agent_answers_and_hangs_up(page, live_server):
    support = Mailbox.objects.create(address="support@example.test", login="support")
    WrapUpCode.objects.create(code="spam", label="Spam")
    WrapUpCode.objects.create(code="solved-by-phone", label="Solved by phone")
    alice = make_agent("alice@example.test", "Alice Archer", skills=["support", "en"], capacity=3)
    make_agent("bob@example.test", "Bob Baker", skills=["billing"])
    offered = make_interaction(
        support,
        "My order never arrived",
        customer_name="Jane Doe",
        status=State.ROUTED,
        agent=alice,
    )
    working = make_interaction(support, "Change my address", status=State.DELIVERED, agent=alice)
    later = make_interaction(
        support, "Invoice copy, please", priority=3, status=State.ROUTED, agent=alice
    )
    make_interaction(
        support,
        "Thanks for the refund",
        status=State.REPLIED,
        agent=alice,
        replied_at=timezone.now() - timedelta(minutes=30),
        resolution_code="spam",
    )

    log_in(page, live_server.url, "/agent/", "alice")

    # Ready / Not Ready.
    toggle = page.locator("#ready-toggle")
    assert toggle.get_attribute("data-ready") == "false"
    assert page.locator("#ready-state").inner_text() == "Not Ready"
    toggle.click()
    page.wait_for_selector('#ready-toggle[data-ready="true"]')
    alice.refresh_from_db()
    assert alice.ready is True
    assert page.locator("#ready-state").inner_text() == "Ready"

    # Answer the offer: it moves to "in hand".
    page.locator(f'#offered tr[data-guid="{offered.guid}"] button[data-action="answer"]').click()
    current = page.locator(f'#current tr[data-guid="{offered.guid}"]')
    current.wait_for()
    offered.refresh_from_db()
    assert offered.status == "answered"
    assert page.locator(f'#offered tr[data-guid="{offered.guid}"]').count() == 0
    assert page.locator(f'#current tr[data-guid="{working.guid}"]').is_visible()
    assert page.locator(f'#offered tr[data-guid="{later.guid}"]').is_visible()
    page.screenshot(path=str(AGENT_SCREENSHOT), full_page=True)

    # Hang up without a code: refused in the page, nothing changes.
    current.locator('button[data-action="hangup"]').click()
    page.wait_for_selector("#flash p.error")
    offered.refresh_from_db()
    assert offered.status == "answered"

    # Hang up with a code.
    current.locator('select[name="wrapup"]').select_option("solved-by-phone")
    current.locator('button[data-action="hangup"]').click()
    current.wait_for(state="detached")
    offered.refresh_from_db()
    assert (offered.state, offered.wrapup_code) == (State.ENDED, "solved-by-phone")
    event = JournalEvent.objects.get(interaction=offered, kind="hung_up")
    assert event.detail == {"by": "alice@example.test", "code": "solved-by-phone"}

    # The interaction's own page tells the story.
    page.goto(f"{live_server.url}/interactions/{offered.guid}/")
    assert page.locator("#status").inner_text() == "ended"
    assert page.locator('#fields tr[data-field="wrapup_code"] td').inner_text() == "solved-by-phone"
    kinds = page.locator("#journal li").evaluate_all("items => items.map(i => i.dataset.kind)")
    assert kinds == ["answered", "hung_up"]
    page.screenshot(path=str(INTERACTION_SCREENSHOT), full_page=True)
    assert page.errors == []
