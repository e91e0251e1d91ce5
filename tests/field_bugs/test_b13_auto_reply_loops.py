"""B-13: auto-reply loops (out-of-office, no-reply, bounces).

In the field (osTicket#1041, chatwoot#5131, freescout#3670, #688, faveo#150): "Automated
Response: Re: Automated Response: ..." eleven times over; mailer-daemon ping-pong; a CRM
that changed the address on every bounce.

Postroom never answers automatic mail automatically (RFC 3834 §2: Auto-Submitted,
auto-reply headers, Precedence, list headers, the null reverse-path; DSNs are
quarantined), marks its own auto-responses `Auto-Submitted: auto-replied` and sends them
with a null reverse-path, and sends at most one per interaction. Shown on the real stack
with each kind of automatic mail, and with two Postroom instances writing to each other.
Per-address caps (issue 8 #6) are on branch mailsec.
"""

from __future__ import annotations

import signal
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from postroom.store.models import Interaction, Outgoing, Quarantined
from tests.chaos.corpus import FIXTURES
from tests.chaos.harness import build_site, wait_for
from tests.e2e.databases import fresh_database
from tests.field_bugs.helpers import auto_responses, customer_mail, run_until, send

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]


def automatic(center, sender: str, subject: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = center.address("support")
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("auto", domain="customer.test")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("I am away until Monday.\n")
    return msg


def test_b13_automatic_mail_of_every_kind_gets_no_auto_response(center) -> None:
    carol = center.address("carol")
    cases = {
        "out of office": automatic(center, carol, "Automatic reply: Where is my order?", Auto_Submitted="auto-replied"),
        "vacation": automatic(center, carol, "Re: Where is my order?", X_Autoreply="yes", Precedence="bulk"),
        "mailing list": automatic(center, carol, "[shop-users] kettles", List_Id="<shop-users.lists.customer.test>"),
        "auto-generated notice": automatic(center, carol, "Your order has shipped", Auto_Submitted="auto-generated"),
    }
    for msg in cases.values():
        send(center, msg)
    # A delivery report, as an MTA writes it (null reverse-path, multipart/report).
    center.append("support", (FIXTURES / "bounces" / "sisimai-lhost-postfix-01.eml").read_bytes())
    center.engine.run_until_idle()

    answered = Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).values_list("interaction__subject", flat=True)
    assert list(answered) == []
    assert Interaction.objects.count() == len(cases)
    assert all(ix.auto_response_skipped for ix in Interaction.objects.all())
    assert Quarantined.objects.filter(reason__startswith="bounce").count() == 1


def test_b13_the_auto_response_says_it_is_automatic_and_comes_once(center) -> None:
    msg = customer_mail(center)
    send(center, msg)
    center.engine.run_until_idle()
    center.append("support", msg.as_bytes())  # the same mail again (a resend, a second copy)
    center.engine.run_until_idle()
    run_until(center, "the auto-response", lambda: len(auto_responses(center)) >= 1)
    (ar,) = auto_responses(center)
    assert ar["Auto-Submitted"] == "auto-replied"
    assert ar["Return-Path"] == "<>"  # RFC 3834 §3.3: no bounce can come back to loop
    assert ar["In-Reply-To"] == msg["Message-ID"]


def test_b13_two_postroom_instances_writing_to_each_other_stop_after_one_round(center, mailstack, new_user, tmp_path) -> None:
    """Company A's support box writes to company B's (another domain); both run Postroom."""
    database = fresh_database(tmp_path, "b13")
    other = build_site(mailstack, new_user, tmp_path, database, boxes=("support",), agents=1, domain="customer.test")
    try:
        other.cli("load", str(other.config))
        engine = other.start_engine()
        ours, theirs = center.address("support"), other.address("support")
        hello = EmailMessage()
        hello["From"] = f"Example Support <{ours}>"
        hello["To"] = theirs
        hello["Subject"] = "About our joint customer"
        hello["Message-ID"] = make_msgid("a", domain="example.test")
        hello.set_content("Could you look into this?")
        center.send(hello, theirs, ours)
        wait_for("their auto-response in our box", lambda: len(center.messages("support")) == 1, timeout=60, engine=engine)
        center.engine.run_until_idle()  # we take their auto-response: it is automatic
        (ix,) = Interaction.objects.all()
        assert ix.auto_response_skipped, ix.auto_response_skipped
        assert not Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).exists()
        assert database.scalar("SELECT COUNT(*) FROM store_interaction") == 1
        assert engine.stop(signal.SIGTERM) == 0
        assert other.count("support") == 1  # only our first mail: nothing came back to them
    finally:
        for engine in other.engines:
            if engine.poll() is None:
                engine.stop(signal.SIGKILL)
        database.drop()


def test_b13_one_address_writing_again_and_again_gets_at_most_three_auto_responses(make_center) -> None:
    center = make_center('\n[auto_response]\nmax_per_address = 3\nwindow = "1d"\n')
    for n in range(5):
        send(center, customer_mail(center, subject=f"Hello #{n}"))
    center.engine.run_until_idle()
    assert Interaction.objects.count() == 5
    assert Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count() == 3
