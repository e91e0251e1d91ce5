"""B-18: charset and encoding crashes.

In the field (zammad#3019, #2722, #2227, #3115, #6141; twenty#13366): byte 0xb5 stopped a
channel for two days; RFC 2231 file names, ISO-2022-JP, a malformed Content-Type and a
NUL byte in the subject (which PostgreSQL refuses) each broke ingest.

Postroom decodes tolerantly (charset fallback and replacement), strips NULs from what it
stores, keeps the raw message on the server, and never fails a batch. Shown with one
batch of such mails (on SQLite and, in the PostgreSQL pass, on PostgreSQL), each of which
must become an interaction, be acknowledged, and reach the agent whole.
"""

from __future__ import annotations

import pytest

from postroom.store.commands import hang_up
from postroom.store.models import Interaction, Outgoing, Quarantined
from tests.chaos.corpus import FIXTURES
from tests.field_bugs.helpers import forwards, run_until

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def raw(center, subject: bytes, body: bytes = b"Hello.\r\n", headers: bytes = b"", n: int = 0) -> bytes:
    # A sender of its own each (an address the stack refuses: the auto-response is made,
    # and dies at RCPT): no per-address cap can hide a mail that was not acknowledged.
    return (
        b"From: Customer <customer" + str(n).encode() + b"@example.org>\r\n"
        b"To: " + center.address("support").encode() + b"\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Message-ID: <b18-" + str(n).encode() + b"@customer.test>\r\n"
        b"Date: Wed, 25 Nov 2026 09:00:00 +0000\r\n" + headers + b"\r\n" + body
    )


def test_b18_one_batch_of_broken_encodings_every_mail_taken_and_delivered(center) -> None:
    center.ready("alice")
    japanese = (FIXTURES / "inbound" / "mikelmail-multi_charset-japanese_iso_2022.eml").read_bytes()
    japanese = japanese.replace(b"\r\n\r\n", b"\r\nMessage-ID: <b18-jp@customer.test>\r\n\r\n", 1)
    batch = [
        raw(center, b"Preis 5 \xb5g zu hoch", n=1),  # an undeclared 8-bit byte (0xb5)
        raw(center, b"Invoice attached", n=2, headers=(
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n"),
            body=b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--XX\r\n"
                 b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
                 b" filename*0*=utf-8''Rechnung%20M%C3%A4rz;\r\n filename*1*=%E2%82%AC.pdf\r\n"
                 b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n"),
        japanese,  # ISO-2022-JP subject and body
        raw(center, b"Broken type", n=4, headers=b'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf-8\r\n'),
        raw(center, b"NUL \x00 in the subject", n=5),
        raw(center, b"=?utf-8?B?bGllIGFib3V0IGNoYXJzZXQ=?=", n=6,
            headers=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
            body=b"Gr\xfc\xdfe aus M\xfcnchen\r\n"),  # says UTF-8, is Latin-1
        raw(center, b"=?x-unknown?Q?caf=E9?=", n=7),
    ]
    for message in batch:
        center.append("support", message)
    center.engine.run_until_idle()

    assert not Quarantined.objects.exists()
    assert Interaction.objects.count() == len(batch)
    assert all("\x00" not in ix.subject for ix in Interaction.objects.all())
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == len(batch)
    # Alice answers nothing, so she holds one at a time: each is forwarded whole in turn.
    for n in range(len(batch)):
        run_until(center, f"forward {n + 1}", lambda n=n: len(forwards(center)) == n + 1)
        (ix,) = Interaction.objects.filter(status="delivered")
        hang_up(ix, by_user=ix.agent.user, code="no_action_needed", now=center.clock())
    bodies = [m.get_body(("plain", "html")) for m in forwards(center)]
    assert all(b is not None for b in bodies)
