"""Appending to the journal: every step of every interaction leaves one row.

Reception takes a FETCH batch in one transaction (decision 0039); inside ``batched()``
the rows it records are kept and inserted in one statement at the batch's end (decision
0040: one INSERT, one fence check and one wake-up on PostgreSQL instead of two or three
per mail). A step that may fail alone inside the batch runs in ``savepoint()``, so its
rows leave with its rollback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.db import transaction

from postroom.store.models import Agent, Interaction, JournalEvent, Mailbox

__all__ = ["batched", "record", "savepoint"]

# Per thread: each watcher takes its own box's batches; senders record at once.
_local = threading.local()


def record(
    kind: str,
    now: datetime,
    *,
    interaction: Interaction | None = None,
    agent: Agent | None = None,
    mailbox: Mailbox | None = None,
    **detail: Any,
) -> None:
    if interaction is not None:
        agent = agent or interaction.agent
        mailbox = mailbox or interaction.mailbox
    event = JournalEvent(at=now, kind=kind, interaction=interaction, agent=agent, mailbox=mailbox, detail=detail)
    pending: list[JournalEvent] | None = getattr(_local, "pending", None)
    if pending is not None:
        pending.append(event)
    else:
        event.save(force_insert=True)


@contextmanager
def batched() -> Iterator[None]:
    """Inside the caller's transaction: the rows recorded in the block (by this thread)
    are inserted together when it ends; an error drops them with the transaction."""
    if getattr(_local, "pending", None) is not None:
        yield  # an enclosing batch writes them
        return
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("journal.batched() needs the caller's transaction")
    _local.pending = []
    try:
        yield
        rows = _local.pending
    finally:
        _local.pending = None
    if rows:
        JournalEvent.objects.bulk_create(rows)


@contextmanager
def savepoint() -> Iterator[None]:
    """``transaction.atomic()`` whose rows recorded in a ``batched()`` block are dropped
    when it rolls back (the rows of the steps before it stay)."""
    pending: list[JournalEvent] | None = getattr(_local, "pending", None)
    mark = len(pending) if pending is not None else 0
    try:
        with transaction.atomic():
            yield
    except BaseException:
        if pending is not None:
            del pending[mark:]
        raise
