"""Mail operations for supervisors: open alerts, box health and the quarantine.

A small ninja router mounted on the API (`/api/alerts`, `/api/boxes`, `/api/quarantine`),
and `operations_dict()`, which the console's operations panel renders
(`templatetags/operations.py`). Supervisors and staff only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema
from ninja.errors import HttpError

from postroom.core.alerts import AlertKind
from postroom.store import commands
from postroom.store import quarantine as quarantine_store
from postroom.store.models import Alert, BoxHealth, Mailbox, Quarantined

router = Router(tags=["operations"])


class AlertOut(Schema):
    id: int
    kind: str
    key: str
    message: str
    count: int
    raised_at: datetime
    last_raised_at: datetime
    cleared_at: datetime | None


class BoxOut(Schema):
    address: str
    kind: str
    folder: str
    last_sync_at: datetime | None
    last_error: str
    last_error_at: datetime | None
    failures: int
    messages: int
    backlog: int
    reconciled_at: datetime | None
    unaccounted: int
    not_synced_alert: bool


class QuarantinedOut(Schema):
    id: int
    mailbox: str
    uid: int
    reason: str
    size: int
    message_id: str
    created_at: datetime
    moved: bool
    last_error: str
    release_requested_at: datetime | None
    released_at: datetime | None
    release_result: str


class Detail(Schema):
    detail: str


def _require_supervisor(user: Any) -> None:
    if not commands.is_supervisor(user):
        raise HttpError(403, "Only supervisors and staff may see this")


def alert_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "key": alert.key,
        "message": alert.message,
        "count": alert.count,
        "raised_at": alert.raised_at,
        "last_raised_at": alert.last_raised_at,
        "cleared_at": alert.cleared_at,
    }


def boxes() -> list[dict[str, Any]]:
    health = {h.mailbox_id: h for h in BoxHealth.objects.all()}
    stale = set(
        Alert.objects.filter(kind=AlertKind.BOX_NOT_SYNCED, cleared_at=None).values_list("key", flat=True)
    )
    out = []
    for box in Mailbox.objects.filter(kind__in=[Mailbox.INCOMING, Mailbox.OUTBOUND]).order_by("kind", "address"):
        h = health.get(box.pk) or BoxHealth(mailbox=box)
        out.append(
            {
                "address": box.address,
                "kind": box.kind,
                "folder": box.folder,
                "last_sync_at": h.last_sync_at,
                "last_error": h.last_error,
                "last_error_at": h.last_error_at,
                "failures": h.failures,
                "messages": h.messages,
                "backlog": h.backlog,
                "reconciled_at": h.reconciled_at,
                "unaccounted": h.unaccounted,
                "not_synced_alert": box.address in stale,
            }
        )
    return out


def quarantined_dict(row: Quarantined) -> dict[str, Any]:
    return {
        "id": row.pk,
        "mailbox": row.mailbox.address,
        "uid": row.uid,
        "reason": row.reason,
        "size": row.size,
        "message_id": row.message_id,
        "created_at": row.created_at,
        "moved": row.moved_at is not None,
        "last_error": row.last_error,
        "release_requested_at": row.release_requested_at,
        "released_at": row.released_at,
        "release_result": row.release_result,
    }


def operations_dict() -> dict[str, Any]:
    """What the console's operations panel shows."""
    return {
        "alerts": [alert_dict(a) for a in Alert.objects.filter(cleared_at=None)[:100]],
        "boxes": boxes(),
        "quarantined": [quarantined_dict(q) for q in quarantine_store.held()[:100]],
    }


@router.get("/alerts", response=list[AlertOut], url_name="alerts", summary="Open alerts (all=true: cleared ones too)")
def list_alerts(request: HttpRequest, all: bool = False):
    _require_supervisor(request.auth)
    qs = Alert.objects.all() if all else Alert.objects.filter(cleared_at=None)
    return [alert_dict(a) for a in qs[:500]]


@router.get("/boxes", response=list[BoxOut], url_name="boxes", summary="Health of every watched box")
def list_boxes(request: HttpRequest):
    _require_supervisor(request.auth)
    return boxes()


@router.get(
    "/quarantine", response=list[QuarantinedOut], url_name="quarantine", summary="Quarantined messages (all=true: released too)"
)
def list_quarantine(request: HttpRequest, all: bool = False):
    _require_supervisor(request.auth)
    return [quarantined_dict(q) for q in quarantine_store.held(include_released=all)]


@router.post(
    "/quarantine/{row_id}/release",
    response={200: QuarantinedOut, 403: Detail, 404: Detail, 409: Detail},
    url_name="quarantine-release",
    summary="Give a quarantined message back to its box, to be taken again as new mail",
)
def release(request: HttpRequest, row_id: int):
    _require_supervisor(request.auth)
    who = getattr(request.auth, "username", "") or "api"
    return quarantined_dict(quarantine_store.request_release(row_id, who, timezone.now()))
