"""Claiming rows when several nodes run the same step (decision 0030).

Every node runs the timers, the approvals, the delivery and the cleanup steps. Each takes
its items in a transaction that first locks them with `SELECT ... FOR UPDATE SKIP
LOCKED`: an item another node is working on right now is skipped, neither waited for nor
done twice, and once that node commits the item no longer matches the step's query.

SQLite holds one node only, and there a transaction would lock the whole database for
as long as it lasts (IMMEDIATE): the steps whose work includes IMAP commands (delivery,
cleanup) then run without one, as they always did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import Model, QuerySet

from postroom.store.compiled import Compiled

M = TypeVar("M", bound=Model)


def shared() -> bool:
    return bool(connection.features.has_select_for_update_skip_locked)


def take(qs: QuerySet[M], pk: Any) -> M | None:
    """Row `pk` of `qs`, locked for the caller's transaction; None if it no longer
    matches `qs` or another transaction holds it (then that one deals with it)."""
    return qs.select_for_update(skip_locked=True, of=("self",)).filter(pk=pk).first()


@contextlib.contextmanager
def batch(qs: QuerySet[M], limit: int) -> Iterator[list[M]]:
    """Up to `limit` rows of `qs` that no other node holds, held for the block."""
    if not shared():
        yield list(qs[:limit])
        return
    with transaction.atomic():
        yield list(qs.select_for_update(skip_locked=True, of=("self",))[:limit])


def locked(qs: QuerySet[M]) -> QuerySet[M]:
    """`qs`'s rows as `batch` takes them where rows are shared: locked, others' skipped."""
    return qs.select_for_update(skip_locked=True, of=("self",))


@contextlib.contextmanager
def batch_compiled(plain: Compiled, held: Compiled) -> Iterator[list[Any]]:
    """`batch` for a read compiled once (`store.compiled.Compiled`, decision 0067): `plain`
    is the step's query with its limit, `held` the same one through `locked`. Where rows are
    shared the locked read is compiled and run inside the block's transaction (Django
    compiles a FOR UPDATE only there)."""
    if not shared():
        yield plain.objects()
        return
    with transaction.atomic():
        yield held.objects()
