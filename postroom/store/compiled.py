"""A constant read (a queryset without arguments) compiled by Django once per thread and
connection, then run as its SQL: what the engine's supervisor asks the database at every
heartbeat (the nodes, the leases, the watched boxes) cost more in Django's query
building and compiling than in the database (decision 0058).

`CompiledAt` does it for a read whose arguments are times (what is due by now),
`CompiledIn` for a read whose one argument is a short list (the interactions a reply
names, decision 0055), and `CompiledUpdate` for an UPDATE, with arguments fixed for a
while (the node's heartbeat, for one registration) and values of its own at each call
(a reply's search text, decision 0064), compiled with a mark in each such value's place;
`CompiledUpdates` keeps several such UPDATEs, one per key, and can return columns of
the rows they updated (the sender's claims and fenced writes, decision 0068).
The rows are what the queryset would give: model instances (`objects`, with the
queryset's annotations as attributes) or tuples of a `values_list` (`rows`), converted by
the same converters. The SQL is compiled again for another connection (a thread's own,
the local store of island mode, a connection re-made after `use_shared`); the query
runs at every call, nothing of its answer is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import Field, Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.models.sql.subqueries import UpdateQuery

# A value that stands for a per-call argument while the statement is compiled, by the kind
# of field that prepares it (a foreign key: its target's): nothing a caller would pass, and
# within the range Django checks an integer lookup against (a value below a positive
# field's range makes `attempts__lt` match nothing: EmptyResultSet, no statement).
_MARKS: dict[str, Callable[[int], Any]] = {
    **dict.fromkeys(
        ("AutoField", "BigAutoField", "IntegerField", "BigIntegerField"),
        lambda n: -1_987_654_321 - n,
    ),
    "PositiveIntegerField": lambda n: 1_987_654_321 + n,
    **dict.fromkeys(("CharField", "TextField", "EmailField"), lambda n: f"\u2063postroom mark {n}\u2063"),
    "DateTimeField": lambda n: datetime(2001, 2, 3, 4, 5, 6, 789012 - n, tzinfo=UTC),
}


def _mark(field: Field[Any, Any], n: int) -> Any:
    target = field.target_field if field.remote_field else field  # type: ignore[attr-defined]
    kind = target.get_internal_type()
    if kind not in _MARKS:  # pragma: no cover - a programming error
        raise TypeError(f"no per-call mark for a {kind} ({field})")
    return _MARKS[kind](n)


def _places(params: tuple[Any, ...], prepared: list[Any]) -> tuple[int, ...] | None:
    """Where each of the `prepared` marks stands in `params`, if each stands there exactly once."""
    places = []
    for mark in prepared:
        found = [i for i, p in enumerate(params) if p == mark]
        if len(found) != 1:
            return None
        places.append(found[0])
    return tuple(places)


class _Plan:
    def __init__(self, queryset: QuerySet[Any], db: str) -> None:
        compiler = queryset.query.get_compiler(using=db)
        self.connection = compiler.connection
        self.compiler = compiler
        self.sql, params = compiler.as_sql()
        self.params = tuple(params)
        self.model = queryset.model
        self.db = db
        columns = [s[0] for s in compiler.select[: compiler.col_count]]
        self.converters = compiler.get_converters(columns)
        klass_info = compiler.klass_info
        if klass_info is not None and not queryset.query.values_select:
            fields = klass_info["select_fields"]
            self.start, self.end = fields[0], fields[-1] + 1
            self.attnames = [s[0].target.attname for s in compiler.select[self.start : self.end]]
            self.annotations = list(compiler.annotation_col_map.items())
            # The select_related rows (e.g. an interaction's agent and box), as QuerySet sets them.
            self.populators = get_related_populators(klass_info, compiler.select, db)
        else:
            self.start = self.end = 0
            self.attnames, self.annotations, self.populators = [], [], []

    def fetch(self, params: tuple[Any, ...] | None = None) -> list[Any]:
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql, self.params if params is None else params)
            rows = cursor.fetchall()
        if self.converters:
            rows = list(self.compiler.apply_converters(rows, self.converters))
        return rows

    def objects(self, params: tuple[Any, ...] | None = None) -> list[Model]:
        """The rows as model instances, with the queryset's annotations and related rows."""
        found = []
        for row in self.fetch(params):
            obj = self.model.from_db(self.db, self.attnames, row[self.start : self.end])
            for name, pos in self.annotations:
                setattr(obj, name, row[pos])
            for populator in self.populators:
                populator.populate(row, obj)
            found.append(obj)
        return found


class Compiled:
    """`make()` (a queryset of constant arguments, e.g. `Lease.objects.all()`) compiled
    once per thread and connection. `make` must give the same query at every call."""

    def __init__(self, make: Callable[[], QuerySet[Any]]) -> None:
        self.make = make
        self._local = threading.local()

    def _plan(self) -> _Plan:
        plan: _Plan | None = getattr(self._local, "plan", None)
        if plan is not None and connections[plan.db] is plan.connection:
            return plan
        queryset = self.make()
        plan = self._local.plan = _Plan(queryset, queryset.db)
        return plan

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows as tuples (a `values_list` queryset: its columns)."""
        return [tuple(row) for row in self._plan().fetch()]

    def objects(self) -> list[Model]:
        """The rows as model instances, with the queryset's annotations set on them."""
        return self._plan().objects()


class _Update:
    """One compiled UPDATE: its SQL and parameters, where each per-call value goes (`at`,
    None: the queryset's own update at every call), and for what `key` and connection."""

    def __init__(
        self,
        key: object,
        queryset: QuerySet[Any],
        values: dict[str, Any],
        fields: tuple[Field[Any, Any], ...],
        marks: tuple[Any, ...],
    ) -> None:
        queryset._for_write = True  # the database `update` would write to
        self.key, self.db = key, queryset.db
        query = queryset.query.chain(UpdateQuery)
        query.add_update_values(values)
        query.clear_select_clause()
        if query.related_updates:  # pragma: no cover - a programming error
            raise ValueError("a compiled update writes one table")
        compiler = query.get_compiler(self.db)
        self.connection = compiler.connection
        sql, params = compiler.as_sql()
        self.sql, self.params = sql, tuple(params)
        prepared = [field.get_db_prep_save(mark, connection=self.connection) for field, mark in zip(fields, marks, strict=True)]
        self.at = _places(self.params, prepared)

    def execute(self, fields: tuple[Field[Any, Any], ...], args: tuple[Any, ...], answer: Callable[[Any], Any]) -> Any:
        """The statement with `args` where the marks were (`at`: not None), prepared as
        Django prepares them (`get_db_prep_save`); `answer(cursor)` after it."""
        params = list(self.params)
        for at, field, value in zip(self.at, fields, args, strict=True):  # type: ignore[arg-type]
            params[at] = field.get_db_prep_save(value, connection=self.connection)
        with transaction.mark_for_rollback_on_error(using=self.db), self.connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            return answer(cursor)


class CompiledUpdate:
    """`make(*args).update(**values(*args))` compiled once per thread, connection and `key`:
    the key names everything `make` and `values` depend on besides `args` (a node's ticket),
    so that the same key always gives the same statement. `args` are the per-call values (a
    row's id, a text), one for each of `fields`, the model fields that prepare them: the
    statement is compiled with a mark in each one's place, and each call puts its values,
    prepared as Django prepares them (`get_db_prep_save`), where the marks were. Used only
    where each mark stands exactly once in the compiled parameters, as Django prepared it;
    otherwise, and for a None (which Django writes as NULL, not as a parameter), the call is
    the queryset's own `update`. `run` gives the number of rows updated, as `update`."""

    def __init__(self, *fields: Field[Any, Any]) -> None:
        self.fields = fields
        self.marks = tuple(_mark(field, n) for n, field in enumerate(fields))
        self._local = threading.local()

    def run(
        self,
        key: object,
        make: Callable[..., QuerySet[Any]],
        values: Callable[..., dict[str, Any]],
        *args: Any,
    ) -> int:
        if len(args) != len(self.fields):  # pragma: no cover - a programming error
            raise TypeError(f"{len(self.fields)} per-call values expected, {len(args)} given")
        plan: _Update | None = getattr(self._local, "plan", None)
        if plan is None or plan.key != key or connections[plan.db] is not plan.connection:
            plan = self._local.plan = _Update(key, make(*self.marks), values(*self.marks), self.fields, self.marks)
        if plan.at is None or any(value is None for value in args):
            return make(*args).update(**values(*args))
        return plan.execute(self.fields, args, _rowcount)


def _rowcount(cursor: Any) -> int:
    return cursor.rowcount


def _rows(cursor: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in cursor.fetchall()]


class CompiledUpdates:
    """Several `CompiledUpdate`s of one purpose, each compiled once per thread, connection
    and `key` and all kept (a claim of n rows, a fenced write of some set of columns:
    decision 0062's statements, written by hand until decision 0068), optionally with
    ``RETURNING`` the `returning` columns of the rows it updated (SQLite ≥ 3.35 and
    PostgreSQL). The key names everything `make` and `values` depend on besides `args`,
    and the `fields` that prepare the args, one per arg (a None is no arg: it goes in the
    key, written by `values` as the constant it is). `run` gives the number of rows
    updated, `returned` those rows' `returning` columns as the database gives them."""

    def __init__(self, *returning: str) -> None:
        self.returning = returning
        self._local = threading.local()

    def _plan(
        self,
        key: object,
        fields: tuple[Field[Any, Any], ...],
        make: Callable[..., QuerySet[Any]],
        values: Callable[..., dict[str, Any]],
    ) -> _Update:
        plans: dict[object, _Update] | None = getattr(self._local, "plans", None)
        if plans is None or len(plans) > 256:
            plans = self._local.plans = {}
        plan = plans.get(key)
        if plan is None or connections[plan.db] is not plan.connection:
            marks = tuple(_mark(field, n) for n, field in enumerate(fields))
            queryset = make(*marks)
            plan = _Update(key, queryset, values(*marks), fields, marks)
            if self.returning:
                if plan.at is None:  # pragma: no cover - a programming error
                    raise TypeError(f"{key}: its values do not stand once each in the compiled statement")
                opts, quote = queryset.model._meta, plan.connection.ops.quote_name
                columns = ", ".join(quote(opts.get_field(name).column) for name in self.returning)
                plan.sql = f"{plan.sql} RETURNING {columns}"
            plans[key] = plan
        return plan

    def run(
        self,
        key: object,
        fields: tuple[Field[Any, Any], ...],
        make: Callable[..., QuerySet[Any]],
        values: Callable[..., dict[str, Any]],
        *args: Any,
    ) -> int:
        """``make(*args).update(**values(*args))``: the number of rows updated. Where
        the marks did not each stand once as Django prepared them, and for a None (which
        Django writes as NULL, not as a parameter), the queryset's own `update`."""
        plan = self._plan(key, fields, make, values)
        if plan.at is None or any(value is None for value in args):
            return make(*args).update(**values(*args))
        return plan.execute(fields, args, _rowcount)

    def returned(
        self,
        key: object,
        fields: tuple[Field[Any, Any], ...],
        make: Callable[..., QuerySet[Any]],
        values: Callable[..., dict[str, Any]],
        *args: Any,
    ) -> list[tuple[Any, ...]]:
        """The same update, giving each updated row's `returning` columns."""
        if any(value is None for value in args):  # pragma: no cover - a programming error
            raise TypeError(f"{key}: a None is no argument (put it in the key)")
        plan = self._plan(key, fields, make, values)
        return plan.execute(fields, args, _rows)


class CompiledAt:
    """`make(*at)`: a `values_list` queryset whose arguments are times, each compared with a
    datetime field of `field`'s kind (e.g. what is due by now; what is due, or held under a
    lease that ran out before another time). Compiled once per thread, connection and
    `count` (the first `count` rows: a LIMIT is part of the SQL) with times of its own;
    later calls put theirs, prepared as Django prepares them, in their places. Used only
    where the compiled statement carries each of those times exactly once, as Django
    prepared it; otherwise every call is the queryset's own."""

    def __init__(self, make: Callable[..., QuerySet[Any]], field: Field[Any, Any]) -> None:
        self.make, self.field = make, field
        self._local = threading.local()

    def _prepared(self, at: datetime, conn: Any) -> Any:
        # What a lookup on `field` passes (Lookup.get_prep_lookup, get_db_prep_lookup).
        return self.field.get_db_prep_value(self.field.get_prep_value(at), conn, prepared=True)

    def _queryset(self, at: tuple[datetime, ...], count: int | None) -> QuerySet[Any]:
        queryset = self.make(*at)
        return queryset if count is None else queryset[:count]

    def rows(self, *at: datetime, count: int | None = None) -> list[tuple[Any, ...]]:
        plans: dict[int | None, _Plan] | None = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        plan = plans.get(count)
        if plan is None or connections[plan.db] is not plan.connection:
            marks = tuple(_MARKS["DateTimeField"](n) for n in range(len(at)))
            queryset = self._queryset(marks, count)
            plan = plans[count] = _Plan(queryset, queryset.db)
            plan.at = _places(plan.params, [self._prepared(m, plan.connection) for m in marks])  # type: ignore[attr-defined]
        if plan.at is None:  # type: ignore[attr-defined]
            return [tuple(row) for row in self._queryset(at, count)]
        params = list(plan.params)
        for place, value in zip(plan.at, at, strict=True):  # type: ignore[attr-defined]
            params[place] = self._prepared(value, plan.connection)
        return [tuple(row) for row in plan.fetch(tuple(params))]


class CompiledIn:
    """`make(values)`: a queryset whose one argument is the list `values`, compared with
    `field` (`field__in=values`, e.g. the interactions a reply names by guid), compiled once
    per thread, connection and number of values, up to `up_to` values (more are read the
    ordinary way: each count is a statement of its own). Used only where the compiled
    statement's parameters are exactly the values as Django prepares them for `field`
    (or those values again, one list after the other, where it asks two columns of the
    same kind for them); otherwise every call is the queryset's own. The rows are model instances with their
    select_related rows (decision 0055)."""

    def __init__(self, make: Callable[[list[Any]], QuerySet[Any]], field: Field[Any, Any], up_to: int) -> None:
        self.make, self.field, self.up_to = make, field, up_to
        self._local = threading.local()

    def _prepared(self, values: list[Any], conn: Any) -> list[Any]:
        return [self.field.get_db_prep_value(v, conn, prepared=False) for v in values]

    def objects(self, values: list[Any]) -> list[Model]:
        if len(values) > self.up_to:
            return list(self.make(values))
        plans: dict[int, _Plan | None] | None = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        plan = plans.get(len(values))
        if plan is None or connections[plan.db] is not plan.connection:
            queryset = self.make(values)
            plan = _Plan(queryset, queryset.db)
            plan.fits = _repeats(list(plan.params), self._prepared(values, plan.connection))  # type: ignore[attr-defined]
            plans[len(values)] = plan
        if not plan.fits:  # type: ignore[attr-defined]
            return list(self.make(values))
        return plan.objects(tuple(self._prepared(values, plan.connection) * plan.fits))  # type: ignore[attr-defined]


def _repeats(params: list[Any], prepared: list[Any]) -> int:
    """How many times `params` are the `prepared` values in order, one list after the
    other (a query asking two columns for the same list: the contacts' keys, decision
    0068), or 0 if they are anything else."""
    if not prepared or len(params) % len(prepared):
        return 0
    times = len(params) // len(prepared)
    return times if params == prepared * times else 0
