"""The audit trail: who did what, when, from where, for the actions of people with power
(approvals, transfers, forcing agents Not Ready, configuration changes, API tokens) and
every login and failed login.

Append-only: written here, shown read-only in the admin, never changed from the web.
The web sets the origin (address, channel) of the request being served with `origin()`;
the CLI and the engine write without one (channel "cli" or "mail").
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from postroom.store.models import AuditEntry


@dataclass(frozen=True)
class Origin:
    ip: str | None
    via: str


_origin: contextvars.ContextVar[Origin | None] = contextvars.ContextVar(
    "postroom_audit_origin", default=None
)


@contextlib.contextmanager
def origin(*, ip: str | None, via: str) -> Iterator[None]:
    token = _origin.set(Origin(ip=ip, via=via))
    try:
        yield
    finally:
        _origin.reset(token)


def record(
    action: str,
    *,
    actor: str,
    target: str = "",
    via: str | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEntry:
    """Append one entry; `via` defaults to the request's channel, else "cli"."""
    here = _origin.get()
    return AuditEntry.objects.create(
        at=at or timezone.now(),
        actor=(actor or "")[:320],
        action=action,
        target=str(target)[:500],
        ip=here.ip if here else None,
        via=via or (here.via if here else "cli"),
        detail=detail,
    )
