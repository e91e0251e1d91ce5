"""Customer mail that attacks the pages, in a real headless Chromium with the
Content-Security-Policy on: script, event-handler, CSS and remote-image payloads in every
field a page shows (subject, customer name, addresses, the held reply's text) stay inert
text on every page that shows them: no dialog opens, no script runs, no request leaves the
page's own origin, and the browser reports no policy violation (which would mean a payload
had become markup). The same walk proves every page still works under the policy.

"Remote" here is another origin on loopback (127.0.0.2): requests to it are recorded and
aborted, so nothing is ever sent off this machine even if a payload fired.
"""

from __future__ import annotations

import itertools
import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store.models import Agent, Approval, Interaction, Mailbox, OutboundMessage
from tests.e2e.browser import needs_chromium, open_page

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_chromium]

ELSEWHERE = "http://127.0.0.2:9"
PAYLOADS = [
    "<script>window.__pwned = 1; alert('script')</script>",
    "<img src=x onerror=\"window.__pwned = 2; alert('onerror')\">",
    "<svg onload=\"alert('svg')\"></svg>",
    f"<style>body {{ background: url({ELSEWHERE}/css.png) }}</style>",
    f"<img src=\"{ELSEWHERE}/pixel.png\">",
    "\"><iframe src=\"javascript:alert('iframe')\"></iframe>",
    "<a href=\"javascript:alert('link')\">click</a>",
]
HOSTILE = " ".join(PAYLOADS)
_uid = itertools.count(1)


def _interaction(mailbox: Mailbox, **kw) -> Interaction:
    uid = next(_uid)
    return Interaction.objects.create(
        mailbox=mailbox,
        node_id="n",
        uidvalidity=1,
        uid=uid,
        message_id=f"<{uid}.{HOSTILE[:200]}@customer.test>",
        to_addr=mailbox.address,
        reply_to=f"{HOSTILE[:300]} <x@customer.test>",
        customer=f"c{uid}@customer.test",
        customer_name=HOSTILE[:300],
        subject=f"Subject {uid} {HOSTILE}",
        arrival_time=timezone.now() - timedelta(minutes=uid),
        priority_reasons=[[HOSTILE[:200], 5]],
        rules={"hits": [HOSTILE[:200]], "misses": []},
        **kw,
    )


@pytest.fixture
def world():
    users = get_user_model().objects
    mailbox = Mailbox.objects.create(address="support@example.test", login="support")
    sue = Agent.objects.create(
        name="Sue", address="sue@example.test", is_supervisor=True, user=users.create_user("sue")
    )
    alice = Agent.objects.create(
        name="Alice", address="alice@example.test", user=users.create_user("alice")
    )
    alice.supervisors.add(sue)
    root = users.create_superuser("root", "root@example.test", "not used 123456")
    queued = _interaction(mailbox)
    routed = _interaction(mailbox, status=State.ROUTED.value, agent=alice)
    held = _interaction(mailbox, status=State.AWAITING_APPROVAL.value, agent=alice)
    reply = OutboundMessage.objects.create(mailbox=mailbox, uidvalidity=1, uid=1, outcome="accepted")
    body = f"Thanks!\n\n> {HOSTILE}\n"
    html = f"<p>Thanks!</p><blockquote>{HOSTILE}</blockquote>"
    raw = (
        "From: support@example.test\r\nSubject: Re: " + PAYLOADS[0] + "\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        f"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b--\r\n"
    ).encode()
    Approval.objects.create(
        interaction=held, reply=reply, raw=raw, approvers=[sue.address], requested_at=timezone.now()
    )
    return {"sue": sue.user, "alice": alice.user, "root": root, "ixs": (queued, routed, held)}


def _login(page, live_server, user) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"]
    page.goto("about:blank")  # the last page stops polling before its login goes
    page.context.clear_cookies()
    page.context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])


def _visit(page, live_server, path: str, requests: list[str], dialogs: list[str]) -> None:
    response = page.goto(live_server.url + path)
    assert response is not None and response.status == 200, path
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "default-src 'none'" in policy, path
    page.wait_for_load_state("networkidle")
    # Let the page's own refresh (one second) redraw everything from the API once.
    page.wait_for_timeout(1500)
    assert page.evaluate("window.__pwned") is None, path
    assert page.locator("iframe").count() == 0, path
    assert "<script>window.__pwned" in page.locator("body").inner_text(), path


def test_hostile_mail_is_inert_on_every_page(world, live_server):
    queued, routed, held = world["ixs"]
    visits = [
        ("sue", "/"),
        ("sue", "/supervisor/"),
        ("sue", f"/interactions/{held.guid}/"),
        ("sue", f"/interactions/{queued.guid}/"),
        ("sue", "/journal/"),
        ("sue", "/reports/"),
        ("alice", "/agent/"),
        ("alice", f"/interactions/{routed.guid}/"),
        ("root", f"/admin/store/interaction/{held.pk}/change/"),
        ("root", "/admin/store/interaction/"),
    ]
    with open_page() as page:
        requests: list[str] = []
        dialogs: list[str] = []
        violations: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )

        def only_here(route) -> None:
            if route.request.url.startswith(live_server.url):
                route.continue_()
            else:
                route.abort()

        page.route("**/*", only_here)
        for who, path in visits:
            _login(page, live_server, world[who])
            if path.startswith("/admin/"):
                response = page.goto(live_server.url + path)
                assert response.status == 200
                assert "script-src 'self'" in response.headers.get("content-security-policy", "")
                page.wait_for_load_state("networkidle")
                assert page.evaluate("window.__pwned") is None
            else:
                _visit(page, live_server, path, requests, dialogs)
        page.screenshot(path="/tmp/postroom-hostile-admin.png", full_page=True)
        elsewhere = [u for u in requests if not u.startswith(live_server.url) and not u.startswith("data:")]
        assert elsewhere == []
        assert dialogs == []
        assert violations == []
        assert page.errors == []


def test_every_page_works_under_the_policy(world, live_server):
    """Each page, logged in as someone who may see it: drawn, refreshed by its script,
    with no script error and no policy violation."""
    pages = [
        ("sue", "/", "#queue"),
        ("sue", "/supervisor/", "#approvals, main"),
        ("alice", "/agent/", "main"),
        ("sue", f"/interactions/{world['ixs'][2].guid}/", "main"),
        ("sue", f"/interactions/{world['ixs'][2].guid}/transcript/", "#transcript"),
        ("sue", "/journal/?q=subject", "#journal-table"),
        ("sue", "/reports/", "#chart-trend"),
        ("sue", "/api/docs", ".swagger-ui .info .title"),
        ("root", "/admin/", "#content"),
        ("root", "/admin/store/auditentry/", "#content"),
    ]
    with open_page() as page:
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
        page.goto(live_server.url + "/accounts/login/")
        page.wait_for_selector("#login-form")
        for who, path, selector in pages:
            _login(page, live_server, world[who])
            response = page.goto(live_server.url + path)
            assert response.status == 200, path
            assert response.headers.get("content-security-policy"), path
            page.wait_for_selector(selector)
            page.wait_for_timeout(1200)
            assert "Not updating" not in page.locator("body").inner_text(), path
        assert missing == []
        assert page.errors == []
