"""Every page and every API endpoint, as six people, against what each may see and do.

The lists are generated, not written down: pages from the URL conf, endpoints from the
OpenAPI schema (with the role each declares, ``x-postroom-role``). A page without a
declared role, an endpoint without one, or a URL parameter this test cannot fill, fails
here; so a new endpoint cannot escape the matrix.

The objects: an interaction routed to Alice (an agent supervised by Sue), with a mail
Postroom sent for it (with an attachment), and a held reply of Alice's that Sue approves.
The people: anonymous, Bob (another agent), Tom (a supervisor of Bob's, not Alice's), Rita
(an agent whose group may read the support box: she reads Alice's interaction, in every
page and GET, but may not act on it), Alice, Sue, and an administrator. Whoever may not
see Alice's things gets 401 (no login) or 403 (login, not theirs) on every URL that names
them, and no response to them carries the marker text of Alice's mail.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store import agents as agent_state
from postroom.store.models import (
    Agent,
    AgentGroup,
    Approval,
    EvaluationCriterion,
    Interaction,
    Mailbox,
    Node,
    OutboundMessage,
    Outgoing,
    Quarantined,
    WrapUpCode,
)
from postroom.store.permissions import Role
from postroom.web.api import api

pytestmark = pytest.mark.django_db

MARKER = "Zebra-7f3a private order"
_uid = itertools.count(1)


@dataclass
class Person:
    name: str
    role: Role
    # Related to Alice's interaction and agent row (may see and act on them).
    related: bool
    # Listed approver of Alice's held reply (or an administrator).
    approver: bool
    client: Client
    token: str | None = None
    # Reads Alice's interaction through a box right, without acting on it.
    reader: bool = False


def _interaction(mailbox: Mailbox, **kw: Any) -> Interaction:
    uid = next(_uid)
    return Interaction.objects.create(
        mailbox=mailbox,
        node_id="n",
        uidvalidity=1,
        uid=uid,
        message_id=f"<m{uid}@customer.test>",
        to_addr=mailbox.address,
        customer=f"c{uid}@customer.test",
        customer_name=MARKER,
        subject=MARKER,
        arrival_time=timezone.now() - timedelta(minutes=5),
        **kw,
    )


@pytest.fixture
def world() -> dict[str, Any]:
    users = get_user_model().objects
    mailbox = Mailbox.objects.create(address="support@example.test", login="support")
    WrapUpCode.objects.create(code="resolved", label="Resolved")

    def agent(address: str, **kw: Any) -> Agent:
        user = users.create_user(address.split("@")[0], password="not used here 123")
        return Agent.objects.create(name=address, address=address, user=user, **kw)

    alice, bob = agent("alice@example.test"), agent("bob@example.test")
    sue = agent("sue@example.test", is_supervisor=True)
    tom = agent("tom@example.test", is_supervisor=True)
    rita = agent("rita@example.test")
    alice.supervisors.add(sue)
    bob.supervisors.add(tom)
    readers = AgentGroup.objects.create(name="Support readers")
    readers.members.add(rita)
    readers.boxes.add(mailbox)
    EvaluationCriterion.objects.create(code="tone", label="Tone", weight=1)
    # The administrator also works as an agent, so agent-only actions reach their checks.
    boss = agent("boss@example.test")
    boss.user.is_staff = boss.user.is_superuser = True
    boss.user.save()

    routed = _interaction(mailbox, status=State.ROUTED.value, agent=alice)
    sent = Outgoing.objects.create(
        key=f"auto_response:{routed.guid}",
        kind=Outgoing.AUTO_RESPONSE,
        interaction=routed,
        envelope_from="",
        recipients=[routed.customer],
        message_id="<ar1@postroom.example.test>",
        raw=(
            f"From: support@example.test\r\nTo: {routed.customer}\r\nSubject: Re: {MARKER}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            f"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{MARKER}</p>\r\n"
            "--b\r\nContent-Type: text/plain; name=note.txt\r\n"
            f"Content-Disposition: attachment; filename=note.txt\r\n\r\n{MARKER}\r\n--b--\r\n"
        ).encode(),
        next_attempt_at=timezone.now(),
    )
    held = _interaction(mailbox, status=State.AWAITING_APPROVAL.value, agent=alice)
    reply = OutboundMessage.objects.create(
        mailbox=mailbox, uidvalidity=1, uid=1, outcome=OutboundMessage.ACCEPTED
    )
    raw = f"From: support@example.test\r\nSubject: Re: {MARKER}\r\n\r\n{MARKER}\r\n".encode()
    approval = Approval.objects.create(
        interaction=held,
        reply=reply,
        raw=raw,
        approvers=[sue.address],
        requested_at=timezone.now(),
    )

    # Quarantined mail is the supervisors' to see and release (its reason may name a customer).
    held_mail = Quarantined.objects.create(
        mailbox=mailbox, uidvalidity=1, uid=99, folder="Postroom-Quarantine", reason="unreadable", moved_at=timezone.now()
    )

    def person(
        name: str, role: Role, who: Agent | None, related: bool, approver: bool, reader: bool = False
    ) -> Person:
        client = Client()
        token = None
        if who is not None:
            client.force_login(who.user)
            token = agent_state.issue_token(who.user)
        return Person(name, role, related, approver, client, token, reader)

    # Those who may not see Alice's things go first: nobody they watch has changed yet.
    people = [
        person("anonymous", Role.ANONYMOUS, None, False, False),
        person("another agent", Role.AGENT, bob, False, False),
        person("supervisor of someone else", Role.SUPERVISOR, tom, False, False),
        person("reader of the box", Role.AGENT, rita, False, False, reader=True),
        person("agent", Role.AGENT, alice, True, False),
        person("supervisor", Role.SUPERVISOR, sue, True, True),
        person("administrator", Role.ADMINISTRATOR, boss, True, True),
    ]
    return {
        "people": people,
        "params": {
            "guid": str(routed.guid),
            "address": alice.address,
            "approval_id": str(approval.pk),
            "row_id": str(held_mail.pk),
            "name": "swagger-ui.css",
            "asset_name": "base.css",
            "ref": f"out-{sent.pk}",
            "index": "1",
        },
        # Which relation a URL parameter implies ("reads": related, or a reader of the box;
        # a page or endpoint that acts on the interaction needs "related").
        "needs": {"guid": "reads", "address": "related", "approval_id": "approver"},
    }


def _relation(person: Person, relation: str, acts: bool) -> bool:
    if relation == "reads":
        return person.related or (person.reader and not acts)
    return getattr(person, relation)


def _allowed(
    person: Person, role: Role, names: list[str], needs: dict[str, str], acts: bool = False
) -> bool:
    if not person.role >= role or person.role is Role.ANONYMOUS:
        return False
    return all(_relation(person, needs[n], acts) for n in names if n in needs)


def _may_read_marker(person: Person, acts: bool) -> bool:
    """Who may see Alice's mail in a response: those related, and the box's reader where
    it only reads."""
    return person.related or (person.reader and not acts)


def _fill(template: str, params: dict[str, str], pattern: str) -> tuple[str, list[str]]:
    names = re.findall(pattern, template)
    missing = [n for n in names if n not in params]
    assert not missing, f"{template}: no fixture for parameter(s) {missing}; add one to world()"
    return re.sub(pattern, lambda m: params[m.group(1)], template), names


def _body(operation: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any] | None:
    """The smallest valid JSON body: the required properties, with plausible values."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    ref = content["schema"].get("$ref", "")
    schema = schemas[ref.rsplit("/", 1)[-1]] if ref else content["schema"]
    values = {"code": "resolved", "reason": "Not like this", "text": "Edited", "queue": "x"}
    return {name: values.get(name, "x") for name in schema.get("required", [])}


def _api_operations() -> list[tuple[str, str, dict[str, Any]]]:
    schema = api.get_openapi_schema()
    return [
        (method, path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_endpoint_declares_its_role():
    operations = _api_operations()
    assert len(operations) >= 16
    for method, path, operation in operations:
        assert operation.get("x-postroom-role") in {r.label for r in Role}, (method, path)


def test_every_api_endpoint_as_everyone(world):
    schemas = api.get_openapi_schema()["components"]["schemas"]
    failures = []
    for method, path, operation in _api_operations():
        role = Role[operation["x-postroom-role"].upper()]
        url, names = _fill(path, world["params"], r"\{(\w+)\}")
        body = _body(operation, schemas)
        for person in world["people"]:
            headers = {"HTTP_AUTHORIZATION": f"Bearer {person.token}"} if person.token else {}
            # As a token holder (no session), so that CSRF is not what refuses a POST.
            caller = Client()
            kwargs: dict[str, Any] = {"content_type": "application/json"}
            if body is not None:
                kwargs["data"] = body
            response = getattr(caller, method)(url, **headers, **kwargs)
            status = response.status_code
            text = response.content.decode(errors="replace")
            acts = method != "get"
            if person.role is Role.ANONYMOUS:
                ok = status == 401
            elif _allowed(person, role, names, world["needs"], acts):
                ok = status not in (401, 403) and status < 500
            else:
                ok = status == 403
            if ok and not _may_read_marker(person, acts) and status == 200 and MARKER in text:
                ok = False
            if not ok:
                failures.append(f"{method.upper()} {url} as {person.name}: {status} {text[:120]}")
    assert not failures, "\n".join(failures)


def _page_patterns() -> list[tuple[str, Any, str]]:
    def walk(patterns: list[Any], prefix: str) -> Any:
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern), p.callback, p.name or ""

    return list(walk(get_resolver().url_patterns, "/"))


def test_every_page_as_everyone(world):
    api_paths = {path for _, path, _ in _api_operations()}
    failures = []
    checked = 0
    for route, view, name in _page_patterns():
        if route.startswith("/admin/") or name == "api-root":
            continue  # the admin: below; api-root: ninja's, answers nothing (checked below)
        as_api = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        if as_api in api_paths:
            continue  # an endpoint: the test above
        assert hasattr(view, "postroom_access"), f"{route}: declare @page(Role.X) or @public"
        role = view.postroom_access
        acts = getattr(view, "postroom_handles", False)
        url, names = _fill(route, world["params"], r"<(?:\w+:)?(\w+)>")
        for person in world["people"]:
            response = person.client.get(url)
            status = response.status_code
            body = b"".join(response) if response.streaming else response.content
            text = body.decode(errors="replace")
            if role is None:  # public
                ok = status in (200, 302, 405)  # login: on to your page; logout: POST only
            elif person.role is Role.ANONYMOUS:
                ok = status == 302 and "/accounts/login/" in response["Location"]
            elif _allowed(person, role, names, world["needs"], acts):
                ok = status == 200
            else:
                ok = status == 403
            if ok and not _may_read_marker(person, acts) and MARKER in text:
                ok = False
            if not ok:
                failures.append(f"GET {url} as {person.name}: {status} {text[:120]}")
            checked += 1
    assert checked >= 7 * 14
    assert not failures, "\n".join(failures)
    for person in world["people"]:
        assert person.client.get("/api/").status_code == 404


def test_cutting_a_nodes_link_as_everyone(world):
    """The nodes page's one action (POST /nodes/, cut or heal a node's database link):
    supervisors, whoever they oversee, and administrators; nobody else; never without the
    form's CSRF token."""
    now = timezone.now()
    Node.objects.create(
        node_id="node-x", hostname="h", pid=1, started_at=now, heartbeat_at=now, lease_until=now
    )
    failures = []
    for person in world["people"]:
        response = person.client.post("/nodes/", {"node": "node-x", "link": "cut"})
        link = Node.objects.get(node_id="node-x").link
        if person.role is Role.ANONYMOUS:
            ok = response.status_code == 302 and "/accounts/login/" in response["Location"] and link == "up"
        elif person.role >= Role.SUPERVISOR:
            ok = response.status_code == 302 and response["Location"] == "/nodes/" and link == "cut"
        else:
            ok = response.status_code == 403 and link == "up"
        if not ok:
            failures.append(f"POST /nodes/ as {person.name}: {response.status_code}, link {link}")
        Node.objects.filter(node_id="node-x").update(link="up")
    assert not failures, "\n".join(failures)

    admin = next(p for p in world["people"] if p.role is Role.ADMINISTRATOR)
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = admin.client.cookies  # the same session, without the form's token
    assert strict.post("/nodes/", {"node": "node-x", "link": "cut"}).status_code == 403
    assert Node.objects.get(node_id="node-x").link == "up"
    # An unknown node, an unknown link state: refused, nothing written.
    assert admin.client.post("/nodes/", {"node": "node-y", "link": "cut"}).status_code == 404
    assert admin.client.post("/nodes/", {"node": "node-x", "link": "down"}).status_code == 400
    assert Node.objects.get(node_id="node-x").link == "up"


def test_forgetting_a_node_as_everyone(world):
    """The nodes page's other action (POST /nodes/ forget=yes, as `postroom node forget`):
    supervisors and administrators; nobody else; never a live node."""
    now = timezone.now()
    failures = []
    for person in world["people"]:
        Node.objects.update_or_create(
            node_id="node-x",
            defaults={"hostname": "h", "pid": 1, "started_at": now, "heartbeat_at": now, "lease_until": now,
                      "stopped_at": None, "epoch": 1},
        )
        response = person.client.post("/nodes/", {"node": "node-x", "forget": "yes"})
        stopped = Node.objects.get(node_id="node-x").stopped_at is not None
        if person.role is Role.ANONYMOUS:
            ok = response.status_code == 302 and "/accounts/login/" in response["Location"] and not stopped
        elif person.role >= Role.SUPERVISOR:
            ok = response.status_code == 302 and response["Location"] == "/nodes/" and stopped
        else:
            ok = response.status_code == 403 and not stopped
        if not ok:
            failures.append(f"POST /nodes/ forget as {person.name}: {response.status_code}, stopped {stopped}")
    assert not failures, "\n".join(failures)
    admin = next(p for p in world["people"] if p.role is Role.ADMINISTRATOR)
    Node.objects.filter(node_id="node-x").update(stopped_at=None, lease_until=now + timedelta(minutes=1))
    assert admin.client.post("/nodes/", {"node": "node-x", "forget": "yes"}).status_code == 409  # live
    assert Node.objects.get(node_id="node-x").stopped_at is None


def test_the_admin_is_for_administrators_only(world):
    urls = ["/admin/"] + [
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/" for model in admin.site._registry
    ]
    failures = []
    for url in urls:
        for person in world["people"]:
            status = person.client.get(url).status_code
            expected = 200 if person.role is Role.ADMINISTRATOR else 302
            if status != expected:
                failures.append(f"GET {url} as {person.name}: {status}, expected {expected}")
    assert not failures, "\n".join(failures)
