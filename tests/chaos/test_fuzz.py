"""Hypothesis fuzz of MIME structure and header values, on the real mail stack: each
drawn message (tests/chaos/mime.py) is APPENDed to a watched box and the engine takes
it. Whatever the bytes: the engine stays up (no step raises), the message becomes an
interaction (or a copy folded into one with the same Message-ID) or is quarantined with a
reason Postroom can name, a message with a sign of automatic mail gets no auto-response,
and nothing is deleted from the server.

The engine runs in-process here (`Engine.run_until_idle`, the same step functions the
production threads call), so each example costs an APPEND and one round, not a process
start; the corpus test runs the production process on real mail. Derandomized: the same
examples on every run; `POSTROOM_FUZZ_EXAMPLES` sets how many.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, event, given, settings

from postroom.store.models import Interaction, Mailbox, Outgoing, Quarantined
from tests.chaos.corpus import QUARANTINE_FOLDER
from tests.chaos.mime import UNIQUE, Fuzzed, hostile_mail

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("POSTROOM_FUZZ_EXAMPLES", "120"))


def count(center, folder: str) -> int:
    client = center.imap("support")
    try:
        if not client.folder_exists(folder):
            return 0
        return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mail=hostile_mail())
def test_hostile_mail_is_taken_or_quarantined_never_answered_if_automatic_never_deleted(center, mail: Fuzzed) -> None:
    appended = center.__dict__.setdefault("fuzz_appended", [])
    raw = mail.raw.replace(UNIQUE, f"<fuzz-{len(appended)}@example.org>".encode())
    client = center.imap("support")
    try:
        answer = client.append("INBOX", raw)
    finally:
        client.logout()
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", answer).group(1))
    appended.append(uid)

    center.engine.run_until_idle()  # raises if any step does: the engine would not stay up

    box = Mailbox.objects.get(address=center.address("support"))
    ix = Interaction.objects.filter(mailbox=box, uid=uid).first()
    folded = any(copy[0] == box.pk and copy[2] == uid for i in Interaction.objects.exclude(copies=[]) for copy in i.copies)
    quarantined = Quarantined.objects.filter(mailbox=box, uid=uid).first()
    assert (ix is not None) + folded + (quarantined is not None) == 1, (ix, folded, quarantined)
    event("interaction" if ix else "folded into another" if folded else f"quarantined: {quarantined.reason[:40]}")
    if quarantined is not None:
        assert quarantined.reason.strip() and not quarantined.reason.startswith("internal error"), quarantined.reason
    if ix is not None and mail.automatic:
        assert not Outgoing.objects.filter(interaction=ix, kind=Outgoing.AUTO_RESPONSE).exists(), ix.auto_response_skipped
    # Nothing deleted: everything appended so far is on the server, in the inbox or set aside.
    assert count(center, "INBOX") + count(center, QUARANTINE_FOLDER) == len(appended)
