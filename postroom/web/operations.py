"""Mail operations for supervisors, as view-models: open alerts, box health and the
quarantine. The API serves them (`web/api/operations.py`) and the console's operations
panel renders `operations_dict()` (`templatetags/operations.py`).
"""

from __future__ import annotations

from typing import Any

from postroom.core.alerts import AlertKind
from postroom.store import quarantine as quarantine_store
from postroom.store.models import Alert, BoxHealth, Mailbox, Quarantined


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
    for box in Mailbox.watched().order_by("kind", "address"):
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


