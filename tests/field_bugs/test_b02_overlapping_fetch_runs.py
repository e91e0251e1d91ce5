"""B-2: overlapping fetch runs.

In the field (osTicket#1976; FreeScout kills long fetches and clears stale mutexes): a cron
run overlapped the previous one, so the same mail produced several tickets.

Postroom must have one owner: a second engine started on the same database refuses to
start, or stays out of the way; either way every customer gets exactly one auto-response
and one reply. Shown with two `postroom engine` processes on one database and mailboxes,
while SMTP is slow (each answer from the server held back a little), which is when a
second sender finds a row the first is still sending.
"""

from __future__ import annotations

import signal

import pytest

from tests.chaos.harness import mail_queue_empty
from tests.e2e.enginerun import make_deployment, wait_until
from tests.field_bugs.helpers import AgentAtHerDesk, mail_to_support

pytestmark = pytest.mark.mailstack

MAILS = 2


def test_b02_two_engines_on_one_database_one_owner_nothing_doubled(mailstack, new_user, tmp_path, proxy) -> None:
    slow = proxy(mailstack.submission_port)
    slow.delay = 0.3  # every answer of the SMTP server comes 0.3 s late
    dep = make_deployment(mailstack, new_user, tmp_path)
    text = dep.config.read_text()
    dep.config.write_text(text.replace(f"smtp_port = {mailstack.submission_port}", f"smtp_port = {slow.port}"))
    try:
        dep.load()
        dep.ready("alice")
        first = dep.start_engine()
        alice = AgentAtHerDesk(dep)
        sent = [mail_to_support(dep, "Order #0 missing")]
        wait_until("the first engine to answer", lambda: dep.statuses() == ["closed"], timeout=60, engine=first, step=alice)
        second = dep.start_engine()
        sent += [mail_to_support(dep, f"Order #{n} missing") for n in range(1, MAILS)]
        wait_until(
            "every interaction to close",
            lambda: dep.statuses() == ["closed"] * MAILS
            and len(dep.center.messages("carol")) >= 2 * MAILS  # an auto-response and a reply each
            and mail_queue_empty(mailstack, (address for address, _ in dep.center.users.values())),
            timeout=120,
            engine=first,
            step=alice,
        )
        refused = second.poll()
        for engine in (first, second):
            engine.stop(signal.SIGTERM)
        print(f"second engine: {'exited ' + str(refused) if refused is not None else 'ran alongside'}")

        center = dep.center
        carol = center.messages("carol")
        autos = [m for m in carol if m["Auto-Submitted"] == "auto-replied"]
        replies = [m for m in carol if not m["Auto-Submitted"]]
        assert sorted(str(m["In-Reply-To"]) for m in autos) == sorted(str(m["Message-ID"]) for m in sent)
        assert sorted(str(m["In-Reply-To"]) for m in replies) == sorted(str(m["Message-ID"]) for m in sent)
        forwarded = [str(m["Message-ID"]) for m in center.messages("alice") if m["Reply-To"]]
        assert len(forwarded) == len(set(forwarded)) == MAILS
    finally:
        dep.cleanup()
