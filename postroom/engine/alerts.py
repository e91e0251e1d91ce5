"""Raising, clearing and mailing operational alerts (kinds: `core.alerts.AlertKind`).

`raise_alert` and `clear_alert` only write the database, so any step may call them inside
its own transaction; the worker's `notify` step then mails the supervisors a notice about
each alert raised since they were last told, at most once per key per
`Site.alert_interval`. The alert itself is always visible in the console and the API.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet

from postroom.core.alerts import AlertKind, notice_due
from postroom.engine.notices import queue_notice
from postroom.engine.site import Site
from postroom.store.compiled import Compiled
from postroom.store.models import Agent, Alert, Mailbox

log = logging.getLogger(__name__)


def raise_alert(kind: AlertKind, key: str, message: str, now: datetime) -> Alert:
    """Open the alert `kind`/`key`, or count one more occurrence of the open one."""
    kind = AlertKind(kind)
    key = key[:300]
    for _ in range(2):
        with transaction.atomic():
            alert = Alert.objects.select_for_update().filter(kind=kind, key=key, cleared_at=None).first()
            if alert is not None:
                Alert.objects.filter(pk=alert.pk).update(
                    count=F("count") + 1, message=message, last_raised_at=now, pending_notice=True
                )
                alert.refresh_from_db()
                log.debug("alert %s %s again (%d): %s", kind.value, key, alert.count, message)
                return alert
            # A key that was cleared and raised again keeps its last mail time, so a
            # flapping box is not mailed about on every flap.
            previous = Alert.objects.filter(kind=kind, key=key).order_by("-raised_at", "-id").first()
            log.warning("alert %s %s: %s", kind.value, key, message)
            try:
                with transaction.atomic():
                    return Alert.objects.create(
                        kind=kind,
                        key=key,
                        message=message,
                        raised_at=now,
                        last_raised_at=now,
                        notified_at=previous.notified_at if previous else None,
                    )
            except IntegrityError:
                continue  # raised by another thread at the same moment: count on that one
    raise RuntimeError(f"could not raise alert {kind} {key}")


def clear_alert(kind: AlertKind, key: str, now: datetime) -> bool:
    """Close the open alert `kind`/`key`, if any; True if one was open."""
    closed = Alert.objects.filter(kind=AlertKind(kind), key=key[:300], cleared_at=None).update(
        cleared_at=now, pending_notice=False
    )
    if closed:
        log.info("alert %s %s cleared", AlertKind(kind).value, key)
    return bool(closed)


def open_alerts(kind: AlertKind | None = None, key: str | None = None) -> list[Alert]:
    qs = Alert.objects.filter(cleared_at=None)
    if key is not None:
        qs = qs.filter(key=key[:300])
    return list(qs.filter(kind=kind) if kind else qs)


def pending_notices() -> QuerySet[Alert]:
    """Open alerts raised since the supervisors were last told, oldest first."""
    return Alert.objects.filter(pending_notice=True, cleared_at=None).order_by("id")


# What `notify` reads at every round (the first 50), with SQL compiled once per thread and
# connection: the step runs every second and mostly finds nothing, and building the
# queryset was most of its time (decision 0065).
AT_ONCE = 50
_PENDING = Compiled(lambda: pending_notices()[:AT_ONCE])


def notify(site: Site, now: datetime) -> bool:
    """Mail the supervisors about alerts raised since they were last told (worker step)."""
    pending: list[Alert] = _PENDING.objects()  # type: ignore[assignment]
    due = [
        a for a in pending if notice_due(pending=True, notified_at=a.notified_at, now=now, interval=site.alert_interval)
    ]
    if not due:
        return False
    supervisors = list(Agent.objects.filter(is_supervisor=True).values_list("address", flat=True))
    can_mail = Mailbox.objects.filter(kind=Mailbox.OUTBOUND).exists()
    for alert in due:
        with transaction.atomic():
            if can_mail:
                for address in supervisors:
                    queue_notice(
                        site,
                        now,
                        key=f"notice:alert:{alert.pk}:{alert.notices}:{address}",
                        to=address,
                        subject=f"Postroom alert: {alert.kind.replace('_', ' ')}: {alert.key}",
                        text=(
                            f"{alert.message}\n\n"
                            f"Raised {alert.count} time(s) since {alert.raised_at:%Y-%m-%d %H:%M} UTC. "
                            "Open alerts are listed in the supervisor console and at /api/alerts; "
                            f"you will not be mailed about this one again for {site.alert_interval}.\n"
                        ),
                    )
            Alert.objects.filter(pk=alert.pk).update(pending_notice=False, notified_at=now, notices=F("notices") + 1)
    return True
