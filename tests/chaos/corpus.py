"""Hostile input on the real stack: the mail corpus, put into a watched box as it is.

`messages()` lists the corpus (`$POSTROOM_CORPUS`, else `../shared/corpus` beside the
repository) or, where there is none, the fixture messages shipped in
`tests/fixtures/emails/` (same layout, same manifest columns). A message's kind is its top
folder: inbound, replies, bounces, autoreplies, malformed.

`append_all()` APPENDs the bytes to a mailbox over IMAP, exactly as they are (an MTA would
repair some of them; a mailbox can still end up holding them), and returns which UID holds
which file. `ledger()` reads, from the engine's database, what became of every UID: an
interaction, a copy folded into an interaction with the same Message-ID (B-3), or a
quarantine row with its reason.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.harness import REPO, Site

FIXTURES = REPO / "tests" / "fixtures" / "emails"
AUTOMATIC = ("bounces", "autoreplies")
QUARANTINE_FOLDER = "Postroom-Quarantine"

# Bounces and auto-replies that carry no signal postroom.core.autoreply reads, so they are
# taken as a person's mail and answered (measured on the full corpus; the same list is in
# tests/unit/test_autoreply.py's notes). Each is a strict xfail of its own in
# test_corpus.py; the stack-wide test checks every other automatic message.
KNOWN_MISSES = {
    "autoreplies/bounce_email-non_bounce-tt_1234241664.eml": "an HTML out-of-office with no automatic header: only its Latvian body gives it away, and classify() reads no bodies",
    "bounces/bounceparser-bluebottle.msg": "a challenge-response ('RE: BLAH') From an ordinary address, no automatic header",
    "bounces/bounceparser-spam-bogus-email-in-report.msg": "spam a bounce parser's corpus keeps as a negative sample: no mail-system signal at all",
    "bounces/bounceparser-spam-lots-of-bogus-addresses.msg": "spam a bounce parser's corpus keeps as a negative sample: no mail-system signal at all",
    "bounces/bounceparser-spam-with-badly-parsed-email.msg": "spam a bounce parser's corpus keeps as a negative sample: no mail-system signal at all",
    "bounces/bounceparser-spam-with-image.msg": "spam a bounce parser's corpus keeps as a negative sample: no mail-system signal at all",
    "bounces/bounceparser-virus-caused-multiple-weird-reports.msg": "a virus notice From support@, multipart/mixed, no automatic header",
    "bounces/sisimai-arf-24.eml": "an abuse report (ARF) sent as multipart/mixed From staff@hotmail.com, not multipart/report",
    "bounces/sisimai-lhost-apachejames-01.eml": "an Apache James bounce From post_master@ (underscore), with In-Reply-To and a 'Re:' subject",
    "bounces/sisimai-lhost-fml-03.eml": "an fml mailing-list 'Loop Alert' From neko-admin@, no automatic header",
    "bounces/sisimai-lhost-verizon-02.eml": "a Verizon bounce From post_master@ (underscore), with In-Reply-To and a 'Re:' subject",
}


@dataclass(frozen=True)
class Message:
    rel: str  # path relative to the corpus root, e.g. "bounces/sisimai-lhost-exim-01.eml"
    path: Path

    @property
    def kind(self) -> str:
        return self.rel.split("/", 1)[0]


def corpus_root() -> Path:
    shared = Path(os.environ.get("POSTROOM_CORPUS") or REPO.parent / "shared" / "corpus")
    return shared if (shared / "manifest.tsv").is_file() else FIXTURES


def messages(root: Path | None = None) -> list[Message]:
    root = root or corpus_root()
    rows = (root / "manifest.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [Message(rel, root / rel) for rel in sorted(r.split("\t", 1)[0] for r in rows if r.strip())]


def append_all(site: Site, who: str, found: list[Message], folder: str = "INBOX") -> dict[int, Message]:
    """APPEND each message's bytes as they are; UID (from UIDPLUS's APPENDUID) -> message."""
    client = site.imap(who)
    try:
        held: dict[int, Message] = {}
        for message in found:
            answer = client.append(folder, message.path.read_bytes())
            uid = re.search(rb"APPENDUID \d+ (\d+)", answer)
            assert uid, f"no APPENDUID for {message.rel}: {answer!r}"
            held[int(uid.group(1))] = message
        return held
    finally:
        client.logout()


@dataclass
class Ledger:
    interactions: dict[int, str]  # UID -> interaction status
    copies: set[int]  # UIDs folded into another interaction (same Message-ID)
    quarantined: dict[int, str]  # UID -> reason
    auto_responses: set[int]  # UIDs whose interaction has an auto-response queued or sent

    def fate(self, uid: int) -> str | None:
        if uid in self.interactions:
            return "interaction"
        if uid in self.copies:
            return "copy"
        if uid in self.quarantined:
            return "quarantined"
        return None


def ledger(site: Site, box: str) -> Ledger:
    db = site.database
    mailbox = db.scalar("SELECT id FROM store_mailbox WHERE address = ?", (site.address(box),))
    rows = db.rows("SELECT id, uid, status, copies FROM store_interaction WHERE mailbox_id = ?", (mailbox,))
    copies = set()
    for row in db.rows("SELECT copies FROM store_interaction"):
        value = row["copies"]
        for mailbox_id, _uidvalidity, uid in json.loads(value) if isinstance(value, str) else value or ():
            if mailbox_id == mailbox:
                copies.add(int(uid))
    answered = {
        r["uid"]
        for r in db.rows(
            "SELECT i.uid FROM store_outgoing o JOIN store_interaction i ON o.interaction_id = i.id "
            "WHERE o.kind = 'auto_response' AND i.mailbox_id = ?",
            (mailbox,),
        )
    }
    quarantined = db.rows("SELECT uid, reason FROM store_quarantined WHERE mailbox_id = ?", (mailbox,))
    return Ledger(
        interactions={int(r["uid"]): r["status"] for r in rows},
        copies=copies,
        quarantined={int(r["uid"]): r["reason"] for r in quarantined},
        auto_responses={int(u) for u in answered},
    )


def folder_count(site: Site, who: str, folder: str) -> int:
    client = site.imap(who)
    try:
        if not client.folder_exists(folder):
            return 0
        return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()
