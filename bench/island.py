"""Issue 10 in the benchmark: `island_claim_latency_s`, new mail → claim won in island mode.

Two nodes (`postroom.engine.island.Claimer`, each with its own IMAP sessions and its own
authenticated SMTP session) watch one incoming box and arbitrate every new mail through
the sync box, as they do when they cannot share the database (decision 0036). A customer
mail goes to the MX every `island_gap` seconds; each node sees it in the incoming box
(NOOP + UID SEARCH, polled every 50 ms, one thread per node), claims it (the sync mail
over SMTP), and reads the sync box until a claim for it has come back. The figure is the
time from the customer mail's SMTP 250 to the moment the winning node has read its own
claim as won (`may_send` true): before that nothing may be sent for the mail, not even
the auto-response, so it is what island mode adds to the first response. The two nodes
race for every mail; `won_by` counts the winners, `double` the mails two nodes both
counted as theirs (must be 0).

Runs in the benchmark (`bench/run.py --only island`) or alone:
`.venv/bin/python bench/island.py --n 20` (its own DevStack on base port 21540).
Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import threading
import time
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, envelope_from, log, make_messages, median, percentile  # noqa: E402
from postroom.core.island import EmailKey  # noqa: E402
from postroom.engine.island import Claimer, IslandSettings  # noqa: E402
from postroom.mail.imap import ImapAccount, ImapSession  # noqa: E402
from postroom.mail.smtp import SmtpAccount, SmtpSender  # noqa: E402
from postroom.mail.syncbox import SyncBox  # noqa: E402

POLL = 0.05


def _key(box: str, raw: bytes) -> EmailKey:
    msg = message_from_bytes(raw, policy=policy.default)
    return EmailKey(box, str(msg.get("Message-ID", "")), hashlib.sha256(raw).hexdigest())


def claim_latency_run(stack: Stack, run: str, n: int, gap: float) -> dict:
    """`n` customer mails, two racing nodes; per mail: SMTP 250 → won, by the winner."""
    support = stack.user(f"isl-support-{run}@example.test")
    sync = stack.user(f"isl-sync-{run}@example.test")
    settings = dict(claim_expiry=timedelta(seconds=60), claim_reassert=timedelta(seconds=20))
    sent_at: dict[str, float] = {}  # Message-ID -> SMTP 250 (monotonic)
    won: dict[str, tuple[str, float]] = {}  # Message-ID -> (node, read as won)
    double: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def imap(login: tuple[str, str], cls=ImapSession):
        account = ImapAccount("127.0.0.1", stack.imap_port, "starttls", *login, cafile=stack.cafile)
        return cls(account).open()

    def node(name: str) -> None:
        login = stack.user(f"isl-{name}-{run}@example.test")
        smtp = SmtpSender(
            SmtpAccount("127.0.0.1", stack.submission_port, "starttls", *login, stack.cafile, 10.0)
        )
        inbox = imap(support)
        claimer = Claimer(
            name, IslandSettings(sync[0], login[0], **settings), imap(sync, SyncBox), smtp
        )
        seen = 0
        mine: set[EmailKey] = set()
        try:
            while not stop.is_set():
                uids = inbox.new_uids(seen)
                for item in inbox.fetch(uids).values():
                    claimer.want(_key(support[0], item.raw))
                seen = max([seen, *uids])
                claimer.step()
                for email in sorted(claimer.wanted):
                    if email in mine or not claimer.may_send(email):
                        continue
                    mine.add(email)
                    with lock:
                        if email.message_id in won:
                            double.append(email.message_id)
                        else:
                            won[email.message_id] = (name, time.monotonic())
                time.sleep(POLL)
        finally:
            inbox.close()
            claimer.box.close()
            smtp.close()

    threads = [threading.Thread(target=node, args=(f"n{i}",), daemon=True) for i in (1, 2)]
    for t in threads:
        t.start()
    mails = make_messages(n, support[0], f"island-{run}")
    with stack.smtp() as mx:
        for _marker, raw in mails:
            mid = str(message_from_bytes(raw, policy=policy.default)["Message-ID"])
            mx.sendmail(envelope_from(raw), [support[0]], raw)
            sent_at[mid] = time.monotonic()
            time.sleep(gap)
    deadline = time.monotonic() + 60 + 2 * n
    while len(won) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    lat = sorted(won[m][1] - sent_at[m] for m in sent_at if m in won)
    won_by: dict[str, int] = {}
    for node_name, _ in won.values():
        won_by[node_name] = won_by.get(node_name, 0) + 1
    return {
        "n": n,
        "gap_s": gap,
        "won": len(lat),
        "won_by": won_by,
        "double": len(double),
        "p50_s": median(lat),
        "p99_s": percentile(lat, 99) if lat else None,
        "max_s": lat[-1] if lat else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--gap", type=float, default=0.5)
    p.add_argument("--base-port", type=int, default=21540)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="prb-island-", dir="/tmp"))
    stack = Stack.create(work / "stack", args.base_port)
    stack.start()
    try:
        result = claim_latency_run(stack, "solo", args.n, args.gap)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    log(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
