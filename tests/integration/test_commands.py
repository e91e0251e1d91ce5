"""People's actions on interactions (store.commands) and their API endpoints and pages:
hang up, transfer, resolution, approval decisions; who may do what; CAS conflicts."""

from __future__ import annotations

import itertools
from email.message import EmailMessage
from html import escape

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store import commands
from postroom.store.commands import CommandError
from postroom.store.models import (
    Approval,
    Interaction,
    JournalEvent,
    Mailbox,
    OutboundMessage,
    WrapUpCode,
)
from tests.integration.test_api import bearer, make_agent, make_interaction, make_mailbox

pytestmark = pytest.mark.django_db

JSON = "application/json"

_reply_uid = itertools.count(1)


@pytest.fixture
def codes():
    WrapUpCode.objects.create(code="spam", label="Spam")
    WrapUpCode.objects.create(code="solved", label="Solved")
    WrapUpCode.objects.create(code="duplicate", label="Duplicate")


@pytest.fixture
def desk(codes):
    """A box, agents Alice and Bob, supervisor Sue (Alice's), and an unrelated supervisor."""
    mailbox = make_mailbox(skills=["support"])
    alice = make_agent("alice@example.test", skills=["support"])
    bob = make_agent("bob@example.test", skills=["billing"])
    sue = make_agent("sue@example.test", is_supervisor=True)
    sam = make_agent("sam@example.test", is_supervisor=True)
    alice.supervisors.add(sue)
    return mailbox, alice, bob, sue, sam


def staff_user(name: str = "ops"):
    return get_user_model().objects.create_user(name, is_staff=True)


def kinds(ix: Interaction) -> list[str]:
    return list(JournalEvent.objects.filter(interaction=ix).values_list("kind", flat=True))


def reply_raw(
    text: str = "Dear customer,\nyour parcel left today.\n", html: str | None = None
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "support@example.test"
    msg["To"] = "c1@customer.test"
    msg["Subject"] = "Re: Where is my parcel?"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def make_approval(ix: Interaction, approvers: list[str], raw: bytes | None = None) -> Approval:
    outbound, _ = Mailbox.objects.get_or_create(
        address="outbound@example.test",
        defaults={"login": "outbound", "kind": Mailbox.OUTBOUND},
    )
    reply = OutboundMessage.objects.create(
        mailbox=outbound,
        uidvalidity=1,
        uid=next(_reply_uid),
        message_id=f"<r{ix.pk}@agent.test>",
        sender=ix.agent.address if ix.agent_id else "",
        interaction=ix,
        outcome=OutboundMessage.ACCEPTED,
    )
    Interaction.objects.filter(pk=ix.pk).update(status=State.AWAITING_APPROVAL.value)
    ix.refresh_from_db()
    return Approval.objects.create(
        interaction=ix,
        reply=reply,
        raw=raw if raw is not None else reply_raw(),
        approvers=approvers,
        reason_held="alice@example.test is on probation",
        requested_at=timezone.now(),
    )


def fresh(ix: Interaction) -> Interaction:
    return Interaction.objects.select_related("mailbox", "agent").get(pk=ix.pk)


# --- hang up --------------------------------------------------------------------------


def test_hang_up_ends_the_interaction_with_the_code_journaled(desk):
    mailbox, alice, *_ = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    now = timezone.now()

    result = commands.hang_up(fresh(ix), by_user=alice.user, code="spam", now=now)

    assert (result.status, result.wrapup_code) == ("ended", "spam")
    ix.refresh_from_db()
    assert (ix.state, ix.wrapup_code, ix.outcome, ix.ended_at) == (
        State.ENDED,
        "spam",
        "wrapped_up",
        now,
    )
    assert ix.version == 1
    event = JournalEvent.objects.get(interaction=ix)
    assert event.kind == "hung_up"
    assert event.detail == {"by": "alice@example.test", "code": "spam"}
    assert event.agent == alice


@pytest.mark.parametrize("code", ["", "  ", "no-such-code"])
def test_hang_up_needs_an_existing_code(desk, code):
    mailbox, alice, *_ = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    with pytest.raises(CommandError) as refused:
        commands.hang_up(fresh(ix), by_user=alice.user, code=code, now=timezone.now())
    assert refused.value.status == 400
    ix.refresh_from_db()
    assert (ix.status, ix.wrapup_code, ix.version) == ("delivered", "", 0)
    assert kinds(ix) == []


def test_only_the_holder_a_supervisor_or_staff_may_hang_up(desk):
    mailbox, alice, bob, sue, _ = desk
    ix = make_interaction(mailbox, status=State.ANSWERED, agent=alice)
    with pytest.raises(CommandError) as refused:
        commands.hang_up(fresh(ix), by_user=bob.user, code="spam", now=timezone.now())
    assert refused.value.status == 403
    nobody = get_user_model().objects.create_user("nobody")
    with pytest.raises(CommandError):
        commands.hang_up(fresh(ix), by_user=nobody, code="spam", now=timezone.now())
    assert fresh(ix).status == "answered"

    commands.hang_up(fresh(ix), by_user=sue.user, code="spam", now=timezone.now())
    assert fresh(ix).status == "ended"
    other = make_interaction(mailbox, status=State.ROUTED, agent=alice)
    commands.hang_up(fresh(other), by_user=staff_user(), code="duplicate", now=timezone.now())
    other.refresh_from_db()
    assert (other.status, other.wrapup_code) == ("ended", "duplicate")
    assert JournalEvent.objects.get(interaction=other).detail["by"] == "ops"


def test_hang_up_is_refused_where_the_lifecycle_forbids_it_and_on_a_stale_read(desk):
    mailbox, alice, _, sue, _ = desk
    held = make_interaction(mailbox, status=State.AWAITING_APPROVAL, agent=alice)
    with pytest.raises(CommandError) as refused:
        commands.hang_up(fresh(held), by_user=alice.user, code="spam", now=timezone.now())
    assert refused.value.status == 409
    assert "awaiting_approval" in refused.value.message

    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    stale = fresh(ix)
    commands.hang_up(fresh(ix), by_user=alice.user, code="spam", now=timezone.now())
    with pytest.raises(CommandError) as lost:
        commands.hang_up(stale, by_user=sue.user, code="solved", now=timezone.now())
    assert lost.value.status == 409
    ix.refresh_from_db()
    assert (ix.wrapup_code, kinds(ix)) == ("spam", ["hung_up"])


# --- transfer -------------------------------------------------------------------------


def test_transfer_to_an_agent_requeues_it_for_that_agent(desk):
    mailbox, alice, bob, *_ = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice, queue="support")
    now = timezone.now()

    commands.transfer(fresh(ix), by_user=alice.user, to_agent="Bob@example.test", now=now)

    ix.refresh_from_db()
    assert ix.state is State.QUEUED
    assert ix.agent is None
    assert ix.target_agent == bob
    assert ix.queue == "support"
    assert ix.excluded_agents == ["alice@example.test"]
    event = JournalEvent.objects.get(interaction=ix)
    assert event.kind == "transferred"
    assert event.detail == {
        "by": "alice@example.test",
        "from_agent": "alice@example.test",
        "from_queue": "support",
        "to_agent": "bob@example.test",
    }


def test_transfer_to_a_queue_clears_a_named_agent(desk):
    mailbox, alice, bob, sue, _ = desk
    ix = make_interaction(mailbox, status=State.QUEUED, queue="support", target_agent=alice)

    commands.transfer(fresh(ix), by_user=sue.user, to_queue="billing", now=timezone.now())

    ix.refresh_from_db()
    assert (ix.state, ix.queue, ix.target_agent) == (State.QUEUED, "billing", None)
    detail = JournalEvent.objects.get(interaction=ix).detail
    assert (detail["from_queue"], detail["to_queue"], detail["by"]) == (
        "support",
        "billing",
        "sue@example.test",
    )

    # Transferred back to someone routing once avoided: the explicit target wins.
    ix.refresh_from_db()
    Interaction.objects.filter(pk=ix.pk).update(excluded_agents=["bob@example.test"])
    commands.transfer(fresh(ix), by_user=sue.user, to_agent="bob@example.test", now=timezone.now())
    ix.refresh_from_db()
    assert (ix.target_agent, ix.excluded_agents) == (bob, [])


@pytest.mark.parametrize(
    "target, status",
    [
        ({}, 400),
        ({"to_agent": "bob@example.test", "to_queue": "billing"}, 400),
        ({"to_agent": "nobody@example.test"}, 404),
        ({"to_queue": "no-such-queue"}, 400),
        ({"to_agent": "alice@example.test"}, 409),
    ],
)
def test_transfer_needs_exactly_one_real_target(desk, target, status):
    mailbox, alice, *_ = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    with pytest.raises(CommandError) as refused:
        commands.transfer(fresh(ix), by_user=alice.user, now=timezone.now(), **target)
    assert refused.value.status == status
    ix.refresh_from_db()
    assert (ix.status, ix.version) == ("delivered", 0)


def test_transfer_permissions_and_lifecycle(desk):
    mailbox, alice, bob, sue, sam = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    with pytest.raises(CommandError) as refused:
        commands.transfer(fresh(ix), by_user=bob.user, to_queue="billing", now=timezone.now())
    assert refused.value.status == 403
    # A queued interaction has no holder: only supervisors and staff move it.
    queued = make_interaction(mailbox)
    with pytest.raises(CommandError):
        commands.transfer(fresh(queued), by_user=alice.user, to_queue="billing", now=timezone.now())
    commands.transfer(fresh(queued), by_user=staff_user(), to_queue="billing", now=timezone.now())
    # A supervisor moves only the interactions of the agents it oversees.
    with pytest.raises(CommandError) as refused:
        commands.transfer(fresh(ix), by_user=sam.user, to_queue="billing", now=timezone.now())
    assert refused.value.status == 403
    commands.transfer(fresh(ix), by_user=sue.user, to_queue="billing", now=timezone.now())
    assert fresh(ix).status == "queued"

    held = make_interaction(mailbox, status=State.AWAITING_APPROVAL, agent=alice)
    with pytest.raises(CommandError) as illegal:
        commands.transfer(fresh(held), by_user=alice.user, to_queue="billing", now=timezone.now())
    assert illegal.value.status == 409


def test_known_queues_come_from_skills_rules_and_use():
    from postroom.store.models import Rule

    make_mailbox(skills=["support"])
    make_agent("alice@example.test", skills={"billing": 3, "de": 1})
    Rule.objects.create(name="vip", actions=[{"action": "queue", "value": "vip"}])
    make_interaction(Mailbox.objects.get(), queue="legacy")
    assert commands.known_queues() == ["billing", "de", "legacy", "support", "unassigned", "vip"]


# --- resolution -----------------------------------------------------------------------


def test_resolution_only_on_replied_or_closed(desk):
    mailbox, alice, _, sue, _ = desk
    replied = make_interaction(
        mailbox, status=State.REPLIED, agent=alice, replied_at=timezone.now()
    )
    commands.set_resolution(fresh(replied), by_user=alice.user, code="solved", now=timezone.now())
    replied.refresh_from_db()
    assert (replied.resolution_code, replied.status, replied.version) == ("solved", "replied", 0)
    # Changing it later is allowed and journaled with the previous code.
    commands.set_resolution(fresh(replied), by_user=sue.user, code="duplicate", now=timezone.now())
    events = JournalEvent.objects.filter(interaction=replied, kind="resolution_set")
    assert [e.detail for e in events] == [
        {"by": "alice@example.test", "code": "solved"},
        {"by": "sue@example.test", "code": "duplicate", "previous": "solved"},
    ]

    closed = make_interaction(mailbox, status=State.CLOSED, agent=alice)
    commands.set_resolution(fresh(closed), by_user=alice.user, code="solved", now=timezone.now())
    assert fresh(closed).resolution_code == "solved"

    delivered = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    with pytest.raises(CommandError) as refused:
        commands.set_resolution(
            fresh(delivered), by_user=alice.user, code="solved", now=timezone.now()
        )
    assert refused.value.status == 409
    with pytest.raises(CommandError) as bad:
        commands.set_resolution(fresh(closed), by_user=alice.user, code="nope", now=timezone.now())
    assert bad.value.status == 400
    assert fresh(delivered).resolution_code == ""


# --- approvals ------------------------------------------------------------------------


def test_approve_records_the_decision_and_leaves_the_interaction(desk):
    mailbox, alice, _, sue, _ = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    approval = make_approval(ix, ["sue@example.test"])
    now = timezone.now()

    result = commands.decide_approval(approval, by_user=sue.user, decision="approve", now=now)

    approval.refresh_from_db()
    assert result.state == approval.state == Approval.APPROVED
    assert (approval.decided_by, approval.decided_via, approval.decided_at) == (
        "sue@example.test",
        "web",
        now,
    )
    assert approval.edited_text == "" and approval.applied_at is None
    ix.refresh_from_db()
    assert (ix.status, ix.version) == ("awaiting_approval", 0)
    event = JournalEvent.objects.get(interaction=ix)
    assert event.kind == "approval_approve"
    assert event.detail == {
        "by": "sue@example.test",
        "via": "web",
        "approval": approval.pk,
    }


def test_two_decisions_one_wins(desk):
    mailbox, alice, _, sue, sam = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    approval = make_approval(ix, ["sue@example.test", "sam@example.test"])
    # Both read it while pending.
    first, second = Approval.objects.get(pk=approval.pk), Approval.objects.get(pk=approval.pk)
    commands.decide_approval(
        first, by_user=sue.user, decision="reject", reason="Too blunt", now=timezone.now()
    )
    with pytest.raises(CommandError) as lost:
        commands.decide_approval(second, by_user=sam.user, decision="approve", now=timezone.now())
    assert lost.value.status == 409
    assert "rejected by sue@example.test" in lost.value.message
    approval.refresh_from_db()
    assert (approval.state, approval.rejection_reason, approval.decided_by) == (
        "rejected",
        "Too blunt",
        "sue@example.test",
    )
    assert kinds(ix) == ["approval_reject"]
    assert JournalEvent.objects.get(interaction=ix).detail["reason"] == "Too blunt"


def test_only_listed_approvers_or_staff_decide(desk):
    mailbox, alice, bob, sue, sam = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    approval = make_approval(ix, ["SUE@example.test"])
    for user in (sam.user, bob.user, alice.user, get_user_model().objects.create_user("x")):
        with pytest.raises(CommandError) as refused:
            commands.decide_approval(approval, by_user=user, decision="approve", now=timezone.now())
        assert refused.value.status == 403
    commands.decide_approval(approval, by_user=staff_user(), decision="approve", now=timezone.now())
    approval.refresh_from_db()
    assert (approval.state, approval.decided_by) == ("approved", "ops")


def test_a_writer_may_not_decide_their_own_reply_even_as_a_listed_approver_or_staff(desk):
    mailbox, alice, bob, sue, sam = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=sue)
    approval = make_approval(ix, ["sue@example.test", "sam@example.test"])
    sue.user.is_staff = True
    sue.user.save()
    for who in (sue.user, "sue@example.test", "SUE@example.test"):
        for decision in ("approve", "reject", "edit"):
            with pytest.raises(CommandError) as refused:
                commands.decide_approval(approval, by_user=who, decision=decision, text="x", reason="y", now=timezone.now())
            assert refused.value.status == 403 and "writer" in refused.value.message
    approval.refresh_from_db()
    assert approval.state == Approval.PENDING
    commands.decide_approval(approval, by_user=sam.user, decision="approve", now=timezone.now())


def test_edit_needs_text_and_reject_needs_a_reason(desk):
    mailbox, alice, _, sue, _ = desk
    approval = make_approval(
        make_interaction(mailbox, status=State.DELIVERED, agent=alice), ["sue@example.test"]
    )
    for decision, extra in [
        ("edit", {}),
        ("edit", {"text": "  "}),
        ("reject", {}),
        ("reject", {"reason": " "}),
        ("maybe", {}),
    ]:
        with pytest.raises(CommandError) as refused:
            commands.decide_approval(
                approval, by_user=sue.user, decision=decision, now=timezone.now(), **extra
            )
        assert refused.value.status == 400
    assert Approval.objects.get(pk=approval.pk).state == "pending"

    commands.decide_approval(
        approval,
        by_user=sue.user,
        decision="edit",
        text="Dear customer,\nit ships today.",
        now=timezone.now(),
    )
    approval.refresh_from_db()
    assert (approval.state, approval.edited_text) == ("approved", "Dear customer,\nit ships today.")


def test_a_decision_by_mail_names_the_approver_address(desk):
    mailbox, alice, _, sue, _ = desk
    approval = make_approval(
        make_interaction(mailbox, status=State.DELIVERED, agent=alice), ["sue@example.test"]
    )
    with pytest.raises(CommandError):
        commands.decide_approval(
            approval,
            by_user="mallory@evil.test",
            decision="approve",
            via="mail",
            now=timezone.now(),
        )
    commands.decide_approval(
        approval, by_user="sue@example.test", decision="approve", via="mail", now=timezone.now()
    )
    approval.refresh_from_db()
    assert (approval.decided_by, approval.decided_via) == ("sue@example.test", "mail")


# --- API ------------------------------------------------------------------------------


def test_api_hangup(client, desk):
    mailbox, alice, bob, *_ = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    url = f"/api/interactions/{ix.guid}/hangup"

    bad = client.post(url, {"code": "nope"}, content_type=JSON, **bearer(alice))
    assert bad.status_code == 400
    assert "nope" in bad.json()["detail"]
    assert client.post(url, {}, content_type=JSON, **bearer(alice)).status_code == 422
    other = client.post(url, {"code": "spam"}, content_type=JSON, **bearer(bob))
    assert other.status_code == 403 and other.json()["detail"]

    ok = client.post(url, {"code": "spam"}, content_type=JSON, **bearer(alice))
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert (body["status"], body["wrapup_code"], body["outcome"]) == ("ended", "spam", "wrapped_up")
    assert [e["kind"] for e in body["journal"]] == ["hung_up"]
    again = client.post(url, {"code": "spam"}, content_type=JSON, **bearer(alice))
    assert again.status_code == 409
    missing = client.post(
        "/api/interactions/00000000-0000-0000-0000-000000000000/hangup",
        {"code": "spam"},
        content_type=JSON,
        **bearer(alice),
    )
    assert missing.status_code == 404


def test_api_transfer(client, desk):
    mailbox, alice, bob, sue, _ = desk
    ix = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    url = f"/api/interactions/{ix.guid}/transfer"
    both = client.post(
        url, {"agent": "bob@example.test", "queue": "billing"}, content_type=JSON, **bearer(alice)
    )
    assert both.status_code == 400
    unknown = client.post(url, {"agent": "zed@example.test"}, content_type=JSON, **bearer(alice))
    assert unknown.status_code == 404

    ok = client.post(url, {"agent": "bob@example.test"}, content_type=JSON, **bearer(alice))
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert (body["status"], body["agent"], body["target_agent"]) == (
        "queued",
        None,
        "bob@example.test",
    )
    assert body["journal"][-1]["detail"]["to_agent"] == "bob@example.test"

    moved = client.post(url, {"queue": "billing"}, content_type=JSON, **bearer(sue))
    assert moved.status_code == 200
    assert (moved.json()["queue"], moved.json()["target_agent"]) == ("billing", None)


def test_api_resolution_and_codes(client, desk):
    mailbox, alice, *_ = desk
    replied = make_interaction(
        mailbox, status=State.REPLIED, agent=alice, replied_at=timezone.now()
    )
    delivered = make_interaction(mailbox, status=State.DELIVERED, agent=alice)

    codes = client.get("/api/wrapup-codes", **bearer(alice)).json()
    assert codes == [
        {"code": "duplicate", "label": "Duplicate"},
        {"code": "solved", "label": "Solved"},
        {"code": "spam", "label": "Spam"},
    ]
    ok = client.post(
        f"/api/interactions/{replied.guid}/resolution",
        {"code": "solved"},
        content_type=JSON,
        **bearer(alice),
    )
    assert ok.status_code == 200
    assert ok.json()["resolution_code"] == "solved"
    refused = client.post(
        f"/api/interactions/{delivered.guid}/resolution",
        {"code": "solved"},
        content_type=JSON,
        **bearer(alice),
    )
    assert refused.status_code == 409
    assert "delivered" in refused.json()["detail"]


def test_api_approvals_list_shows_the_reply_text(client, desk):
    mailbox, alice, bob, sue, sam = desk
    mine = make_approval(
        make_interaction(mailbox, status=State.DELIVERED, agent=alice, subject="Parcel"),
        ["sue@example.test"],
    )
    html_only = EmailMessage()
    html_only["Subject"] = "Re: Invoice"
    html_only["From"] = "support@example.test"
    html_only.set_content(
        "<p>Hello&nbsp;there,</p><p>the invoice is <b>attached</b>.</p><script>x()</script>",
        subtype="html",
    )
    theirs = make_approval(
        make_interaction(mailbox, status=State.DELIVERED, agent=bob),
        ["sam@example.test"],
        html_only.as_bytes(),
    )

    listing = client.get("/api/approvals", **bearer(sue)).json()
    assert [a["id"] for a in listing] == [mine.pk]
    item = listing[0]
    assert item["text"] == "Dear customer,\nyour parcel left today."
    assert (item["reply_subject"], item["subject"], item["agent"], item["agent_name"]) == (
        "Re: Where is my parcel?",
        "Parcel",
        "alice@example.test",
        "Alice",
    )
    assert item["state"] == "pending" and item["reason_held"]

    everything = client.get("/api/approvals?state=pending", **bearer(staff_user())).json()
    assert {a["id"] for a in everything} == {mine.pk, theirs.pk}
    html_item = next(a for a in everything if a["id"] == theirs.pk)
    assert html_item["text"] == "Hello there,\n\nthe invoice is attached."
    # Approvals are for supervisors and administrators.
    assert client.get("/api/approvals", **bearer(bob)).status_code == 403
    assert client.get("/api/approvals?state=approved", **bearer(sue)).json() == []
    assert client.get("/api/approvals?state=lost", **bearer(sue)).status_code == 422


def test_api_approve_edit_and_reject(client, desk):
    mailbox, alice, bob, sue, sam = desk
    plain = make_approval(
        make_interaction(mailbox, status=State.DELIVERED, agent=alice), ["sue@example.test"]
    )
    edited = make_approval(
        make_interaction(mailbox, status=State.DELIVERED, agent=alice), ["sue@example.test"]
    )
    rejected = make_approval(
        make_interaction(mailbox, status=State.DELIVERED, agent=alice), ["sue@example.test"]
    )

    assert (
        client.post(
            f"/api/approvals/{plain.pk}/approve", content_type=JSON, **bearer(sam)
        ).status_code
        == 403
    )
    ok = client.post(f"/api/approvals/{plain.pk}/approve", content_type=JSON, **bearer(sue))
    assert ok.status_code == 200, ok.content
    assert (ok.json()["state"], ok.json()["decided_by"], ok.json()["edited_text"]) == (
        "approved",
        "sue@example.test",
        "",
    )
    second = client.post(f"/api/approvals/{plain.pk}/approve", content_type=JSON, **bearer(sue))
    assert second.status_code == 409
    assert "already approved" in second.json()["detail"]

    empty = client.post(
        f"/api/approvals/{edited.pk}/approve", {"text": " "}, content_type=JSON, **bearer(sue)
    )
    assert empty.status_code == 400
    ok = client.post(
        f"/api/approvals/{edited.pk}/approve",
        {"text": "Better words."},
        content_type=JSON,
        **bearer(sue),
    )
    assert ok.status_code == 200
    assert (ok.json()["state"], ok.json()["edited_text"]) == ("approved", "Better words.")

    assert (
        client.post(
            f"/api/approvals/{rejected.pk}/reject", {}, content_type=JSON, **bearer(sue)
        ).status_code
        == 422
    )
    assert (
        client.post(
            f"/api/approvals/{rejected.pk}/reject", {"reason": ""}, content_type=JSON, **bearer(sue)
        ).status_code
        == 422
    )
    ok = client.post(
        f"/api/approvals/{rejected.pk}/reject",
        {"reason": "Wrong tone"},
        content_type=JSON,
        **bearer(sue),
    )
    assert ok.status_code == 200
    assert (ok.json()["state"], ok.json()["rejection_reason"]) == ("rejected", "Wrong tone")
    assert (
        client.post("/api/approvals/999999/approve", content_type=JSON, **bearer(sue)).status_code
        == 404
    )
    # None of it touched the interactions.
    assert set(Interaction.objects.values_list("status", flat=True)) == {"awaiting_approval"}


def test_api_me_and_console(client, desk):
    mailbox, alice, bob, sue, _ = desk
    offered = make_interaction(mailbox, status=State.ROUTED, agent=alice)
    held = make_interaction(mailbox, status=State.DELIVERED, agent=alice)
    replied = make_interaction(
        mailbox, status=State.REPLIED, agent=alice, replied_at=timezone.now()
    )
    queued = make_interaction(
        mailbox, queue="support", priority=50, priority_reasons=[["box default", 0], ["contact vip", 50]],
        rules={"hits": ["vip customers"], "misses": ["spam filter"]},
    )  # fmt: skip

    me = client.get("/api/me", **bearer(alice)).json()
    assert me["agent"]["address"] == "alice@example.test"
    assert [i["guid"] for i in me["offered"]] == [str(offered.guid)]
    assert [i["guid"] for i in me["current"]] == [str(held.guid)]
    assert [i["guid"] for i in me["replied"]] == [str(replied.guid)]
    assert client.get("/api/me", **bearer(staff_user())).status_code == 403

    assert client.get("/api/console", **bearer(alice)).status_code == 403
    console = client.get("/api/console", **bearer(sue)).json()
    assert [q["queue"] for q in console["queues"]] == ["support"]
    item = console["queues"][0]["items"][0]
    assert item["guid"] == str(queued.guid)
    assert item["priority_reasons"] == [["box default", 0], ["contact vip", 50]]
    assert item["rules"] == {"hits": ["vip customers"], "misses": ["spam filter"]}
    loads = {a["address"]: a["load"] for a in console["agents"]}
    assert loads["alice@example.test"] == 2


def test_openapi_lists_the_new_endpoints(client):
    client.force_login(staff_user())
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {
        "/api/interactions/{guid}/hangup",
        "/api/interactions/{guid}/transfer",
        "/api/interactions/{guid}/resolution",
        "/api/wrapup-codes",
        "/api/approvals",
        "/api/approvals/{approval_id}/approve",
        "/api/approvals/{approval_id}/reject",
        "/api/me",
        "/api/console",
    } <= paths.keys()


# --- pages ----------------------------------------------------------------------------


def test_pages_need_a_login_at_accounts_login(client, desk):
    for path in ("/agent/", "/supervisor/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="password"' in page.content


def test_login_lands_on_the_right_page(client, desk):
    _, alice, _, sue, _ = desk
    for agent, home in ((alice, "/agent/"), (sue, "/supervisor/")):
        agent.user.set_password("pw")
        agent.user.save()
        response = client.post(
            "/accounts/login/", {"username": agent.user.username, "password": "pw"}
        )
        assert response.status_code == 302
        assert response["Location"] == home
        assert client.get(home).status_code == 200
        client.post("/accounts/logout/")
    wrong = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200
    assert b"login-errors" in wrong.content


def test_page_permissions(client, desk):
    mailbox, alice, bob, sue, _ = desk
    ix = make_interaction(
        mailbox, status=State.DELIVERED, agent=alice, priority=7, priority_reasons=[["contact gold", 7]],
        rules={"hits": [{"name": "gold customers", "actions": "add_priority"}], "misses": ["spam"]},
    )  # fmt: skip
    JournalEvent.objects.create(
        at=timezone.now(), kind="received", interaction=ix, detail={"uid": 1}
    )

    client.force_login(bob.user)
    assert client.get("/supervisor/").status_code == 403
    assert client.get(f"/interactions/{ix.guid}/").status_code == 403
    assert client.get("/agent/").status_code == 200

    client.force_login(alice.user)
    page = client.get(f"/interactions/{ix.guid}/")
    assert page.status_code == 200
    html = page.content.decode()
    for text in ("gold customers", "spam", "contact gold", "+7", "received", "Answer time"):
        assert text in html, text
    assert escape(ix.message_id) in html

    client.force_login(staff_user())
    assert client.get("/agent/").status_code == 403  # no agent behind this user
    assert client.get("/supervisor/").status_code == 200
    assert client.get(f"/interactions/{ix.guid}/").status_code == 200
    assert client.get("/interactions/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_the_interaction_page_shows_where_the_answer_goes(client, desk):
    mailbox, alice, _, sue, _ = desk
    client.force_login(sue.user)
    plain = make_interaction(mailbox, status=State.DELIVERED, agent=alice, customer="carol@customer.test")
    page = client.get(f"/interactions/{plain.guid}/").content.decode()
    assert "answer goes to carol@customer.test" in page and "another domain" not in page
    hijack = make_interaction(
        mailbox, status=State.DELIVERED, agent=alice, customer="carol@customer.test", reply_to="pay@elsewhere.test"
    )
    page = client.get(f"/interactions/{hijack.guid}/").content.decode()
    assert "answer goes to pay@elsewhere.test (Reply-To in another domain than the sender's)" in page
