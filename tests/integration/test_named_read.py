"""The outbound box's read of the interactions a reply's tokens name, with the SQL Django
compiled once (decision 0055): the same instances, every field of the interaction, its
agent and its box, as the ordinary query makes, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from postroom.engine import replies
from postroom.engine.replies import _named_queryset, read_named
from postroom.store.models import Agent, Interaction, Mailbox

pytestmark = pytest.mark.django_db(transaction=True)


def values(ix: Interaction) -> dict[str, object]:
    out = {f.attname: getattr(ix, f.attname) for f in Interaction._meta.concrete_fields}
    for rel in ("agent", "mailbox"):
        other = getattr(ix, rel)
        out[rel] = None if other is None else {f.attname: getattr(other, f.attname) for f in type(other)._meta.concrete_fields}
    return out


def interactions() -> list[Interaction]:
    box = Mailbox.objects.create(address="support@example.test", login="s", display_name="Support")
    agent = Agent.objects.create(name="Alice", address="alice@example.test", skills=["x"], probationary=True)
    now = timezone.now()
    made = []
    for i in range(4):
        made.append(
            Interaction.objects.create(
                node_id="n", mailbox=box, uidvalidity=1, uid=i + 1, customer=f"c{i}@customer.test",
                arrival_time=now - timedelta(seconds=i), subject=f"Ünïcode {i}", references=[f"<r{i}@x>"],
                excluded_agents=["bob@example.test"] if i else [], agent=agent if i % 2 else None,
                routed_at=now if i % 2 else None, approval=bool(i % 2),
            )
        )
    return made


def test_the_compiled_read_makes_the_same_instances_as_the_query() -> None:
    made = interactions()
    for n in (1, 2, 3, 4):
        guids = [ix.guid for ix in made[:n]]
        for _ in range(2):  # compiled at the first call, reused at the second
            got = sorted(read_named(guids), key=lambda ix: ix.pk)
            want = sorted(_named_queryset(guids), key=lambda ix: ix.pk)
            # The agent and the box come with the row, not from a query of their own later.
            assert all({"agent", "mailbox"} <= set(ix._state.fields_cache) for ix in got)
            assert [values(ix) for ix in got] == [values(ix) for ix in want]
            assert all(ix._state.adding is False and ix._state.db == want[0]._state.db for ix in got)
        assert replies._NAMED._local.plans[n].fits, connection.vendor
    # Guids nobody has: nothing, and more guids than are kept compiled: the ordinary query.
    assert read_named([uuid.uuid4()]) == []
    many = [ix.guid for ix in made] + [uuid.uuid4() for _ in range(replies.COMPILED_UP_TO)]
    assert sorted(ix.pk for ix in read_named(many)) == sorted(ix.pk for ix in made)


def test_the_compiled_read_sees_writes_made_after_it_was_compiled() -> None:
    made = interactions()
    read_named([made[1].guid])
    Interaction.objects.filter(pk=made[1].pk).update(subject="changed", version=7)
    Agent.objects.filter(address="alice@example.test").update(probationary=False)
    (ix,) = read_named([made[1].guid])
    assert (ix.subject, ix.version, ix.agent.probationary) == ("changed", 7, False)


def test_each_thread_compiles_its_own() -> None:
    made = interactions()
    read_named([made[0].guid])
    seen: list[object] = []

    def other() -> None:
        try:
            seen.append([ix.pk for ix in read_named([made[0].guid])])
        except Exception as exc:  # noqa: BLE001 - reported below
            seen.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [[made[0].pk]]
