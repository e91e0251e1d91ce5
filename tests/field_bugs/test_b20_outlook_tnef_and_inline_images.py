"""B-20: Outlook TNEF and inline images.

In the field (zammad#2403, chatwoot#11948, osTicket PR#779): the body existed only inside
winmail.dat; cid: images without Content-Disposition showed as broken; images were
referenced without cid:.

Postroom forwards the customer's original to the agent, so inline images keep their
Content-IDs and the HTML that points at them. What it does not do yet is decode TNEF: an
agent whose client cannot read winmail.dat sees no text at all (nobody is building it).
"""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

import pytest

from tests.chaos.corpus import FIXTURES
from tests.field_bugs.helpers import customer_mail, forwards, run_until, send

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


def test_b20_inline_images_reach_the_agent_with_their_content_ids(center) -> None:
    center.ready("alice")
    msg = customer_mail(center, subject="The broken part")
    msg.set_content("See the photo.")
    msg.add_alternative('<p>See the photo: <img src="cid:photo-1@customer.test"> and <img src="photo.png"></p>', subtype="html")
    html = msg.get_payload()[1]
    html.add_related(PNG, maintype="image", subtype="png", cid="<photo-1@customer.test>")
    for part in msg.walk():  # Outlook leaves inline images without a Content-Disposition
        if part.get_content_type() == "image/png":
            del part["Content-Disposition"]
    send(center, msg)
    run_until(center, "the forward", lambda: len(forwards(center)) == 1)

    (forward,) = forwards(center)
    images = [p for p in forward.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"] == "<photo-1@customer.test>"
    assert images[0].get_payload(decode=True) == PNG
    body = forward.get_body(("html",)).get_content()
    assert 'src="cid:photo-1@customer.test"' in body and 'src="photo.png"' in body


@pytest.mark.xfail(strict=True, reason="needs TNEF (winmail.dat) decoding, a feature nobody is building: the text stays inside the attachment")
def test_b20_a_body_that_exists_only_inside_winmail_dat_is_readable_by_the_agent(center) -> None:
    center.ready("alice")
    outlook = email.message_from_bytes((FIXTURES / "inbound" / "mimekit-tnef-ukr.eml").read_bytes(), policy=policy.default)
    (tnef,) = [p for p in outlook.walk() if p.get_content_type() == "application/ms-tnef"]
    msg = customer_mail(center, subject="rr test 7")
    msg.clear_content()
    only = EmailMessage()
    msg.make_mixed()
    only.set_content(tnef.get_payload(decode=True), maintype="application", subtype="ms-tnef", filename="winmail.dat")
    msg.attach(only)
    send(center, msg)
    run_until(center, "the forward", lambda: len(forwards(center)) == 1)

    (forward,) = forwards(center)
    assert any(p.get_filename() == "winmail.dat" for p in forward.walk())  # the original is kept
    body = forward.get_body(("plain", "html"))
    assert body is not None and "шостий" in body.get_content()  # its text ("sixth", in Ukrainian)
