"""Appending to the journal: every step of every interaction leaves one row.

Reception takes a FETCH batch in one transaction (decision 0039); inside ``batched()``
the rows it records are kept and inserted in one statement at the batch's end (decision
0040: one INSERT, one fence check and one wake-up on PostgreSQL instead of two or three
per mail). A step that may fail alone inside the batch runs in ``savepoint()``, so its
rows leave with its rollback.

The batch's other new rows (interactions, their outbox and search rows: decision 0043)
may be kept the same way with ``defer()``: inserted one ``bulk_create`` per table, the
interactions first (the other rows point at them), at the batch's end or at a
``flush()`` between two mails.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.db import models, transaction

from postroom.store.models import Agent, Interaction, JournalEvent, Mailbox

__all__ = ["batched", "deferred", "defer", "flush", "record", "savepoint"]

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
    defer(JournalEvent(at=now, kind=kind, interaction=interaction, agent=agent, mailbox=mailbox, detail=detail))


def defer(row: models.Model) -> None:
    """Insert `row` with the batch (at its end or its next `flush()`); at once outside
    one."""
    pending: list[models.Model] | None = getattr(_local, "pending", None)
    if pending is not None:
        pending.append(row)
    else:
        row.save(force_insert=True)


def deferred(model: type[models.Model], *, unwritten: bool = False) -> list[Any]:
    """The rows of `model` this thread's batch has kept so far, written by a `flush()` or
    not, or with `unwritten` only those not yet written (none outside a batch)."""
    pending: list[models.Model] = getattr(_local, "pending", None) or []
    if unwritten:
        pending = pending[_local.written :]
    return [row for row in pending if type(row) is model]


@contextmanager
def batched() -> Iterator[None]:
    """Inside the caller's transaction: the rows recorded in the block (by this thread)
    are inserted together when it ends; an error drops them with the transaction."""
    if getattr(_local, "pending", None) is not None:
        yield  # an enclosing batch writes them
        return
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("journal.batched() needs the caller's transaction")
    _local.pending, _local.written, _local.depth = [], 0, 0
    try:
        yield
        flush()
    finally:
        _local.pending = None


def flush() -> None:
    """Insert the rows kept since the last flush: one INSERT per table, interactions first.

    Only between two steps, never inside a `savepoint()`: a rollback of that savepoint
    would take rows of steps before it with it."""
    pending: list[models.Model] | None = getattr(_local, "pending", None)
    if pending is None:
        return
    if _local.depth:
        raise RuntimeError("journal.flush() inside a savepoint")
    rows, _local.written = pending[_local.written :], len(pending)
    tables: dict[type[models.Model], list[models.Model]] = {Interaction: []}
    for row in rows:
        tables.setdefault(type(row), []).append(row)
    for model, of_model in tables.items():
        if of_model:
            # Each row's foreign keys are taken from the rows inserted before it
            # (bulk_create sets the primary keys: RETURNING on both databases).
            model.objects.bulk_create(of_model)


@contextmanager
def savepoint() -> Iterator[None]:
    """``transaction.atomic()`` whose rows recorded in a ``batched()`` block are dropped
    when it rolls back (the rows of the steps before it stay)."""
    pending: list[models.Model] | None = getattr(_local, "pending", None)
    mark = len(pending) if pending is not None else 0
    if pending is not None:
        _local.depth += 1
    try:
        with transaction.atomic():
            yield
    except BaseException:
        if pending is not None:
            del pending[mark:]
        raise
    finally:
        if pending is not None:
            _local.depth -= 1
