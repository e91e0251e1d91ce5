"""One engine per database: a lease row with a heartbeat.

Two engines on one database would each take the same mail and claim the same outbox rows.
So an engine starts only after taking the lease: a row naming it (node id, host, pid, a
random holder token) with `lease_until` in the near future, renewed by a heartbeat. A
second engine refuses to start while the lease is held; it may take over once the lease
has expired, or at once when the holder is a process on this same host that no longer
exists (an engine SIGKILLed and started again). An engine that finds, at a renewal, that
its lease was taken over stops working at once (it was paused past its lease; the other
engine owns the work now). The lease uses the wall clock, never an engine's test clock.
Issue 10 generalises this to several nodes.

An engine that takes over from a process known to be dead (this host, its pid gone) also
ends that process's outbox claims at once, instead of waiting out their lease ([outbox]
lease, 5 minutes by default): nobody can still be sending under them, and each such row
is then settled as any claim that ended does, from the journal box after its grace
(decision 0007). Without that, a restart delayed every mail in flight by the lease.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from postroom.store.models import EngineLease, Outgoing

log = logging.getLogger(__name__)

NAME = "engine"


class LeaseHeld(Exception):
    """Another engine holds the lease; the message names it and until when."""


class LeaseLost(Exception):
    """Our lease was taken over by another engine."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lease:
    holder: str
    seconds: float
    until: datetime

    def valid(self, now: datetime | None = None) -> bool:
        """Still ours by our own reckoning (renewals may have failed for a while)."""
        return (now or timezone.now()) < self.until


def acquire(node_id: str, seconds: float, now: datetime | None = None) -> Lease:
    now = now or timezone.now()
    me = socket.gethostname()
    holder = secrets.token_hex(16)
    until = now + timedelta(seconds=seconds)
    with transaction.atomic():
        row = EngineLease.objects.select_for_update().filter(name=NAME).first()
        gone = row is not None and row.hostname == me and not _pid_alive(row.pid)
        if row is not None and row.lease_until > now:
            if not gone:
                raise LeaseHeld(
                    f"another engine holds this database: node {row.node_id!r}, pid {row.pid} on "
                    f"{row.hostname}, lease until {row.lease_until:%Y-%m-%d %H:%M:%S} UTC "
                    "(it is renewed while that engine runs; stop it first, or start this one "
                    "after the lease has expired)"
                )
            log.warning("taking over the lease of pid %s on this host, which is gone", row.pid)
        values = {
            "holder": holder,
            "node_id": node_id,
            "hostname": me,
            "pid": os.getpid(),
            "acquired_at": now,
            "renewed_at": now,
            "lease_until": until,
        }
        try:
            with transaction.atomic():
                EngineLease.objects.update_or_create(name=NAME, defaults=values)
        except IntegrityError as exc:
            raise LeaseHeld("another engine took the lease at the same moment") from exc
        if gone:
            ended = Outgoing.objects.filter(state=Outgoing.SENDING, lease_until__gt=now).update(
                lease_until=now
            )
            if ended:
                log.warning("ended %d outbox claims of pid %s, which is gone: settled from the journal box", ended, row.pid)
    log.info("engine lease taken until %s", until)
    return Lease(holder, seconds, until)


def renew(lease: Lease, now: datetime | None = None) -> None:
    """Extend our lease; LeaseLost if another engine holds it now."""
    now = now or timezone.now()
    until = now + timedelta(seconds=lease.seconds)
    renewed = EngineLease.objects.filter(name=NAME, holder=lease.holder).update(renewed_at=now, lease_until=until)
    if renewed != 1:
        raise LeaseLost("the engine lease was taken over by another engine")
    lease.until = until


def release(lease: Lease) -> None:
    EngineLease.objects.filter(name=NAME, holder=lease.holder).update(lease_until=timezone.now())
