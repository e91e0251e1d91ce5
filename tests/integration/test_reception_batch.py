"""Reception's batch writes (decision 0040): journal rows together at the batch's end,
dropped with a step that rolls back; the auto-response rate limit by its indexed key."""

from __future__ import annotations

import importlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection, transaction
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
