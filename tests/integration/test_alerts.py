"""engine.alerts: one open alert per key, counted; supervisors mailed at most once per interval."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from postroom.core.alerts import AlertKind
from postroom.engine.alerts import clear_alert, notify, open_alerts, raise_alert
from postroom.engine.site import Site
from postroom.store.models import Agent, Alert, Mailbox, Outgoing
from tests.sites import offline_site

pytestmark = pytest.mark.django_db


@pytest.fixture
def site() -> Site:
    Mailbox.objects.create(kind=Mailbox.OUTBOUND, address="outbound@example.test", login="outbound@example.test")
    Agent.objects.create(name="Sam", address="sam@example.test", is_supervisor=True)
    Agent.objects.create(name="Sue", address="sue@example.test", is_supervisor=True)
    Agent.objects.create(name="Alice", address="alice@example.test")
    return offline_site(alert_interval=timedelta(hours=1))


def alert_mail() -> list[Outgoing]:
    return list(Outgoing.objects.filter(key__startswith="notice:alert:").order_by("id"))


def test_raising_twice_counts_on_one_open_alert(site) -> None:
    now = timezone.now()
    raise_alert(AlertKind.QUARANTINED, "support@example.test", "1 message quarantined", now)
    raise_alert(AlertKind.QUARANTINED, "support@example.test", "2 messages quarantined", now + timedelta(seconds=5))
    (alert,) = open_alerts()
    assert alert.count == 2 and alert.message == "2 messages quarantined"
    assert alert.raised_at == now


def test_supervisors_are_mailed_once_per_key_per_interval(site) -> None:
    now = timezone.now()
    raise_alert(AlertKind.BOX_NOT_SYNCED, "sales@example.test", "no sync for 6 minutes", now)
    assert notify(site, now)
    assert sorted(r.recipients[0] for r in alert_mail()) == ["sam@example.test", "sue@example.test"]
    # Raised again within the hour: counted, not mailed.
    raise_alert(AlertKind.BOX_NOT_SYNCED, "sales@example.test", "no sync for 7 minutes", now + timedelta(minutes=1))
    notify(site, now + timedelta(minutes=2))
    assert len(alert_mail()) == 2
    # Cleared and raised again (a flapping box) within the hour: still no mail.
    clear_alert(AlertKind.BOX_NOT_SYNCED, "sales@example.test", now + timedelta(minutes=3))
    raise_alert(AlertKind.BOX_NOT_SYNCED, "sales@example.test", "again", now + timedelta(minutes=4))
    notify(site, now + timedelta(minutes=5))
    assert len(alert_mail()) == 2
    # After the interval the pending raise is mailed.
    notify(site, now + timedelta(minutes=61))
    assert len(alert_mail()) == 4
    assert Alert.objects.count() == 2 and len(open_alerts()) == 1


def test_an_alert_cleared_before_anyone_was_told_is_not_mailed(site) -> None:
    now = timezone.now()
    raise_alert(AlertKind.UNACCOUNTED, "support@example.test:1:7", "uid 7", now)
    assert clear_alert(AlertKind.UNACCOUNTED, "support@example.test:1:7", now)
    assert not clear_alert(AlertKind.UNACCOUNTED, "support@example.test:1:7", now)
    assert not notify(site, now)
    assert alert_mail() == [] and open_alerts() == []


def test_different_keys_are_different_alerts(site) -> None:
    now = timezone.now()
    raise_alert(AlertKind.WITHDRAWAL_GIVEN_UP, "1", "a", now)
    raise_alert(AlertKind.WITHDRAWAL_GIVEN_UP, "2", "b", now)
    raise_alert(AlertKind.SEND_FAILED, "1", "c", now)
    assert len(open_alerts()) == 3 and len(open_alerts(AlertKind.WITHDRAWAL_GIVEN_UP)) == 2
    notify(site, now)
    assert len(alert_mail()) == 6
