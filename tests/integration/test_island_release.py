"""A node back from its local store releases the claims it won there (decision 0036;
`Claimer.release_unwanted`, run by `Claims` after the merge), on the real sync box: the
other node wins them at once, long before they could expire."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from postroom.core.island import EmailKey
from postroom.engine.island import Claimer, IslandSettings
from postroom.mail.imap import ImapAccount
from postroom.mail.smtp import SmtpAccount, SmtpSender
from postroom.mail.syncbox import SyncBox

pytestmark = pytest.mark.mailstack

EMAILS = [EmailKey("support@example.test", f"<r{i}@customer.test>", f"{i:064x}") for i in range(2)]
# Far longer than the test: a claim can only change hands by its release.
EXPIRY = timedelta(hours=1)


@pytest.fixture
def claimer(mailstack, new_user):  # type: ignore[no-untyped-def]
    sync = new_user("sync")
    logins: dict[str, tuple[str, str]] = {}
    made: list[Claimer] = []

    def make(node: str) -> Claimer:
        login = logins.setdefault(node, new_user(node))
        smtp = SmtpSender(
            SmtpAccount("127.0.0.1", mailstack.submission_port, "starttls", *login, str(mailstack.cafile), 10.0)
        )
        box = SyncBox(ImapAccount("127.0.0.1", mailstack.imap_port, "starttls", *sync, cafile=str(mailstack.cafile))).open()
        settings = IslandSettings(
            sync_address=sync[0], sender=login[0], claim_expiry=EXPIRY,
            claim_reassert=timedelta(minutes=20), clock_margin=timedelta(seconds=30),
        )
        made.append(Claimer(node, settings, box, smtp))
        return made[-1]

    yield make
    for c in made:
        c.box.close()
        c.smtp.close()


def step_until(node: Claimer, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, f"never: {what}"
        node.step()
        time.sleep(0.2)


def test_a_node_back_from_its_island_releases_its_claims_and_the_other_wins_them(claimer) -> None:  # type: ignore[no-untyped-def]
    island = claimer("node-p")
    for email in EMAILS:
        island.want(email)
    step_until(island, lambda: all(island.book.owner(e) == "node-p" for e in EMAILS), "the island's wins")

    # Back on the database: the island's claimer went with its threads; a fresh one wants
    # one of the emails again (a box that is still an island box here) and not the other.
    back = claimer("node-p")
    back.want(EMAILS[1])
    assert back.release_unwanted() == [EMAILS[0]]

    other = claimer("node-s")
    for email in EMAILS:
        other.want(email)
    step_until(other, lambda: other.book.owner(EMAILS[0]) == "node-s", "the other node's win of the released email")
    assert other.may_send(EMAILS[0])
    # Still wanted, still held: nothing wanted is given up.
    assert other.book.owner(EMAILS[1]) == "node-p" and not other.may_send(EMAILS[1])
