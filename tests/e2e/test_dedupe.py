"""Window 4 of issue 7: one mail, one interaction, across boxes, whatever the timing.

A mail sent To support@ and Cc sales@ arrives in both boxes; each box has its own watcher
thread. The cross-box check is backed by a unique index, so two watchers taking the two
copies at the same instant on PostgreSQL (READ COMMITTED) still make one interaction and
one auto-response; the loser records its copy. And a Message-ID alone is not an identity:
a mailer that reuses one for different mails still gets each mail taken.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from postroom.engine import reception
from postroom.mail.imap import ImapSession
from postroom.store.models import Interaction, Mailbox, Outgoing
from tests.e2e.boxes import auto_responses, mail, run, write_in

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

SALES = """
[[incoming]]
address = "{sales}"
password = "{sales_pw}"
skills = ["support"]
"""


def test_two_watchers_taking_one_mail_at_once_make_one_interaction(make_center, monkeypatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the race needs concurrent writers: PostgreSQL (SQLite serialises them)")
    center = make_center(SALES)
    msg = mail(center, Cc=center.address("sales"))
    write_in(center, msg, "support")
    write_in(center, msg, "sales")
    boxes = [Mailbox.objects.get(address=center.address(who)) for who in ("support", "sales")]

    # Both threads pass the cross-box check before either inserts: they meet at a barrier
    # in the contact lookup, which runs between the check and the insert.
    barrier = threading.Barrier(2, timeout=20)
    met: set[int] = set()
    real_lookup = reception.contacts.lookup

    def lookup_at_the_barrier(address):
        me = threading.get_ident()
        if me not in met:
            met.add(me)
            barrier.wait()
        return real_lookup(address)

    monkeypatch.setattr(reception.contacts, "lookup", lookup_at_the_barrier)
    errors: list[BaseException] = []

    def watcher(box: Mailbox) -> None:
        session = ImapSession(center.engine.site.imap_account(box.login, center.engine.site.password_for(box.address), box.folder)).open()
        try:
            reception.sync_cursor(box, session)
            (uid,) = session.new_uids(0)
            message = session.fetch([uid])[uid]
            reception.take_incoming(box, session, message, center.engine.site, center.clock())
        except BaseException as exc:  # reported below, with the thread's own traceback lost
            errors.append(exc)
        finally:
            session.close()
            connection.close()

    threads = [threading.Thread(target=watcher, args=(box,)) for box in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(met) == 2  # the race really happened

    (ix,) = Interaction.objects.all()
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 1
    other = next(b for b in boxes if b.pk != ix.mailbox_id)
    assert [c[0] for c in ix.copies] == [other.pk]
    # And it ends as one auto-response in the customer's mailbox, both copies cleared.
    monkeypatch.setattr(reception.contacts, "lookup", real_lookup)
    run(center)
    assert len(center.wait_for("carol", 1)) == 1 and len(auto_responses(center)) == 1


def test_a_reused_message_id_on_a_different_mail_is_not_dropped(center) -> None:
    first = mail(center, subject="Invoice 1001")
    second = mail(center, subject="Invoice 1002")
    del second["Message-ID"]
    second["Message-ID"] = first["Message-ID"]  # a mailer with a constant Message-ID
    write_in(center, first)
    write_in(center, second, count=2)
    run(center)
    assert sorted(Interaction.objects.values_list("subject", flat=True)) == ["Invoice 1001", "Invoice 1002"]
    assert len(center.wait_for("carol", 2)) == 2 and len(auto_responses(center)) == 2
