"""The nodes page in a real headless Chromium: a supervisor sees each engine node as the
nodes wrote themselves into the database (engine/nodes.py's own register, take, heartbeat
and stop), with the mailboxes it holds; an agent is refused."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from postroom.core.cluster import ROUTER, Role, mailbox_lease
from postroom.engine import nodes
from postroom.store.models import Mailbox, Node
from tests.e2e.browser import axe_violations, needs_chromium, open_page
from tests.e2e.test_console_pages import PASSWORD, log_in, make_agent

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop runs in this thread

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_chromium]


@pytest.fixture
def page(live_server):
    with open_page() as page:
        yield page


@pytest.fixture
def two_nodes():
    """node-b ran once and stopped cleanly; node-a runs, watching the support box and routing."""
    support = Mailbox.objects.create(address="support@example.test", login="support")
    Mailbox.objects.create(address="sales@example.test", login="sales")
    gone = nodes.register("node-b", Role.SECONDARY, timedelta(seconds=60))
    nodes.stop(gone)
    ticket = nodes.register("node-a", Role.PRIMARY, timedelta(seconds=60))
    for name in (mailbox_lease(support.pk), ROUTER):
        assert nodes.take(ticket, name, nodes.look()) is not None
    nodes.heartbeat(ticket, {"boxes": [support.pk], "router": True})
    try:
        yield ticket
    finally:
        nodes.forget()


def test_a_supervisor_sees_each_node_and_what_it_holds(page, live_server, two_nodes) -> None:
    make_agent("sue@example.test", "Sue Supervisor", is_supervisor=True)
    log_in(page, live_server.url, "/nodes/", "sue")
    table = page.locator("#nodes-table")
    table.wait_for()
    a, b = table.locator('tr[data-node="node-a"]'), table.locator('tr[data-node="node-b"]')
    assert a.get_attribute("data-live") == "true" and b.get_attribute("data-live") == "false"
    assert a.locator(".role").inner_text() == "primary" and a.locator(".mode").inner_text() == "normal"
    assert a.locator(".mailboxes").inner_text() == "support@example.test"
    assert a.locator(".router").inner_text() == "routes"
    assert " s ago" in a.locator(".heartbeat").inner_text()
    assert a.locator(".claims").inner_text() == "none"  # no island claims in normal mode
    assert b.locator(".role").inner_text() == "secondary" and b.locator(".state").inner_text() == "stopped"
    assert b.locator(".mailboxes").inner_text() == "none"
    # The live node comes first; the page is reachable from the header.
    assert table.locator("tbody tr").first.get_attribute("data-node") == "node-a"
    assert page.locator('nav a[href="/nodes/"]').count() == 1
    assert axe_violations(page) == []
    assert page.errors == []

    # The same, as JSON, for scripts and monitors.
    answer = page.request.get(live_server.url + "/api/nodes")
    assert answer.status == 200
    got = {n["node_id"]: n for n in answer.json()["nodes"]}
    assert got["node-a"]["mailboxes"] == ["support@example.test"] and got["node-a"]["router"] is True
    assert got["node-b"]["live"] is False and got["node-b"]["mailboxes"] == []


def test_an_agent_may_not_open_the_nodes_page(page, live_server, two_nodes) -> None:
    make_agent("alice@example.test", "Alice Archer", skills=["support"])
    page.goto(live_server.url + "/nodes/")
    page.fill('input[name="username"]', "alice")
    page.fill('input[name="password"]', PASSWORD)
    page.click('#login-form button[type="submit"]')
    page.locator("#forbidden").wait_for()
    assert "node-a" not in page.content()


def test_a_supervisor_forgets_a_node_whose_lease_ran_out(page, live_server, two_nodes) -> None:
    """`Forget` only on a node whose lease ran out (not a live one, not a stopped one);
    after it the node is stopped (store.commands.forget_node, as `postroom node forget`)."""
    now = timezone.now()
    Node.objects.create(  # registered once, its lease ran out without a clean stop
        node_id="node-c", role="secondary", epoch=3, hostname="gone.example", pid=1, started_at=now,
        heartbeat_at=now - timedelta(seconds=65), lease_until=now - timedelta(seconds=5),
    )
    make_agent("sue@example.test", "Sue Supervisor", is_supervisor=True)
    log_in(page, live_server.url, "/nodes/", "sue")
    table = page.locator("#nodes-table")
    table.wait_for()
    c = table.locator('tr[data-node="node-c"]')
    assert c.locator(".state").inner_text().startswith("lease ran out")
    assert table.locator('button[data-action="forget"]').count() == 1  # node-c's only
    c.locator('button[data-action="forget"]').click()
    page.wait_for_url(live_server.url + "/nodes/")
    table.wait_for()
    assert table.locator('tr[data-node="node-c"] .state').inner_text() == "stopped"
    assert table.locator('button[data-action="forget"]').count() == 0
    row = Node.objects.get(node_id="node-c")
    assert row.epoch == 4 and "sue" in row.detail["forgotten_by"]
    assert page.errors == []
