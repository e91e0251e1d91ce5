"""The live page in a real headless Chromium: it follows the database without reloading."""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store import agents
from postroom.store.models import Agent, Interaction, Mailbox
from tests.e2e.browser import needs_chromium, open_page

# Playwright's sync API runs an event loop in this thread; Django's ORM calls from the test
# body would otherwise be refused as "called from an async context".
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

SCREENSHOT = Path("/tmp/postroom-live-page.png")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]


@pytest.fixture
def page(live_server, settings):
    # As the demo runs it: the live page open to anonymous viewers (and saying so).
    settings.POSTROOM_LOGIN_REQUIRED = False
    with open_page(height=800) as page:
        yield page


_uid = iter(range(1, 10_000))


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
        "arrival_time": timezone.now() - timedelta(minutes=3 * uid),
    }
    fields.update(kw)
    return Interaction.objects.create(mailbox=mailbox, **fields)


def api_post(base_url: str, path: str, token: str) -> dict:
    request = urllib.request.Request(
        base_url + path, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.load(response)


def test_live_page_follows_the_database(page, live_server):
    users = get_user_model().objects
    support = Mailbox.objects.create(address="support@example.test", login="support")
    sales = Mailbox.objects.create(address="sales@example.test", login="sales")
    alice = Agent.objects.create(
        name="Alice Archer",
        address="alice@example.test",
        skills=["billing", "en"],
        user=users.create_user("alice"),
    )
    bob = Agent.objects.create(
        name="Bob Baker",
        address="bob@example.test",
        skills=["sales"],
        ready=True,
        auto_answer=True,
    )
    carol = Agent.objects.create(
        name="Carol Cho", address="carol@example.test", skills=["de"], is_supervisor=True
    )
    first = make_interaction(support, "Invoice 1042 is wrong", priority=5)
    second = make_interaction(sales, "Do you ship to Norway?", customer_name="Kari Nordmann")
    make_interaction(sales, "Bulk discount?", status=State.DELIVERED, agent=bob)
    make_interaction(support, "Rechnung fehlt", status=State.ROUTED, agent=carol)

    page.goto(live_server.url + "/")
    queue = page.locator("#queue")
    queue.locator(f'tr[data-guid="{first.guid}"]').wait_for()
    assert "Invoice 1042 is wrong" in queue.inner_text()
    assert "Do you ship to Norway?" in queue.inner_text()
    # Highest priority first.
    assert queue.locator("tbody tr").first.get_attribute("data-guid") == str(first.guid)
    assert page.locator("#count-queued").inner_text() == "2"

    alice_card = page.locator('[data-agent="alice@example.test"]')
    bob_card = page.locator('[data-agent="bob@example.test"]')
    assert alice_card.locator(".state").inner_text() == "Not Ready"
    assert bob_card.locator(".state").inner_text() == "Ready"
    assert "Bulk discount?" in bob_card.inner_text()
    assert "billing" in alice_card.inner_text()
    carol_card = page.locator('[data-agent="carol@example.test"]')
    assert carol_card.get_attribute("data-ready") == "false"
    assert "Rechnung fehlt" in carol_card.inner_text()

    # Anything that reloads the page would drop this marker.
    page.evaluate("window.__postroomNoReload = true")

    # Alice goes Ready through the API, with her own token.
    token = agents.issue_token(alice.user)
    body = api_post(live_server.url, "/api/agents/alice@example.test/ready", token)
    assert body["ready"] is True
    page.wait_for_selector('[data-agent="alice@example.test"][data-ready="true"]')
    assert alice_card.locator(".state").inner_text() == "Ready"

    # New mail arrives: it shows up in the queue, and the count follows.
    third = make_interaction(support, "Password reset does not arrive", priority=1)
    page.wait_for_selector(f'#queue tr[data-guid="{third.guid}"]')
    page.wait_for_function("document.getElementById('count-queued').textContent === '3'")
    assert second.guid and "Password reset does not arrive" in queue.inner_text()

    assert page.evaluate("window.__postroomNoReload") is True
    assert "Not updating" not in page.locator("#connection").inner_text()
    assert page.errors == []
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_live_page_asks_for_a_login_outside_the_demo(page, live_server, settings):
    settings.POSTROOM_LOGIN_REQUIRED = True
    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url


def test_api_docs_render_offline(page, live_server):
    user = get_user_model().objects.create_user("ops", password="a long test password", is_staff=True)
    page.goto(live_server.url + "/api/docs")
    assert "/accounts/login/" in page.url
    page.fill('input[name="username"]', user.username)
    page.fill('input[name="password"]', "a long test password")
    page.click('button[type="submit"]')
    page.wait_for_url("**/api/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Postroom API" in page.locator(".swagger-ui .info .title").inner_text()
    page.get_by_text("/api/agents/{address}/ready", exact=True).wait_for()
    assert page.errors == []
