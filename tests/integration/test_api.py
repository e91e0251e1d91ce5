"""The REST API through Django's test client: auth, agent state, interactions, answer CAS."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store import agents
from postroom.store.models import Agent, ApiToken, Interaction, JournalEvent, Mailbox

pytestmark = pytest.mark.django_db

_uid = itertools.count(1)


def make_mailbox(address: str = "support@example.test", **kw) -> Mailbox:
    return Mailbox.objects.create(address=address, login=address, **kw)


def make_agent(address: str, *, name: str | None = None, user: bool = True, **kw) -> Agent:
    owner = get_user_model().objects.create_user(address.split("@")[0]) if user else None
    return Agent.objects.create(
        name=name or address.split("@")[0].title(), address=address, user=owner, **kw
    )


def make_interaction(mailbox: Mailbox, **kw) -> Interaction:
    uid = next(_uid)
    fields = {
        "node_id": "node-a",
        "uidvalidity": 1,
        "uid": uid,
        "message_id": f"<m{uid}@customer.test>",
        "to_addr": mailbox.address,
        "customer": f"c{uid}@customer.test",
        "subject": f"Question {uid}",
        "arrival_time": timezone.now() - timedelta(minutes=5),
    }
    fields.update(kw)
    return Interaction.objects.create(mailbox=mailbox, **fields)


def bearer(agent_or_user) -> dict[str, str]:
    user = getattr(agent_or_user, "user", agent_or_user)
    return {"HTTP_AUTHORIZATION": f"Bearer {agents.issue_token(user)}"}


# --- tokens and auth ------------------------------------------------------------------


def test_tokens_are_stored_only_as_hashes():
    alice = make_agent("alice@example.test")
    key = agents.issue_token(alice.user, name="laptop")
    row = ApiToken.objects.get(user=alice.user)
    assert row.name == "laptop"
    assert key not in row.key_hash and len(row.key_hash) == 64
    assert agents.user_for_token(key) == alice.user
    assert agents.user_for_token(key + "x") is None
    assert agents.user_for_token("") is None
    alice.user.is_active = False
    alice.user.save()
    assert agents.user_for_token(key) is None


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/agents"),
        ("get", "/api/agents/alice@example.test"),
        ("post", "/api/agents/alice@example.test/ready"),
        ("get", "/api/interactions"),
    ],
)
def test_token_auth_is_required(client, method, path):
    make_agent("alice@example.test")
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    bad = getattr(client, method)(path, HTTP_AUTHORIZATION="Bearer not-a-token")
    assert bad.status_code == 401


def test_status_and_live_page_need_a_login_by_default(client):
    assert client.get("/api/status").status_code == 401
    assert client.get("/").status_code == 302
    sue = make_agent("sue@example.test", is_supervisor=True)
    assert client.get("/api/status", **bearer(sue)).status_code == 200


def test_only_the_demo_opens_the_live_page_and_says_so(client, settings):
    settings.POSTROOM_LOGIN_REQUIRED = False
    assert client.get("/api/status").status_code == 200
    page = client.get("/")
    assert page.status_code == 200
    assert b"Demo mode: no login is required" in page.content
    # The rest stays closed.
    assert client.get("/api/interactions").status_code == 401
    assert client.get("/supervisor/").status_code == 302


def test_the_site_refuses_to_open_without_a_login_outside_the_demo():
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "POSTROOM_WEB_LOGIN_REQUIRED": "false"}
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='postroom.settings'; django.setup()"
    refused = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "only for the demo" in refused.stderr
    allowed = subprocess.run(
        [sys.executable, "-c", code], env={**env, "POSTROOM_DEMO": "true"}, capture_output=True
    )
    assert allowed.returncode == 0, allowed.stderr


def test_session_auth_is_accepted_and_csrf_checked():
    from django.test import Client

    alice = make_agent("alice@example.test")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)
    assert client.get("/api/agents").status_code == 200
    refused = client.post("/api/agents/alice@example.test/ready")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    client.get("/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    ok = client.post("/api/agents/alice@example.test/ready", HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200, ok.content
    assert ok.json()["ready"] is True


# --- agents ---------------------------------------------------------------------------


def test_ready_and_not_ready_change_the_row_and_journal(client):
    alice = make_agent("alice@example.test", skills=["billing"])
    auth = bearer(alice)

    response = client.post("/api/agents/alice@example.test/ready", **auth)
    assert response.status_code == 200
    body = response.json()
    assert body["address"] == "alice@example.test"
    assert body["ready"] is True
    assert body["skills"] == ["billing"]
    alice.refresh_from_db()
    assert alice.ready is True
    assert alice.state_changed_at is not None

    # Ready again is not a change: nothing more is journaled.
    assert client.post("/api/agents/alice@example.test/ready", **auth).status_code == 200
    response = client.post("/api/agents/alice@example.test/not-ready", **auth)
    assert response.json()["ready"] is False
    alice.refresh_from_db()
    assert alice.ready is False

    events = list(JournalEvent.objects.filter(agent=alice).values_list("kind", "detail"))
    assert events == [
        ("agent_ready", {"by": "alice"}),
        ("agent_not_ready", {"by": "alice"}),
    ]


def test_set_ready_reports_whether_it_changed():
    bob = make_agent("bob@example.test", user=False)
    now = timezone.now()
    assert agents.set_ready(bob, True, now=now, by="cli") is True
    assert agents.set_ready(bob, True, now=now, by="cli") is False
    bob.refresh_from_db()
    assert (bob.ready, bob.state_changed_at) == (True, now)
    event = JournalEvent.objects.get(agent=bob)
    assert (event.kind, event.detail) == ("agent_ready", {"by": "cli"})


def test_another_agents_token_is_forbidden(client):
    make_agent("alice@example.test")
    bob = make_agent("bob@example.test")
    response = client.post("/api/agents/alice@example.test/ready", **bearer(bob))
    assert response.status_code == 403
    assert response.json()["detail"]
    assert Agent.objects.get(address="alice@example.test").ready is False
    assert not JournalEvent.objects.exists()


def test_supervisor_and_staff_may_change_others(client):
    alice = make_agent("alice@example.test")
    sue = make_agent("sue@example.test", is_supervisor=True)
    response = client.post("/api/agents/alice@example.test/ready", **bearer(sue))
    assert response.status_code == 200
    assert response.json()["ready"] is True
    assert JournalEvent.objects.get(agent=alice).detail == {"by": "sue"}

    staff = get_user_model().objects.create_user("ops", is_staff=True)
    response = client.post("/api/agents/alice@example.test/not-ready", **bearer(staff))
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.ready is False


def test_agent_list_and_detail(client):
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test", skills=["billing", "de"], auto_answer=True)
    make_agent("bob@example.test")
    mine = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    make_interaction(mailbox, status=State.REPLIED, agent=alice)  # done: not current

    listing = client.get("/api/agents", **bearer(alice)).json()
    assert [a["address"] for a in listing] == ["alice@example.test"]
    staff = get_user_model().objects.create_user("ops", is_staff=True)
    listing = client.get("/api/agents", **bearer(staff)).json()
    assert [a["address"] for a in listing] == ["alice@example.test", "bob@example.test"]
    assert client.get("/api/agents/bob@example.test", **bearer(alice)).status_code == 403

    detail = client.get("/api/agents/alice@example.test", **bearer(alice)).json()
    assert detail["auto_answer"] is True
    assert detail["skills"] == ["billing", "de"]
    assert detail["current"] == [
        {"guid": str(mine.guid), "subject": mine.subject, "status": "delivered",
         "no_reply_due_at": None, "seconds_left": None}
    ]
    missing = client.get("/api/agents/nobody@example.test", **bearer(alice))
    assert missing.status_code == 404
    assert missing.json()["detail"]


# --- status and interactions ----------------------------------------------------------


def test_status_shows_queue_agents_and_counts(client):
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test", ready=True)
    sue = make_agent("sue@example.test", is_supervisor=True)
    alice.supervisors.add(sue)
    low = make_interaction(mailbox, priority=0)
    high = make_interaction(mailbox, priority=5)
    make_interaction(mailbox, status=State.ROUTED, agent=alice)
    make_interaction(mailbox, status=State.REPLIED, agent=alice, replied_at=timezone.now())

    assert client.get("/api/status", **bearer(alice)).status_code == 403
    body = client.get("/api/status", **bearer(sue)).json()
    assert [q["guid"] for q in body["queue"]] == [str(high.guid), str(low.guid)]
    first = body["queue"][0]
    assert first["mailbox"] == "support@example.test"
    assert first["customer"] == high.customer
    assert 290 <= first["waiting_seconds"] <= 400
    assert body["agents"][0]["ready"] is True
    assert [c["status"] for c in body["agents"][0]["current"]] == ["routed"]
    assert body["counts"]["queued"] == 2
    assert body["counts"]["closed"] == 0
    assert body["summary"] == {"queued": 2, "with_agents": 1, "replied_today": 1}


def test_interactions_are_paginated_newest_first_and_filtered(client):
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    now = timezone.now()
    made = [make_interaction(mailbox, arrival_time=now - timedelta(minutes=i)) for i in range(3)]
    make_interaction(mailbox, status=State.ROUTED, agent=alice, arrival_time=now - timedelta(1))

    staff = get_user_model().objects.create_user("ops", is_staff=True)
    mine = client.get("/api/interactions", **bearer(alice)).json()
    assert mine["count"] == 1  # an agent sees what it holds
    alice = staff  # and an administrator everything
    page = client.get("/api/interactions?limit=2", **bearer(alice)).json()
    assert page["count"] == 4
    assert [i["guid"] for i in page["items"]] == [str(made[0].guid), str(made[1].guid)]

    routed = client.get("/api/interactions?status=routed", **bearer(alice)).json()
    assert routed["count"] == 1
    assert routed["items"][0]["agent"] == "alice@example.test"

    bad = client.get("/api/interactions?status=lost", **bearer(alice))
    assert bad.status_code == 422
    assert bad.json()["detail"]


FIG3_FIELDS = {
    "guid", "node_id", "message_id", "to", "reply_to", "customer", "subject",
    "arrival_time", "auto_response_sent_at", "priority", "status", "agent", "answered_at",
    "delivered_at", "replied_at", "closed_at", "approval", "claim_node", "claim_time",
}  # fmt: skip


def test_interaction_detail_shows_every_fig3_field_and_the_journal(client):
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    ix = make_interaction(
        mailbox,
        reply_to="boss@customer.test",
        priority=3,
        status=State.ROUTED,
        agent=alice,
        claim_node="node-a",
        claim_time=timezone.now(),
    )
    JournalEvent.objects.create(at=timezone.now(), kind="received", interaction=ix)

    response = client.get(f"/api/interactions/{ix.guid}", **bearer(alice))
    assert response.status_code == 200
    body = response.json()
    assert body.keys() >= FIG3_FIELDS
    assert body["guid"] == str(ix.guid)
    assert body["to"] == "support@example.test"
    assert body["reply_to"] == "boss@customer.test"
    assert body["message_id"] == ix.message_id
    assert body["agent"] == "alice@example.test"
    assert body["status"] == "routed"
    assert body["claim_node"] == "node-a"
    assert body["approval"] is False
    assert [e["kind"] for e in body["journal"]] == ["received"]

    missing = client.get("/api/interactions/00000000-0000-0000-0000-000000000000", **bearer(alice))
    assert missing.status_code == 404


# --- answering ------------------------------------------------------------------------


def test_answer_wins_once_then_409(client):
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    ix = make_interaction(mailbox, status=State.ROUTED, agent=alice)
    auth = bearer(alice)

    first = client.post(f"/api/interactions/{ix.guid}/answer", **auth)
    assert first.status_code == 200, first.content
    assert first.json()["status"] == "answered"
    assert first.json()["answered_at"] is not None
    ix.refresh_from_db()
    assert (ix.status, ix.version) == ("answered", 1)

    second = client.post(f"/api/interactions/{ix.guid}/answer", **auth)
    assert second.status_code == 409
    assert "answered" in second.json()["detail"]
    assert list(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True)) == [
        "answered"
    ]


def test_answer_by_the_wrong_agent_is_refused(client):
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    bob = make_agent("bob@example.test")
    ix = make_interaction(mailbox, status=State.ROUTED, agent=alice)

    response = client.post(f"/api/interactions/{ix.guid}/answer", **bearer(bob))
    assert response.status_code == 403

    # A user who is no agent at all may not answer anything.
    staff = get_user_model().objects.create_user("ops", is_staff=True)
    assert client.post(f"/api/interactions/{ix.guid}/answer", **bearer(staff)).status_code == 403
    ix.refresh_from_db()
    assert (ix.status, ix.version) == ("routed", 0)


def test_answer_is_a_compare_and_set_on_the_version():
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    ix = make_interaction(mailbox, status=State.ROUTED, agent=alice)
    stale = Interaction.objects.get(pk=ix.pk)
    now = timezone.now()

    assert agents.answer(ix, alice, now=now) is True
    assert (ix.status, ix.answered_at, ix.version) == ("answered", now, 1)
    # A second process holding the old read loses even though its snapshot said "routed".
    assert agents.answer(stale, alice, now=now) is False
    assert JournalEvent.objects.filter(interaction=ix, kind="answered").count() == 1


# --- schema, docs, health -------------------------------------------------------------


def test_openapi_schema_lists_the_endpoints(client):
    assert client.get("/api/openapi.json").status_code == 302  # to the login page
    alice = make_agent("alice@example.test")
    assert client.get("/api/openapi.json", **bearer(alice)).status_code == 200
    client.force_login(alice.user)
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Postroom API"
    assert {
        "/api/status",
        "/api/agents",
        "/api/agents/{address}",
        "/api/agents/{address}/ready",
        "/api/agents/{address}/not-ready",
        "/api/interactions",
        "/api/interactions/{guid}",
        "/api/interactions/{guid}/answer",
    } <= schema["paths"].keys()
    assert "post" in schema["paths"]["/api/interactions/{guid}/answer"]
    assert "BearerToken" in schema["components"]["securitySchemes"]


def test_docs_page_uses_local_assets(client):
    assert client.get("/api/docs").status_code == 302
    client.force_login(make_agent("alice@example.test").user)
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    # Every script, style and icon from this site (not "cdn" anywhere: a random CSRF
    # token in the page may contain those letters).
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(src.startswith("/") and not src.startswith("//") for src in sources)
    assert client.get("/api/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/docs/assets/../../settings.py").status_code == 404


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_admin_pages_render(client):
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    ix = make_interaction(mailbox, status=State.ROUTED, agent=alice)
    JournalEvent.objects.create(at=timezone.now(), kind="received", interaction=ix)
    agents.issue_token(alice.user)
    admin = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(admin)
    for model in (
        "mailbox", "agent", "interaction", "outgoing", "outboundmessage", "quarantined",
        "journalevent", "apitoken", "auditentry",
    ):  # fmt: skip
        page = client.get(f"/admin/store/{model}/")
        assert page.status_code == 200, model
        assert b"s3cret-imap-password" not in page.content
    detail = client.get(f"/admin/store/interaction/{ix.pk}/change/")
    assert detail.status_code == 200
    assert b"received" in detail.content
    mailbox_page = client.get(f"/admin/store/mailbox/{mailbox.pk}/change/")
    assert b"s3cret-imap-password" not in mailbox_page.content


# --- issue 8: regressions ---------------------------------------------------------------


def test_an_agent_cannot_read_another_agents_interactions(client):
    """IDOR (#4): the API used to hand any interaction to any token."""
    mailbox = make_mailbox()
    alice = make_agent("alice@example.test")
    bob = make_agent("bob@example.test")
    theirs = make_interaction(mailbox, status=State.DELIVERED, agent=alice, subject="Alice's")
    detail = client.get(f"/api/interactions/{theirs.guid}", **bearer(bob))
    assert detail.status_code == 403
    listing = client.get("/api/interactions", **bearer(bob)).json()
    assert listing["count"] == 0 and "Alice's" not in str(listing)


def test_status_needs_a_login(client):
    """#1: the live page's feed was open to anonymous callers."""
    make_interaction(make_mailbox(), subject="Private matter")
    response = client.get("/api/status")
    assert response.status_code == 401
    assert b"Private matter" not in response.content


def test_an_absurd_offset_is_refused_not_a_server_error(client):
    """The fuzzer's find: an offset beyond every integer type answered 500."""
    staff = get_user_model().objects.create_user("ops", is_staff=True)
    response = client.get(
        "/api/interactions?offset=14558542774008144791076864", **bearer(staff)
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]


def test_a_nul_in_text_is_refused_not_a_server_error(client):
    """The fuzzer's find on PostgreSQL: a NUL in a rejection reason answered 500."""
    staff = get_user_model().objects.create_user("ops", is_staff=True)
    response = client.post(
        "/api/approvals/1/reject",
        {"reason": "a\x00b"},
        content_type="application/json",
        **bearer(staff),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "reason"
    agent = client.post("/api/agents/a%00b@example.test/ready", **bearer(staff))
    assert agent.status_code in (404, 422)
