"""Reception's batch writes (decision 0040): journal rows together at the batch's end,
dropped with a step that rolls back; the auto-response rate limit by its indexed key."""

from __future__ import annotations

import importlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from postroom.engine.autoresponse import recent_auto_responses
from postroom.store import journal
from postroom.store.models import Interaction, JournalEvent, Mailbox, Outgoing

pytestmark = pytest.mark.django_db


def kinds() -> list[str]:
    return list(JournalEvent.objects.order_by("id").values_list("kind", flat=True))


def test_a_batch_writes_its_rows_at_its_end_and_drops_a_failed_steps() -> None:
    now = timezone.now()
    with transaction.atomic(), journal.batched():
        journal.record("first", now)
        with pytest.raises(ValueError), journal.savepoint():
            journal.record("undone", now)
            raise ValueError("this mail fails alone")
        journal.record("second", now)
        assert kinds() == []  # not yet written: one INSERT at the end
    assert kinds() == ["first", "second"]


def test_a_failed_batch_writes_no_row_and_the_next_record_is_immediate() -> None:
    now = timezone.now()
    with pytest.raises(RuntimeError), transaction.atomic(), journal.batched():
        journal.record("lost", now)
        raise RuntimeError("the database went away")
    journal.record("alone", now)
    assert kinds() == ["alone"]


def auto_response(ix: Interaction, n: int, rate_key: str) -> None:
    Outgoing.objects.create(
        key=f"auto_response:{n}", kind=Outgoing.AUTO_RESPONSE, interaction=ix, envelope_from="",
        recipients=[rate_key], message_id=f"<{n}@x>", raw=b"", next_attempt_at=timezone.now(), rate_key=rate_key,
    )


def make(customer: str, reply_to: str = "") -> Interaction:
    box, _ = Mailbox.objects.get_or_create(address="support@example.test", defaults={"login": "s"})
    n = Interaction.objects.count() + 1
    return Interaction.objects.create(
        node_id="n", mailbox=box, uidvalidity=1, uid=n, customer=customer, reply_to=reply_to, arrival_time=timezone.now()
    )


def test_the_rate_limit_counts_by_address_whatever_its_case() -> None:
    since = timezone.now() - timedelta(hours=1)
    auto_response(make("Ann@Customer.test"), 1, "ann@customer.test")
    auto_response(make("bob@customer.test", reply_to="ann@customer.test"), 2, "ann@customer.test")
    auto_response(make("bob@customer.test"), 3, "bob@customer.test")
    assert recent_auto_responses("ANN@customer.test", since=since) == 2
    assert recent_auto_responses("bob@customer.test", since=since) == 1
    assert recent_auto_responses("ann@customer.test", since=timezone.now() + timedelta(seconds=1)) == 0


def test_the_migration_gives_queued_auto_responses_their_key() -> None:
    auto_response(make("Ann@Customer.test"), 1, "")
    auto_response(make("bob@customer.test", reply_to="Carl@Customer.test"), 2, "")
    migration = importlib.import_module("postroom.store.migrations.0011_perfin")
    # A data migration reads the database being migrated from its schema editor (main dfbb3cc).
    migration.rate_keys(apps, SimpleNamespace(connection=connection))
    keys = dict(Outgoing.objects.values_list("key", "rate_key"))
    assert keys == {"auto_response:1": "ann@customer.test", "auto_response:2": "carl@customer.test"}


def test_the_contacts_of_a_whole_batch_in_one_query(django_assert_num_queries) -> None:
    from postroom.store import contacts
    from postroom.store.models import Contact

    vip = Contact.objects.create(address="Ann@Customer.test", level="vip")
    firm = Contact.objects.create(domain="Example.COM", level="gold")
    sub = Contact.objects.create(domain="eu.example.com", level="silver")
    wanted = ["ann@customer.test", "bob@customer.test", "carl@a.eu.example.com", "dora@example.com", "nobody", None]
    with django_assert_num_queries(1):
        found = contacts.lookup_many(wanted)
    assert found == {
        "ann@customer.test": vip, "bob@customer.test": None, "carl@a.eu.example.com": sub,
        "dora@example.com": firm, "nobody": None,
    }
    assert [contacts.lookup(a) for a in wanted] == [vip, None, sub, firm, None, None]



def test_a_batch_asks_for_each_address_and_domain_once() -> None:
    """Fifty senders at one domain: one term per address and one for the domain (decision
    0057; it was one term per sender per domain), the same contacts found."""
    from django.db import connection as conn
    from django.test.utils import CaptureQueriesContext

    from postroom.store import contacts
    from postroom.store.models import Contact

    firm = Contact.objects.create(domain="Customer.TEST", level="gold")
    ann = Contact.objects.create(address="ann@customer.test", level="vip")
    wanted = [f"c{i}@customer.test" for i in range(50)] + ["Ann@customer.test", "ann@customer.test"]
    with CaptureQueriesContext(conn) as queries:
        found = contacts.lookup_many(wanted)
    assert len(queries) == 1
    # 50 senders, ann once (two spellings), the domain once: 52 keys, each asked of both
    # key columns (contacts.by_keys, decision 0068).
    assert queries[0]["sql"].count("customer.test") == 2 * 52
    assert found == {**{f"c{i}@customer.test": firm for i in range(50)}, "Ann@customer.test": ann, "ann@customer.test": ann}


def columns(model, pk: int) -> dict:
    """A row as the database holds it, but its own id, creation time and the ids of rows
    it points at (compared separately)."""
    row = model.objects.filter(pk=pk).values().get()
    for name in ("id", "guid", "created_at", "interaction_id", "key", "message_id", "uid", "dedupe_key"):
        row.pop(name, None)
    return row


def batch_rows(tag: str, box: Mailbox, now) -> tuple[Interaction, Outgoing, JournalEvent]:
    ix = Interaction(
        node_id="n", mailbox=box, uidvalidity=7, uid=int(tag), message_id=f"<{tag}@x>", dedupe_key=f"k{tag}",
        references=["<a@x>", "<b@x>"], customer="Ann@Customer.test", customer_name="Ann Ö", subject="Hello ✓",
        arrival_time=now, priority=3, priority_reasons=[["box default", 3]], queue="billing",
        rules={"hits": ["r1"], "misses": []}, approval=True,
    )
    out = Outgoing(
        key=f"auto_response:{tag}", kind=Outgoing.AUTO_RESPONSE, interaction=ix, envelope_from="",
        recipients=["ann@customer.test"], rate_key="ann@customer.test", message_id=f"<ar{tag}@x>",
        raw=b"Subject: x\n\n\xff", next_attempt_at=now,
    )
    event = JournalEvent(at=now, kind="received", interaction=ix, mailbox=box, detail={"size": 12, "a": [1, None], "s": "ö"})
    return ix, out, event


def test_the_batch_insert_writes_what_bulk_create_writes_and_gives_the_ids(monkeypatch) -> None:
    """journal.flush's own multi-row INSERT (decision 0054) against bulk_create: the same
    column values, the ids set on the rows, the foreign keys taken from the interaction
    inserted first."""
    box, _ = Mailbox.objects.get_or_create(address="support@example.test", defaults={"login": "s"})
    now = timezone.now()
    bulk, real = [], QuerySet.bulk_create
    monkeypatch.setattr(QuerySet, "bulk_create", lambda qs, objs, *a, **k: bulk.append(qs.model) or real(qs, objs, *a, **k))
    with transaction.atomic(), journal.batched():
        ours = batch_rows("1", box, now)
        for row in ours:
            journal.defer(row)
    assert bulk == []  # each table by the plain INSERT, none by bulk_create
    monkeypatch.undo()
    theirs = batch_rows("2", box, now)
    Interaction.objects.bulk_create([theirs[0]])
    Outgoing.objects.bulk_create([theirs[1]])
    JournalEvent.objects.bulk_create([theirs[2]])
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.pk is not None and not mine._state.adding and mine._state.db == "default"
        assert columns(type(mine), mine.pk) == columns(type(other), other.pk)
    assert ours[1].interaction_id == ours[2].interaction_id == ours[0].pk
    assert Outgoing.objects.get(pk=ours[1].pk).raw == b"Subject: x\n\n\xff"
    assert Interaction.objects.get(pk=ours[0].pk).guid == ours[0].guid


def test_the_batch_insert_splits_what_one_statement_cannot_take() -> None:
    """More rows than one statement's parameters (SQLite: 999): several INSERTs, every id
    right."""
    now = timezone.now()
    with transaction.atomic(), journal.batched():
        events = [JournalEvent(at=now, kind=f"k{n}", detail={"n": n}) for n in range(400)]
        for event in events:
            journal.defer(event)
    assert [(e.kind, e.detail["n"]) for e in events] == [
        (row.kind, row.detail["n"]) for row in (JournalEvent.objects.get(pk=e.pk) for e in events)
    ]
    assert len({e.pk for e in events}) == 400



def test_rows_that_share_a_time_are_written_as_bulk_create_writes_them() -> None:
    """A datetime object several rows share is prepared once per statement (decision
    0057): every row's time as bulk_create writes it, the shared ones, an equal time in
    another zone and distinct ones alike."""
    from datetime import timezone as tz

    now = timezone.now()
    elsewhere = now.astimezone(tz(timedelta(hours=5, minutes=30)))
    times = [now, now, elsewhere, now + timedelta(microseconds=1), now, elsewhere, now - timedelta(days=400)]

    def events(tag: str) -> list[JournalEvent]:
        return [JournalEvent(at=at, kind=f"{tag}{n}", detail={}) for n, at in enumerate(times)]

    with transaction.atomic(), journal.batched():
        ours = events("a")
        for event in ours:
            journal.defer(event)
    theirs = JournalEvent.objects.bulk_create(events("b"))
    read = {e.kind: e.at for e in JournalEvent.objects.all()}
    assert [read[e.kind] for e in ours] == [read[e.kind] for e in theirs] == times
    with connection.cursor() as cursor:  # the stored text/timestamps themselves, not only as read back
        cursor.execute("SELECT kind, at FROM store_journalevent")
        raw = dict(cursor.fetchall())
    assert [raw[e.kind] for e in ours] == [raw[e.kind] for e in theirs]


def test_a_duplicate_in_the_batch_insert_is_refused_by_the_unique_index() -> None:
    """The uniqueness the lifecycle relies on is still the database's (one interaction per
    mail): the batch's INSERT fails whole."""
    from django.db import IntegrityError

    box, _ = Mailbox.objects.get_or_create(address="support@example.test", defaults={"login": "s"})
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic(), journal.batched():
        first, second = batch_rows("1", box, now)[0], batch_rows("2", box, now)[0]
        second.dedupe_key = first.dedupe_key
        journal.defer(first)
        journal.defer(second)
    assert not Interaction.objects.exists()


def test_the_search_row_is_inserted_as_bulk_create_inserts_it(monkeypatch) -> None:
    """InteractionText, whose key is its interaction's, by the plain INSERT too (decision
    0061; it went through bulk_create before): the same columns, the key from the
    interaction inserted first in the same flush, no id read back."""
    from postroom.store.models import InteractionText

    assert journal._plan(InteractionText, connection) is not None
    box, _ = Mailbox.objects.get_or_create(address="support@example.test", defaults={"login": "s"})
    now = timezone.now()
    bulk, real = [], QuerySet.bulk_create
    monkeypatch.setattr(QuerySet, "bulk_create", lambda qs, objs, *a, **k: bulk.append(qs.model) or real(qs, objs, *a, **k))
    with transaction.atomic(), journal.batched():
        ix = batch_rows("1", box, now)[0]
        text = InteractionText(interaction=ix, subject="Hello ✓", customer_text="Dear team,\nö")
        journal.defer(ix)
        journal.defer(text)
    assert bulk == []
    monkeypatch.undo()
    other = batch_rows("2", box, now)[0]
    other.save()
    (theirs,) = InteractionText.objects.bulk_create([InteractionText(interaction=other, subject="Hello ✓", customer_text="Dear team,\nö")])
    assert text.pk == ix.pk and not text._state.adding and text._state.db == "default"
    mine = InteractionText.objects.filter(pk=ix.pk).values().get()
    ref = InteractionText.objects.filter(pk=other.pk).values().get()
    assert mine.pop("interaction_id") == ix.pk and ref.pop("interaction_id") == other.pk
    assert mine.pop("updated_at") is not None and ref.pop("updated_at") is not None
    assert mine == ref
    # The same key twice is refused by the primary key, as bulk_create's would be.
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic(), journal.batched():
        journal.defer(InteractionText(interaction=ix, subject="again"))


def test_the_values_insert_takes_unprepared_are_what_get_db_prep_save_gives() -> None:
    """Every store model's plan: where a field's value of a type it names is taken as it
    is (decision 0061), get_db_prep_save gives that very value back on this database; and
    the per-statement sharing of None and ints gives what preparing each would."""
    from django.apps import apps
    from django.db import models

    samples = {str: ["", "ä ✓", "x" * 300], type(None): [None], bool: [True, False]}
    plans = 0
    for model in apps.get_app_config("store").get_models():
        plan = journal._plan(model, connection)
        if plan is None:
            continue
        plans += 1
        for field, attname, same in plan.columns:
            assert attname is None or (type(field).pre_save is models.Field.pre_save and attname == field.attname)
            for kind in same:
                for value in samples[kind]:
                    assert field.get_db_prep_save(value, connection) is value, (model, field, value)
            shared: dict = {}
            for value in (None, 0, 7, 7, None):
                if field.get_internal_type() in ("IntegerField", "BigIntegerField", "PositiveIntegerField", "ForeignKey", "OneToOneField") or value is None:
                    assert journal._prepared(field, value, connection, shared) == field.get_db_prep_save(value, connection)
    assert plans >= 10
