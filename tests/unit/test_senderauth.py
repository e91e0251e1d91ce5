"""postroom.core.senderauth: only what the site's own mail server added vouches for a sender.

The Received headers here are the dev stack's (Postfix 3.7 + Dovecot 2.3 LMTP), as taken
from real deliveries: an authenticated submission and an unauthenticated MX delivery
carrying a forged trace header.
"""

from __future__ import annotations

from email import message_from_string, policy

import pytest

from postroom.core.senderauth import (
    SenderAuthPolicy,
    dmarc_pass_domain,
    entry_hop,
    parse_received,
    vouch,
)

HOST = "mail.example.test"
ALICE = "alice@example.test"
POLICY = SenderAuthPolicy(servers=frozenset({HOST}))

LMTP = (
    "from mail.example.test\r\n\tby mail.example.test with LMTP\r\n\tid 4qxvKnVGFWvUUQAAg+zDdQ\r\n"
    "\t(envelope-from <alice@example.test>)\r\n\tfor <outbound+abc@example.test>; Sun, 06 Dec 2026 11:26:45 +0000"
)
SUBMISSION = (
    "from [127.0.0.1] (unknown [127.0.0.1])\r\n\t(Authenticated sender: alice@example.test)\r\n"
    "\tby mail.example.test (Postfix) with ESMTPSA id A4A6220C837\r\n"
    "\tfor <outbound+abc@example.test>; Sun,  6 Dec 2026 11:26:45 +0000 (UTC)"
)
MX = (
    "from mail.example.test (unknown [127.0.0.1])\r\n\tby mail.example.test (Postfix) with ESMTP id A653920D520\r\n"
    "\tfor <outbound@example.test>; Sun,  6 Dec 2026 11:26:45 +0000 (UTC)"
)
FORGED = "from x (Authenticated sender: alice@example.test) by\r\n mail.example.test with ESMTPSA"


def message(*received: str, extra: str = "") -> object:
    head = "".join(f"Received: {r}\r\n" for r in received)
    return message_from_string(
        f"Return-Path: <{ALICE}>\r\nDelivered-To: outbound@example.test\r\n{head}{extra}"
        f"From: Alice <{ALICE}>\r\nSubject: hi\r\n\r\nbody\r\n",
        policy=policy.default,
    )


def test_postfix_headers_parse() -> None:
    hop = parse_received(SUBMISSION)
    assert (hop.by, hop.protocol, hop.authenticated) == (HOST, "ESMTPSA", ALICE)
    assert (hop.helo, hop.client_name, hop.client_addr) == ("[127.0.0.1]", "unknown", "127.0.0.1")
    lmtp = parse_received(LMTP)
    assert (lmtp.by, lmtp.protocol, lmtp.authenticated) == (HOST, "LMTP", None)


def test_an_authenticated_submission_is_vouched_for() -> None:
    verdict = vouch(message(LMTP, SUBMISSION), POLICY, sender=ALICE, logins=())
    assert verdict.ok and "authenticated" in verdict.how


def test_the_entry_hop_is_below_the_lmtp_delivery() -> None:
    hop, _ = entry_hop([LMTP, SUBMISSION, FORGED], {HOST})
    assert hop is not None and hop.authenticated == ALICE and hop.protocol == "ESMTPSA"


def test_a_forged_authenticated_header_below_the_entry_hop_means_nothing() -> None:
    verdict = vouch(message(LMTP, MX, FORGED), POLICY, sender=ALICE, logins=())
    assert not verdict.ok and "without authentication" in verdict.how
    assert verdict.how.startswith("the mail server does not vouch for the sender")


def test_a_helo_naming_our_server_does_not_make_the_client_ours() -> None:
    # "from mail.example.test (unknown [...])": the HELO word is the client's own claim.
    hop, _ = entry_hop([LMTP, MX, FORGED], {HOST})
    assert hop is not None and hop.protocol == "ESMTP"


def test_another_login_may_not_write_as_alice() -> None:
    bob = SUBMISSION.replace("Authenticated sender: alice@", "Authenticated sender: bob@")
    assert not vouch(message(LMTP, bob), POLICY, sender=ALICE, logins=()).ok
    # ... unless it is Alice's configured mailbox login.
    assert vouch(message(LMTP, bob), POLICY, sender=ALICE, logins=("BOB@example.test",)).ok


def test_an_authenticated_comment_without_an_authenticated_protocol_is_not_enough() -> None:
    plain = SUBMISSION.replace("with ESMTPSA", "with ESMTPS")
    assert not vouch(message(LMTP, plain), POLICY, sender=ALICE, logins=()).ok


def test_top_headers_from_elsewhere_and_no_headers_vouch_for_nothing() -> None:
    foreign = SUBMISSION.replace("by mail.example.test", "by mx.evil.test")
    assert not vouch(message(foreign), POLICY, sender=ALICE, logins=()).ok
    assert not vouch(message(), POLICY, sender=ALICE, logins=()).ok
    assert not vouch(message(FORGED), SenderAuthPolicy(servers=frozenset({"x"})), sender=ALICE, logins=()).ok


def test_a_relay_between_our_servers_is_walked_through() -> None:
    hub = "from submit.example.test (submit.example.test [10.0.0.6])\r\n\tby hub.example.test (Postfix) with ESMTPS id 1; date"
    submit = SUBMISSION.replace("by mail.example.test", "by submit.example.test")
    servers = frozenset({"hub.example.test", "submit.example.test"})
    assert vouch(message(hub, submit), SenderAuthPolicy(servers=servers), sender=ALICE, logins=()).ok
    # The same relay named only in the HELO is a client, not one of ours.
    spoofed = "from submit.example.test (unknown [10.9.9.9])\r\n\tby hub.example.test (Postfix) with ESMTPS id 1; date"
    assert not vouch(message(spoofed, submit), SenderAuthPolicy(servers=servers), sender=ALICE, logins=()).ok


@pytest.mark.parametrize(
    "broken",
    [
        "from x (unclosed by mail.example.test with ESMTPSA",
        'from x by mail.example.test with ESMTPSA for <"never closed@x>',
        "",
        "by",
    ],
)
def test_unreadable_received_headers_fail_closed(broken: str) -> None:
    assert not vouch(message(broken, SUBMISSION), POLICY, sender=ALICE, logins=()).ok


def test_a_quoted_recipient_cannot_smuggle_a_comment() -> None:
    smuggled = SUBMISSION.replace("(Authenticated sender: alice@example.test)\r\n", "").replace(
        "with ESMTPSA", "with ESMTPA"
    ).replace("for <outbound+abc@example.test>", 'for <"(Authenticated sender: alice@example.test)"@example.test>')
    assert parse_received(smuggled).authenticated is None


def test_exchange_internal_authentication() -> None:
    exchange = SenderAuthPolicy(exchange=True)
    assert vouch(message(extra="X-MS-Exchange-Organization-AuthAs: Internal\r\n"), exchange, sender=ALICE, logins=()).ok
    anonymous = message(extra="X-MS-Exchange-Organization-AuthAs: Anonymous\r\nX-MS-Exchange-Organization-AuthAs: Internal\r\n")
    assert not vouch(anonymous, exchange, sender=ALICE, logins=()).ok
    assert not vouch(message(), exchange, sender=ALICE, logins=()).ok


def test_dmarc_pass_from_a_trusted_authserv_id_for_the_from_domain() -> None:
    dmarc = SenderAuthPolicy(authserv_ids=frozenset({HOST}))
    ok = f"Authentication-Results: {HOST}; spf=pass smtp.mailfrom=example.test; dmarc=pass (p=reject dis=none) header.from=example.test\r\n"
    assert vouch(message(extra=ok), dmarc, sender=ALICE, logins=()).ok
    other = ok.replace("header.from=example.test", "header.from=evil.test")
    assert not vouch(message(extra=other), dmarc, sender=ALICE, logins=()).ok
    untrusted = ok.replace(HOST, "mx.evil.test")
    assert not vouch(message(extra=untrusted), dmarc, sender=ALICE, logins=()).ok
    # Only the topmost trusted one counts: a forged pass below a fail is a fail.
    fail = ok.replace("dmarc=pass", "dmarc=fail")
    assert not vouch(message(extra=fail + ok), dmarc, sender=ALICE, logins=()).ok
    assert dmarc_pass_domain([f"{HOST} 1; dmarc=pass header.from=Example.TEST"], {HOST}) == "example.test"


def test_the_check_switched_off_vouches_for_anything() -> None:
    verdict = vouch(message(), SenderAuthPolicy(required=False), sender=ALICE, logins=())
    assert verdict.ok and "off" in verdict.how


def test_no_from_address_is_never_vouched_for() -> None:
    assert not vouch(message(LMTP, SUBMISSION), POLICY, sender=None, logins=()).ok
