"""postroom.core.autoreply: machines are told apart from people, measured on real mail.

Figures measured on the corpus when these floors were set (parse() + classify()):

* autoreplies/: 14 auto_reply, 3 bounce (the two Boxbe challenge-responses, sent as
  delivery-status reports, and sisimai's postmaster notice), 1 miss (see below).
* bounces/ (380): 365 bounce (96.1 %), 3 auto_reply, 1 list, 10 human, 1 unreadable.  Of the
  10 "human", 5 are BounceParser's spam/virus samples (no mail-system signal at all, not
  bounces) and bluebottle is a challenge-response; apachejames/verizon (post_master, no
  report), fml's "Loop Alert" and a hand-rolled ARF are real misses.
* inbound/ without list traffic: 2 non-human, both DSNs filed under inbound
  (otobo PostMaster-Test10).  replies/ without list traffic: 1, an RT auto-reply.
"""

from __future__ import annotations

import uuid
from email.message import EmailMessage

import pytest

from postroom.core import correlation as corr
from postroom.core.autoreply import Verdict, classify, is_own
from postroom.core.compose import auto_response, forward_to_agent, notice, reply_to_customer
from postroom.mail.message import ParsedMail, parse
from tests.unit.conftest import corpus_files, manifest, parsed

AUTOMATIC = {"auto_reply", "bounce"}

# The one auto-reply in the corpus that carries no signal in its header or subject
# ("Mes loti atvainojamies, ja sanemat so epastu": "we apologise if you got this mail").
# Only its Latvian body gives it away, and classify() reads no bodies: an agent who
# writes "I am out of the office tomorrow" in a real reply must not be dead-boxed.
BODY_ONLY = "autoreplies/bounce_email-non_bounce-tt_1234241664.eml"


def msg(raw: str) -> EmailMessage:
    return parse(raw.encode("utf-8")).msg


def verdict(headers: str, body: str = "hello\n") -> Verdict:
    base = "From: Carol <carol@customer.test>\nTo: support@example.test\nMessage-ID: <c1@customer.test>\n"
    return classify(msg(base + headers + "\n" + body))


def ok(corpus: dict[str, ParsedMail | Exception], rel: str) -> ParsedMail | None:
    result = corpus.get(rel)
    return result if isinstance(result, ParsedMail) else None


def is_list_traffic(notes: str, mail: ParsedMail) -> bool:
    """The manifest's list flags, plus ezmlm's Mailing-List header, which it does not flag."""
    flags = ("List-Id", "List-Unsubscribe", "Precedence: list", "Precedence: bulk", "Precedence: junk")
    return any(flag in notes for flag in flags) or "Mailing-List" in mail.msg


# --------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        pytest.param(rel, marks=pytest.mark.xfail(reason="body-only auto-reply; see BODY_ONLY", strict=True))
        if rel == BODY_ONLY
        else rel
        for rel in corpus_files("autoreplies")
    ],
)
def test_every_corpus_autoreply_is_automatic(rel: str) -> None:
    v = classify(parsed(rel).msg)
    assert v.kind in AUTOMATIC, v


def test_a_bounce_that_says_auto_replied_is_a_bounce() -> None:
    v = classify(parsed("bounces/bounceparser-non-autoreply.msg").msg)
    assert v == Verdict("bounce", "X-Failed-Recipients (Exim)")


@pytest.mark.parametrize(
    "rel",
    ["bounces/bounce_email-tt_1234175799.eml", "bounces/bounce_email-tt_1234285532.eml",
     "bounces/sisimai-lhost-exim-01.eml", "bounces/sisimai-lhost-exchange2007-01.eml",
     "bounces/sisimai-lhost-googlegroups-01.eml"],
)
def test_auto_submitted_bounces_stay_bounces(rel: str) -> None:
    assert classify(parsed(rel).msg).kind == "bounce"


@pytest.mark.parametrize("rel", ["autoreplies/bounce_email-non_bounce-tt_1234210666.eml",
                                 "autoreplies/sisimai-rfc3834-03.eml"])
def test_header_less_out_of_office_is_caught_by_its_subject(rel: str) -> None:
    assert classify(parsed(rel).msg) == Verdict("auto_reply", "auto-reply subject")


def test_read_receipts_are_auto_replies() -> None:
    assert classify(parsed("autoreplies/flanker-disposition-notification.eml").msg).kind == "auto_reply"
    assert classify(parsed("autoreplies/hunnysoft-m4006.eml").msg) == Verdict(
        "auto_reply", "read-receipt subject on a TNEF message"
    )


def test_bounce_fraction_over_all_of_bounces(parsed_corpus: dict[str, ParsedMail | Exception]) -> None:
    rels = [r for r in parsed_corpus if r.startswith("bounces/")]
    kinds = {r: (classify(p.msg).kind if (p := ok(parsed_corpus, r)) else "unreadable") for r in rels}
    bounce = sum(k == "bounce" for k in kinds.values()) / len(rels)
    automatic = sum(k != "human" for k in kinds.values()) / len(rels)
    misses = sorted(f"{r}: {k}" for r, k in kinds.items() if k != "bounce")
    assert len(rels) == 380
    # Measured: 365/380 = 0.961 bounce, 369/380 = 0.971 not human.
    assert bounce >= 0.95, f"bounce fraction {bounce:.3f}; misses:\n" + "\n".join(misses)
    assert automatic >= 0.965, f"non-human fraction {automatic:.3f}; misses:\n" + "\n".join(misses)


def test_mailing_list_traffic_is_list(parsed_corpus: dict[str, ParsedMail | Exception]) -> None:
    notes = manifest()
    listed = [r for r, n in notes.items() if "List-Id" in n and r.split("/")[0] in ("inbound", "replies")]
    assert len(listed) >= 190
    wrong = [f"{r}: {v}" for r in listed if (p := ok(parsed_corpus, r)) and (v := classify(p.msg)).kind != "list"]
    assert not wrong, "\n".join(wrong)


def test_plain_customer_mail_is_human(parsed_corpus: dict[str, ParsedMail | Exception]) -> None:
    notes = manifest()
    people = {r: p for r, n in notes.items() if r.startswith("inbound/") and (p := ok(parsed_corpus, r))
              and not is_list_traffic(n, p)}
    flagged = {r: classify(p.msg) for r, p in people.items()}
    false_positives = {r: v for r, v in flagged.items() if v.kind != "human"}
    assert len(flagged) >= 360
    # Measured: 2, both real DSNs filed under inbound/.
    assert set(false_positives) <= {
        "inbound/otobo-parser-PostMaster-Test10.box",
        "inbound/otobo-postmaster-PostMaster-Test10.box",
    }, "\n".join(f"{r}: {v}" for r, v in false_positives.items())
    assert all(v.kind == "bounce" for v in false_positives.values())


def test_replies_from_people_are_human(parsed_corpus: dict[str, ParsedMail | Exception]) -> None:
    notes = manifest()
    people = {r: p for r, n in notes.items() if r.startswith("replies/") and (p := ok(parsed_corpus, r))
              and not is_list_traffic(n, p)}
    assert len(people) >= 80
    flagged = {r: v for r, p in people.items() if (v := classify(p.msg)).kind != "human"}
    # Measured: 1, Request Tracker's own "AutoReply" sitting in a notmuch thread.
    assert len(flagged) <= 1 and all(v.kind == "auto_reply" for v in flagged.values()), flagged


def test_classify_never_raises_on_the_corpus(parsed_corpus: dict[str, ParsedMail | Exception]) -> None:
    for result in parsed_corpus.values():
        if isinstance(result, ParsedMail):
            assert classify(result.msg).kind in {"human", "auto_reply", "bounce", "list", "loop"}


# --------------------------------------------------------------------------------------
# The rules one by one
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ("Subject: Where is my parcel?\n", "human"),
        ("Auto-Submitted: no\nSubject: hi\n", "human"),
        ("Auto-Submitted: auto-replied\nSubject: hi\n", "auto_reply"),
        ("Auto-Submitted: Auto-Generated; owner-email=x@y\nSubject: hi\n", "auto_reply"),
        ("X-Autoreply: yes\nSubject: hi\n", "auto_reply"),
        ("X-Autorespond: yes\nSubject: hi\n", "auto_reply"),
        ("Precedence: auto_reply\nSubject: hi\n", "auto_reply"),
        # Outlook puts X-Auto-Response-Suppress on ordinary mail: alone it means nothing...
        ("X-Auto-Response-Suppress: All\nSubject: Re: your quote\n", "human"),
        # ...with a null reverse-path it is an Exchange auto-reply.
        ("X-Auto-Response-Suppress: All\nReturn-Path: <>\nSubject: Nyaan\n", "auto_reply"),
        ("Return-Path: < >\nSubject: hi\n", "auto_reply"),
        ("Precedence: bulk\nSubject: Newsletter\n", "list"),
        ("Precedence: junk\nSubject: [Automatyczna odpowiedz] test\n", "auto_reply"),
        ("Precedence: list\nSubject: hi\n", "list"),
        ("List-Id: <x.lists.example>\nSubject: hi\n", "list"),
        ("List-Unsubscribe: <mailto:u@x>\nSubject: Offer\n", "list"),
        ("X-Loop: robot@customer.test\nSubject: hi\n", "loop"),
        ("X-Loop: list@lists.example\nList-Id: <l.example>\nSubject: hi\n", "list"),
        ("X-Failed-Recipients: a@b.test\nAuto-Submitted: auto-replied\nSubject: x\n", "bounce"),
        ("Subject: Undeliverable parcel, please call me\n", "human"),
        ("Subject: Re: [SAtalk] auto-whitelisting order\n", "human"),
        ("Subject: Read: chapter 3 of the manual\n", "human"),
        ("Subject: Automatic reply: Where is my parcel?\n", "auto_reply"),
        ("Subject: AW: Abwesenheitsnotiz: Rechnung\n", "auto_reply"),
        ("Subject: Autosvar: Faktura\n", "auto_reply"),
        ("Subject: Auto: Smith is out\n", "auto_reply"),
        ("Subject: Out of Office: Re: order 123\n", "auto_reply"),
        ("Subject: Réponse automatique : commande\n", "auto_reply"),
        ("Subject: 自動応答: ご注文\n", "auto_reply"),
    ],
)
def test_rules(headers: str, kind: str) -> None:
    assert verdict(headers).kind == kind, verdict(headers)


def test_mailer_daemon_without_an_address_is_a_bounce() -> None:
    m = msg("From: MAILER-DAEMON <>\nTo: x@example.test\nSubject: Mail delivery failed\nMessage-ID: <b@x>\n\nx\n")
    assert classify(m).kind == "bounce"


def test_a_delivery_report_is_a_bounce_whatever_else_it_says() -> None:
    raw = (
        "From: postmaster@mx.example\nTo: x@example.test\nSubject: Automatic reply: nope\n"
        "Auto-Submitted: auto-replied\nMessage-ID: <d@mx.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nfailed\n--b\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; x@example.test\nAction: failed\n"
        "Status: 5.1.1\n--b--\n"
    )
    assert classify(msg(raw)) == Verdict("bounce", "multipart/report; report-type=delivery-status (RFC 3464)")


def test_classify_tolerates_broken_headers() -> None:
    m = msg("From: x@y.test\nTo: unlisted-recipients:; (no To-header on input)\n"
            "Content-Type: multipart/report; report-type=\nMessage-ID: <1@y.test>\n\nbody\n")
    assert classify(m).kind in {"human", "auto_reply", "bounce", "list", "loop"}
    assert classify(EmailMessage()).kind == "human"


# --------------------------------------------------------------------------------------
# Our own output, and is_own (B-4)
# --------------------------------------------------------------------------------------

GUID = uuid.UUID("2f7d8c1a-9b3e-4c5d-8e6f-7a8b9c0d1e2f")
TOKEN = corr.mint_token(b"s", GUID, "alice@agents.example.test")
CUSTOMER = "From: Carol <carol@customer.test>\nTo: support@example.test\nSubject: Parcel\nMessage-ID: <c1@customer.test>\n\nWhere?\n"


def our_forward() -> EmailMessage:
    return forward_to_agent(
        msg(CUSTOMER), agent="alice@agents.example.test", agent_name=None,
        reply_to=corr.reply_address("outbound@example.test", TOKEN),
        message_id=corr.forward_message_id(TOKEN, 1, "pr.example.test"), tag=corr.subject_tag(TOKEN),
        guid=GUID, box_address="support@example.test",
    )


def test_our_own_messages_classify_as_what_they_are() -> None:
    original = msg(CUSTOMER)
    assert classify(our_forward()).kind == "human"
    assert classify(auto_response(original, box_address="support@example.test", box_name=None,
                                  customer="carol@customer.test", text="Thanks",
                                  message_id="<ar@pr.example.test>")).kind == "auto_reply"
    assert classify(notice(from_address="outbound@example.test", to="alice@agents.example.test",
                           subject="Not delivered", text="x", message_id="<n@pr.example.test>")).kind == "auto_reply"
    agent_reply = msg(f"From: alice@agents.example.test\nSubject: Re: Parcel [PR:{TOKEN}]\nMessage-ID: <a1@agents.example.test>\n\nOn its way\n")
    assert classify(reply_to_customer(
        agent_reply, box_address="support@example.test", box_name=None, customer="carol@customer.test",
        original_message_id="<c1@customer.test>", original_references=[], message_id="<re@pr.example.test>",
        subject="Parcel")).kind == "human"


def test_is_own_recognises_our_forward_and_our_message_ids() -> None:
    assert is_own(our_forward(), "pr.example.test")
    assert is_own(msg("From: x@example.test\nMessage-ID: <ar.123@PR.Example.Test>\n\nx\n"), "pr.example.test")
    assert is_own(msg("From: x@example.test\nMessage-ID: <ar.123@pr.example.test>\n\nx\n"),
                  ["other.test", "pr.example.test"])


def test_is_own_is_false_for_customers_even_when_they_reply_to_us() -> None:
    reply = msg("From: carol@customer.test\nMessage-ID: <c2@customer.test>\n"
                "In-Reply-To: <ar.123@pr.example.test>\nReferences: <ar.123@pr.example.test>\n\nthanks\n")
    assert not is_own(reply, "pr.example.test")
    assert not is_own(msg(CUSTOMER), "pr.example.test")
    assert not is_own(msg("From: a@sub.pr.example.test\nMessage-ID: <1@sub.pr.example.test>\n\nx\n"), "pr.example.test")
    assert not is_own(msg(CUSTOMER), [])
