"""The private parts of Django 5.2 that Postroom leans on, each named with the decision
that relies on it, so that an upgrade of Django (pinned ``>=5.2.19,<5.3`` in
pyproject.toml) fails here, clearly, instead of somewhere deep in reception or the
sender:

* store/journal (decisions 0054, 0061): which fields' ``get_db_prep_save`` hand a value
  back unchanged (``_unchanged``), ``Field.pre_save``, and what ``bulk_create`` reads to
  decide whether its INSERT is the plain one.
* store/compiled (decisions 0055, 0058, 0064): ``_Plan`` reads the SQL compiler's
  ``select``, ``col_count``, ``klass_info``, ``annotation_col_map``, converters and
  ``get_related_populators``; ``CompiledUpdate`` chains an ``UpdateQuery``.
* store/sqlite (decision 0063): the backend overrides
  ``_start_transaction_under_autocommit``, ``_commit``, ``_rollback``, ``_close``,
  ``get_new_connection``, ``create_cursor`` and the cursor's ``execute`` /
  ``executemany``; it only works while Django's atomic still starts a SQLite transaction
  through the first.

* engine/nodes.keep_connection (decision 0069): `close_at`, set by `connect` and read by
  `close_if_unusable_or_obsolete`.

Nothing here touches a database.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import django
import pytest
from django.db import connection, models, transaction
from django.db.backends.base import base as base_backend
from django.db.backends.sqlite3 import base as sqlite_backend
from django.db.models import query as query_module
from django.db.models.sql import compiler as compiler_module
from django.db.models.sql import query as sql_query
from django.db.models.sql import subqueries

from postroom.store import compiled, journal
from postroom.store.models import Interaction, Outgoing
from postroom.store.sqlite import base as our_sqlite


def changed(what: str, decision: str) -> str:
    return f"Django {django.get_version()} changed {what}: re-check decision {decision}"


def params(function: Callable[..., Any]) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def has(owner: Any, name: str, signature: list[str] | None, decision: str) -> None:
    """`owner.name` exists and, if `signature` is given, takes these parameters."""
    where = f"{getattr(owner, '__name__', owner)}.{name}"
    assert hasattr(owner, name), changed(f"{where} (gone)", decision)
    if signature is not None:
        assert params(getattr(owner, name)) == signature, changed(
            f"{where}'s signature ({params(getattr(owner, name))}, expected {signature})", decision
        )


def test_django_is_the_pinned_series() -> None:
    assert django.VERSION[:2] == (5, 2), changed("its series (5.2 expected)", "0054, 0058, 0061, 0063")


# -- store/journal: _unchanged and the plain INSERT (0054, 0061) ------------------------------


@pytest.mark.parametrize(
    ("field", "values"),
    [
        (models.CharField(max_length=10), ["", "x", "ö" * 3, None]),
        (models.TextField(), ["", "some text", None]),
        (models.BooleanField(), [True, False]),
        (models.BooleanField(null=True), [True, False, None]),
    ],
)
def test_the_fields_journal_trusts_hand_values_back_unchanged(field: models.Field, values: list[Any]) -> None:
    types = journal._unchanged(field)
    assert types, changed(f"{type(field).__name__}'s prep methods (overridden now)", "0061")
    for value in values:
        assert isinstance(value, types)
        assert field.get_db_prep_save(value, connection) is value, changed(
            f"{type(field).__name__}.get_db_prep_save (no longer hands {value!r} back)", "0061"
        )


def test_what_journal_reads_of_fields_and_the_backend() -> None:
    for name, signature in (
        ("get_db_prep_save", ["value", "connection"]),
        ("get_db_prep_value", ["value", "connection", "prepared"]),
        ("get_prep_value", ["value"]),
        ("to_python", ["value"]),
        ("pre_save", ["model_instance", "add"]),
        ("has_db_default", []),
    ):
        has(models.Field, name, signature, "0061")
    assert hasattr(models.Field(), "generated"), changed("Field.generated (gone)", "0054")
    has(models.BinaryField, "get_placeholder", None, "0054")
    has(type(connection.ops), "return_insert_columns", ["fields"], "0054")
    has(type(connection.ops), "binary_placeholder_sql", ["value"], "0054")
    assert hasattr(connection.features, "can_return_rows_from_bulk_insert"), changed(
        "features.can_return_rows_from_bulk_insert (gone)", "0054"
    )
    opts = Outgoing._meta
    assert list(opts.db_returning_fields) == [opts.pk], changed("Options.db_returning_fields", "0054")
    assert opts.parents == {}, changed("Options.parents", "0054")


# -- store/compiled: _Plan and CompiledUpdate (0055, 0058, 0064) ------------------------------


def test_what_compiled_reads_of_the_sql_compiler() -> None:
    has(compiler_module.SQLCompiler, "as_sql", ["with_limits", "with_col_aliases"], "0058")
    has(compiler_module.SQLCompiler, "get_converters", ["expressions"], "0058")
    has(compiler_module.SQLCompiler, "apply_converters", ["rows", "converters"], "0058")
    has(query_module, "get_related_populators", ["klass_info", "select", "db"], "0055")
    has(query_module.RelatedPopulator, "populate", ["row", "from_obj"], "0055")
    has(models.Model, "from_db", ["db", "field_names", "values"], "0058")
    # A queryset with select_related: what _Plan reads off its compiler, in the shapes it reads.
    queryset = Interaction.objects.select_related("agent").annotate(n=models.Value(1))
    comp = queryset.query.get_compiler(using="default")
    comp.as_sql()
    for name in ("select", "col_count", "klass_info", "annotation_col_map"):
        assert hasattr(comp, name), changed(f"SQLCompiler.{name} (gone)", "0058")
    assert set(comp.klass_info) >= {"model", "select_fields", "related_klass_infos"}, changed(
        "SQLCompiler.klass_info's keys", "0055, 0058"
    )
    assert all(isinstance(s, tuple) and len(s) == 3 for s in comp.select), changed(
        "SQLCompiler.select's rows (expression, sql, alias)", "0058"
    )
    assert hasattr(comp.select[0][0], "target"), changed("a selected column's .target", "0058")
    assert "n" in comp.annotation_col_map, changed("SQLCompiler.annotation_col_map", "0058")
    plan = compiled._Plan(queryset, "default")  # builds without touching the database
    assert plan.populators, changed("get_related_populators (no populator for a select_related)", "0055")


def test_what_compiled_update_reads_of_the_update_query() -> None:
    has(sql_query.Query, "chain", ["klass"], "0064")
    has(sql_query.Query, "clear_select_clause", [], "0064")
    has(subqueries.UpdateQuery, "add_update_values", ["values"], "0064")
    query = Outgoing.objects.filter(pk=1).query.chain(subqueries.UpdateQuery)
    query.add_update_values({"last_error": "x"})
    assert query.related_updates == {}, changed("UpdateQuery.related_updates", "0064")
    assert hasattr(Outgoing.objects.all(), "_for_write"), changed("QuerySet._for_write (gone)", "0064")


# -- store/sqlite: the backend's overrides (0063) ---------------------------------------------


OVERRIDDEN = {
    "_start_transaction_under_autocommit": [],
    "_commit": [],
    "_rollback": [],
    "_close": [],
    "get_new_connection": ["conn_params"],
    "create_cursor": ["name"],
    "is_in_memory_db": [],
}


def test_the_sqlite_backend_overrides_what_django_still_has() -> None:
    for name, signature in OVERRIDDEN.items():
        has(sqlite_backend.DatabaseWrapper, name, signature, "0063")
        assert name in vars(our_sqlite.DatabaseWrapper) or name == "is_in_memory_db", name
        assert params(getattr(our_sqlite.DatabaseWrapper, name)) == signature, name
    has(sqlite_backend.SQLiteCursorWrapper, "execute", ["query", "params"], "0063")
    has(sqlite_backend.SQLiteCursorWrapper, "executemany", ["query", "param_list"], "0063")
    # The writer lock is taken where a transaction starts: Django's set_autocommit(False) on
    # SQLite still goes through _start_transaction_under_autocommit (the atomic's BEGIN).
    source = inspect.getsource(base_backend.BaseDatabaseWrapper.set_autocommit)
    assert "_start_transaction_under_autocommit" in source, changed(
        "set_autocommit (no longer starts a SQLite transaction through _start_transaction_under_autocommit)", "0063"
    )
    has(base_backend.BaseDatabaseWrapper, "set_autocommit", ["autocommit", "force_begin_transaction_with_broken_autocommit"], "0063")
    assert "force_begin_transaction_with_broken_autocommit=True" in inspect.getsource(transaction.Atomic.__enter__), changed(
        "Atomic.__enter__ (no longer forces the BEGIN through _start_transaction_under_autocommit)", "0063"
    )


def test_what_keep_connection_reads_of_the_connection() -> None:
    """engine/nodes.keep_connection (decision 0069) clears `close_at`, which `connect` sets
    from CONN_MAX_AGE and `close_if_unusable_or_obsolete` closes by, and leaves the rest
    of that check (autocommit, errors) to Django."""
    has(base_backend.BaseDatabaseWrapper, "close_if_unusable_or_obsolete", [], "0069")
    source = inspect.getsource(base_backend.BaseDatabaseWrapper.close_if_unusable_or_obsolete)
    assert "self.close_at is not None" in source and "self.errors_occurred" in source, changed(
        "close_if_unusable_or_obsolete (no longer closes by close_at and after errors)", "0069"
    )
    assert "self.close_at" in inspect.getsource(base_backend.BaseDatabaseWrapper.connect), changed(
        "connect (no longer sets close_at from CONN_MAX_AGE)", "0069"
    )
