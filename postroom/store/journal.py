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
from typing import Any, NamedTuple

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
    if plan is None:
        model.objects.bulk_create(rows)
        return
    for row in rows:
        # bulk_create's: a related row inserted after it was assigned gives its id now
        # (InteractionText's key too).
        row._prepare_related_fields_for_save(operation_name="bulk_create")
    if any((row.pk is not None) is not plan.keyed or not row._state.adding for row in rows):
        model.objects.bulk_create(rows)
        return
    shared: dict[tuple[int, type, object], tuple[object, Any]] = {}
    # Each field's ``pre_save`` and ``get_db_prep_save`` as the compiler takes them; where
    # they hand the value back unchanged (a text field's str or None, a boolean's bool:
    # `_Plan`), the value itself, without the calls (decision 0061).
    columns = plan.columns
    values = [
        [
            value
            if type(value := (getattr(row, attname) if attname is not None else f.pre_save(row, True))) in same
            else _prepared(f, value, connection, shared)
            for f, attname, same in columns
        ]
        for row in rows
    ]
    if any(hasattr(v, "resolve_expression") for row_values in values for v in row_values):
        model.objects.bulk_create(rows)
        return
    fields = plan.fields
    size = max(connection.ops.bulk_batch_size(fields, rows), 1)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            part = values[start : start + size]
            cursor.execute(f"{plan.head} VALUES {', '.join([one] * len(part))}{plan.returning}", [v for r in part for v in r])
            if plan.keyed:  # its key is the row it belongs to: nothing to read back
                for row in rows[start : start + size]:
                    row._state.adding = False
                    row._state.db = db
                continue
            ids = connection.ops.fetch_returned_insert_rows(cursor)
            if len(ids) != len(part):
                raise RuntimeError(f"{model.__name__}: {len(ids)} ids returned for {len(part)} rows")
            for row, (pk, *_rest) in zip(rows[start : start + size], ids, strict=True):
                row.pk = pk
                row._state.adding = False
                row._state.db = db


def _prepared(field: models.Field, value: object, connection: Any, shared: dict[tuple[int, type, object], tuple[object, Any]]) -> Any:
    """``field.get_db_prep_save(value, connection)``, prepared once per statement for
    each field's value that several rows share: a datetime object (a mail's rows are all
    stamped with one `now`: the same object, the same answer, decision 0057), and None or
    an int (equal values, the same answer: the mailbox of all a batch's rows, the empty
    times and links of new rows, decision 0061)."""
    kind = type(value)
    if kind is datetime:
        key: tuple[int, type, object] = (id(field), kind, id(value))
        hit = shared.get(key)
        if hit is not None and hit[0] is value:  # `shared` holds the object: no id is reused
            return hit[1]
    elif kind is int or value is None:
        key = (id(field), kind, value)
        hit = shared.get(key)
        if hit is not None:
            return hit[1]
    else:
        return field.get_db_prep_save(value, connection)
    prepared = field.get_db_prep_save(value, connection)
    shared[key] = (value, prepared)
    return prepared


def _placeholder(field: models.Field, connection: Any) -> bool:
    """Does the compiler give this field's values a placeholder other than ``%s``? (A
    BinaryField's is ``%s`` but on MySQL.)"""
    if not hasattr(field, "get_placeholder"):
        return False
    return not (isinstance(field, models.BinaryField) and connection.ops.binary_placeholder_sql(b"") == "%s")


class _Plan(NamedTuple):
    """How `insert` writes a model's rows: its inserted fields; per field the attribute
    its ``pre_save`` reads (None when that is not ``Field.pre_save``) and the value types
    its ``get_db_prep_save`` hands back unchanged; ``INSERT INTO t (...)``; `` RETURNING
    t.id`` (or "" for `keyed`: a primary key that is a one-to-one link, set on the row,
    as InteractionText's)."""

    fields: list[models.Field]
    columns: list[tuple[models.Field, str | None, tuple[type, ...]]]
    head: str
    returning: str
    keyed: bool


_plans: dict[tuple[type[models.Model], str], _Plan | None] = {}
_NONE = type(None)


def _unchanged(field: models.Field) -> tuple[type, ...]:
    """The types of value ``field.get_db_prep_save(value, connection)`` returns as they
    are, on every database: Django's own text fields (``CharField``'s and
    ``TextField``'s ``to_python``: a str or None as it is) and booleans (a bool or None);
    () for any other field, or a subclass that changes one of the methods involved."""
    cls = type(field)
    if cls.get_db_prep_save is not models.Field.get_db_prep_save or cls.get_db_prep_value is not models.Field.get_db_prep_value:
        return ()
    for base, types in ((models.CharField, (str, _NONE)), (models.TextField, (str, _NONE)), (models.BooleanField, (bool, _NONE))):
        if cls.get_prep_value is base.get_prep_value and cls.to_python is base.to_python:
            return types
    return ()


def _plan(model: type[models.Model], connection: Any) -> _Plan | None:
    """How `insert` writes the model's rows, or None when the plain statement would not
    be bulk_create's."""
    key = (model, connection.vendor)  # one alias may be either database (the island's)
    if key not in _plans:
        opts = model._meta
        pk = opts.pk
        # A primary key that is the row's one-to-one link (InteractionText) is set on the
        # row and inserted with the others; bulk_create then reads nothing back either.
        keyed = isinstance(pk, models.OneToOneField) and not opts.db_returning_fields
        fields = [f for f in opts.concrete_fields if not f.generated and (keyed or f is not pk)]
        plain = (
            connection.features.can_return_rows_from_bulk_insert
            and (keyed or (isinstance(pk, models.AutoField) and list(opts.db_returning_fields) == [pk]))
            and not opts.parents
            and not any(f.has_db_default() or _placeholder(f, connection) for f in fields)
        )
        if not plain:
            _plans[key] = None
        else:
            quote = connection.ops.quote_name
            columns = ", ".join(quote(f.column) for f in fields)
            returning = "" if keyed else " " + connection.ops.return_insert_columns([pk])[0]
            _plans[key] = _Plan(
                fields=fields,
                columns=[(f, f.attname if type(f).pre_save is models.Field.pre_save else None, _unchanged(f)) for f in fields],
                head=f"INSERT INTO {quote(opts.db_table)} ({columns})",
                returning=returning,
                keyed=keyed,
            )
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
