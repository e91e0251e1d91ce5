"""Mail operations for supervisors: /api/alerts, /api/boxes, /api/quarantine."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from django.utils import timezone
from ninja import Path, Schema

from postroom.store import quarantine as quarantine_store
from postroom.store.models import Alert
from postroom.store.permissions import Role
from postroom.web.access import allow, principal_of
from postroom.web.api.router import Router
from postroom.web.api.schemas import answers
from postroom.web.operations import alert_dict, boxes, quarantined_dict

router = Router(tags=["operations"])
RowId = Path(..., ge=1, le=2**62)


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



@router.get("/alerts", response=answers(list[AlertOut], 422), url_name="alerts", summary="Open alerts (all=true: cleared ones too)")
@allow(Role.SUPERVISOR)
def list_alerts(request: HttpRequest, all: bool = False):
    qs = Alert.objects.all() if all else Alert.objects.filter(cleared_at=None)
    return [alert_dict(a) for a in qs[:500]]


@router.get("/boxes", response=answers(list[BoxOut]), url_name="boxes", summary="Health of every watched box")
@allow(Role.SUPERVISOR)
def list_boxes(request: HttpRequest):
    return boxes()


@router.get(
    "/quarantine", response=answers(list[QuarantinedOut], 422), url_name="quarantine", summary="Quarantined messages (all=true: released too)"
)
@allow(Role.SUPERVISOR)
def list_quarantine(request: HttpRequest, all: bool = False):
    return [quarantined_dict(q) for q in quarantine_store.held(include_released=all)]


@router.post(
    "/quarantine/{row_id}/release",
    response=answers(QuarantinedOut, 404, 409, 422),
    url_name="quarantine-release",
    summary="Give a quarantined message back to its box, to be taken again as new mail",
)
@allow(Role.SUPERVISOR)
def release(request: HttpRequest, row_id: int = RowId):
    who = principal_of(request).name or "api"
    return quarantined_dict(quarantine_store.request_release(row_id, who, timezone.now()))
