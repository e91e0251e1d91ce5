"""Alerts, box health and the quarantine in the API and on the supervisor console."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.alerts import AlertKind
from postroom.engine.alerts import raise_alert
from postroom.store import agents
from postroom.store.models import Agent, BoxHealth, Mailbox, Quarantined

pytestmark = pytest.mark.django_db


def token_for(address: str, supervisor: bool) -> dict[str, str]:
    user = get_user_model().objects.create_user(address.split("@")[0], password="pw-for-tests-only")
    Agent.objects.create(name=address, address=address, user=user, is_supervisor=supervisor)
    return {"HTTP_AUTHORIZATION": f"Bearer {agents.issue_token(user)}"}


@pytest.fixture
def box() -> Mailbox:
    return Mailbox.objects.create(address="support@example.test", login="support@example.test")


def test_supervisors_see_alerts_boxes_and_quarantine_agents_do_not(client, box) -> None:
    sue = token_for("sue@example.test", supervisor=True)
    alice = token_for("alice@example.test", supervisor=False)
    now = timezone.now()
    raise_alert(AlertKind.BOX_NOT_SYNCED, box.address, "no sync for 6 minutes: login failed", now)
    BoxHealth.objects.create(mailbox=box, last_error="login failed", failures=3, messages=4)
    Quarantined.objects.create(mailbox=box, uidvalidity=1, uid=7, folder="Postroom-Quarantine", reason="unreadable: x")

    for path in ("/api/alerts", "/api/boxes", "/api/quarantine"):
        assert client.get(path, **alice).status_code == 403, path
    (alert,) = client.get("/api/alerts", **sue).json()
    assert alert["kind"] == "box_not_synced" and "login failed" in alert["message"]
    (health,) = client.get("/api/boxes", **sue).json()
    assert health["address"] == box.address and health["failures"] == 3 and health["not_synced_alert"]
    (held,) = client.get("/api/quarantine", **sue).json()
    assert held["reason"] == "unreadable: x" and held["release_requested_at"] is None

    released = client.post(f"/api/quarantine/{held['id']}/release", **sue)
    assert released.status_code == 200 and released.json()["release_requested_at"]
    assert client.post(f"/api/quarantine/{held['id']}/release", **alice).status_code == 403
    assert client.post("/api/quarantine/999/release", **sue).status_code == 404


def test_the_console_shows_the_operations_panel(client, box) -> None:
    user = get_user_model().objects.create_user("sue", password="pw-for-tests-only")
    Agent.objects.create(name="Sue", address="sue@example.test", user=user, is_supervisor=True)
    raise_alert(AlertKind.QUARANTINED, box.address, "1 message quarantined: unreadable", timezone.now())
    client.force_login(user)
    page = client.get("/supervisor/").content.decode()
    assert 'id="operations"' in page
    assert "1 message quarantined: unreadable" in page
    assert "support@example.test" in page
