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

from django.db import connections, models, router, transaction

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
            # (the primary keys are read back: RETURNING on both databases).
            insert(model, of_model)


def insert(model: type[models.Model], rows: list[models.Model]) -> None:
    """``model.objects.bulk_create(rows)`` for new rows of a plain model: the same
    statement (one multi-row INSERT ... RETURNING id per `bulk_batch_size` rows) and the
    same values (each field's ``pre_save`` and ``get_db_prep_save``, as the compiler
    takes them), without the query compiler's work per value, which was most of a batch's
    flush (decision 0054). Anything else (a row with its key set, a database that cannot
    return the ids of a multi-row insert, expressions) goes through ``bulk_create``."""
    # The database bulk_create would write to, under the name bulk_create gives the rows'
    # `_state.db`: not `connection.alias`, since on the island a thread's `default`
    # connection is the local store's, whose alias says `island` (engine/localstore.py).
    db = router.db_for_write(model)
    connection = connections[db]
    plan = _plan(model, connection)
    if plan is None or any(row.pk is not None or not row._state.adding for row in rows):
        model.objects.bulk_create(rows)
        return
    fields, head, returning = plan
    shared: dict[tuple[int, int], tuple[object, Any]] = {}
    for row in rows:
        # bulk_create's: a related row inserted after it was assigned gives its id now.
        row._prepare_related_fields_for_save(operation_name="bulk_create")
    values = [[_prepared(f, f.pre_save(row, True), connection, shared) for f in fields] for row in rows]
    if any(hasattr(v, "resolve_expression") for row_values in values for v in row_values):
        model.objects.bulk_create(rows)
        return
    size = max(connection.ops.bulk_batch_size(fields, rows), 1)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            part = values[start : start + size]
            cursor.execute(f"{head} VALUES {', '.join([one] * len(part))}{returning}", [v for r in part for v in r])
            ids = connection.ops.fetch_returned_insert_rows(cursor)
            if len(ids) != len(part):
                raise RuntimeError(f"{model.__name__}: {len(ids)} ids returned for {len(part)} rows")
            for row, (pk, *_rest) in zip(rows[start : start + size], ids, strict=True):
                row.pk = pk
                row._state.adding = False
                row._state.db = db


def _prepared(field: models.Field, value: object, connection: Any, shared: dict[tuple[int, int], tuple[object, Any]]) -> Any:
    """``field.get_db_prep_save(value, connection)``; a datetime object that several rows
    share (a mail's rows are all stamped with one `now`) is prepared once per statement:
    the same object, the same answer (decision 0057)."""
    if type(value) is not datetime:
        return field.get_db_prep_save(value, connection)
    key = (id(field), id(value))
    hit = shared.get(key)
    if hit is not None and hit[0] is value:  # `shared` holds the object: no id is reused
        return hit[1]
    prepared = field.get_db_prep_save(value, connection)
    shared[key] = (value, prepared)
    return prepared


def _placeholder(field: models.Field, connection: Any) -> bool:
    """Does the compiler give this field's values a placeholder other than ``%s``? (A
    BinaryField's is ``%s`` but on MySQL.)"""
    if not hasattr(field, "get_placeholder"):
        return False
    return not (isinstance(field, models.BinaryField) and connection.ops.binary_placeholder_sql(b"") == "%s")


_plans: dict[tuple[type[models.Model], str], tuple[list[models.Field], str, str] | None] = {}


def _plan(model: type[models.Model], connection: Any) -> tuple[list[models.Field], str, str] | None:
    """The model's inserted fields, ``INSERT INTO t (...)`` and `` RETURNING t.id``, or
    None when the plain statement would not be bulk_create's."""
    key = (model, connection.vendor)  # one alias may be either database (the island's)
    if key not in _plans:
        opts = model._meta
        pk = opts.pk
        fields = [f for f in opts.concrete_fields if not f.generated and f is not pk]
        plain = (
            connection.features.can_return_rows_from_bulk_insert
            and isinstance(pk, models.AutoField)
            and not opts.parents
            and list(opts.db_returning_fields) == [pk]
            and not any(f.has_db_default() or _placeholder(f, connection) for f in fields)
        )
        if not plain:
            _plans[key] = None
        else:
            quote = connection.ops.quote_name
            columns = ", ".join(quote(f.column) for f in fields)
            returning, _params = connection.ops.return_insert_columns([pk])
            _plans[key] = (fields, f"INSERT INTO {quote(opts.db_table)} ({columns})", f" {returning}")
    return _plans[key]


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
