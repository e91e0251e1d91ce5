"""engine/originals.py: the bytes reception fetched, kept for delivery (decision 0053).

A bounded map: by bytes, least recently used first out; header-only copies and mails over
the per-mail bound are never kept; the key names the message on the server for good (box,
login, folder, UIDVALIDITY, UID), so a changed UIDVALIDITY or folder is a miss.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from postroom.engine.originals import Originals
from postroom.mail.imap import FetchedMessage

WHEN = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@dataclass
class Box:
    pk: int
    login: str = "support@example.test"
    folder: str = "INBOX"


def msg(uid: int, size: int = 100, truncated: bool = False) -> FetchedMessage:
    raw = (b"Subject: %d\r\n\r\n" % uid).ljust(size, b"x")
    return FetchedMessage(uid, WHEN, size, raw, truncated=truncated)


def test_what_reception_fetched_is_what_delivery_gets() -> None:
    kept = Originals()
    box = Box(1)
    kept.keep(box, 7, [msg(1), msg(2)])  # type: ignore[arg-type]
    got = kept.get(box, 7, 2)  # type: ignore[arg-type]
    assert got is not None and got.raw == msg(2).raw and got.uid == 2
    assert kept.hits == 1 and kept.misses == 0


def test_another_uidvalidity_box_folder_or_login_is_a_miss() -> None:
    kept = Originals()
    kept.keep(Box(1), 7, [msg(1)])  # type: ignore[arg-type]
    assert kept.get(Box(1), 8, 1) is None  # type: ignore[arg-type]  # the box was rebuilt
    assert kept.get(Box(2), 7, 1) is None  # type: ignore[arg-type]
    assert kept.get(Box(1, folder="Other"), 7, 1) is None  # type: ignore[arg-type]
    assert kept.get(Box(1, login="sales@example.test"), 7, 1) is None  # type: ignore[arg-type]
    assert kept.get(Box(1), 7, 2) is None  # type: ignore[arg-type]
    assert kept.misses == 5 and kept.get(Box(1), 7, 1) is not None  # type: ignore[arg-type]


def test_header_only_and_big_mails_and_no_uidvalidity_are_not_kept() -> None:
    kept = Originals(max_bytes=10_000, max_one=500)
    kept.keep(Box(1), 7, [msg(1, truncated=True), msg(2, size=501), msg(3, size=500)])  # type: ignore[arg-type]
    kept.keep(Box(1), 0, [msg(4)])  # type: ignore[arg-type]
    assert kept.get(Box(1), 7, 1) is None  # type: ignore[arg-type]
    assert kept.get(Box(1), 7, 2) is None  # type: ignore[arg-type]
    assert kept.get(Box(1), 7, 3) is not None  # type: ignore[arg-type]
    assert kept.get(Box(1), 0, 4) is None  # type: ignore[arg-type]
    assert len(kept) == 1 and kept.size == 500


def test_the_memory_bound_holds_least_recently_used_first_out() -> None:
    kept = Originals(max_bytes=1_000, max_one=1_000)
    box = Box(1)
    kept.keep(box, 7, [msg(uid, size=300) for uid in (1, 2, 3)])  # type: ignore[arg-type]
    assert kept.size == 900
    assert kept.get(box, 7, 1) is not None  # type: ignore[arg-type]  # 1 used: 2 is the oldest now
    kept.keep(box, 7, [msg(4, size=300)])  # type: ignore[arg-type]
    assert kept.size == 900 and len(kept) == 3
    assert kept.get(box, 7, 2) is None  # type: ignore[arg-type]  # evicted
    assert all(kept.get(box, 7, uid) is not None for uid in (1, 3, 4))  # type: ignore[arg-type]
    # Many more than fit: never above the bound.
    for start in range(100, 10_000, 50):
        kept.keep(box, 7, [msg(uid, size=150) for uid in range(start, start + 50)])  # type: ignore[arg-type]
        assert kept.size <= 1_000
    assert kept.size == sum(len(m.raw) for m in kept._entries.values())


def test_the_same_message_kept_twice_counts_once() -> None:
    kept = Originals(max_bytes=1_000)
    kept.keep(Box(1), 7, [msg(1, size=300)])  # type: ignore[arg-type]
    kept.keep(Box(1), 7, [msg(1, size=300)])  # type: ignore[arg-type]  # the batch read again
    assert kept.size == 300 and len(kept) == 1
    kept.forget(Box(1), 7, 1)  # type: ignore[arg-type]
    assert kept.size == 0 and kept.get(Box(1), 7, 1) is None  # type: ignore[arg-type]


def test_watchers_put_while_the_worker_reads() -> None:
    kept = Originals(max_bytes=50_000, max_one=1_000)
    errors: list[BaseException] = []

    def put(pk: int) -> None:
        try:
            for start in range(0, 2_000, 10):
                kept.keep(Box(pk), 7, [msg(uid, size=200) for uid in range(start, start + 10)])  # type: ignore[arg-type]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for uid in range(2_000):
                got = kept.get(Box(1), 7, uid)  # type: ignore[arg-type]
                assert got is None or got.uid == uid
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(pk,)) for pk in (1, 2)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert kept.size <= 50_000 and kept.size == sum(len(m.raw) for m in kept._entries.values())


def test_each_site_keeps_its_own_and_a_replaced_site_starts_empty() -> None:
    """One engine's memory: a Site made from another (dataclasses.replace: another port,
    another engine in a test) does not share what the first kept."""
    from dataclasses import replace

    from postroom.core.keys import KeyRing
    from postroom.engine.site import Site
    from postroom.mail.smtp import SmtpAccount

    site = Site(
        node_id="n", keys=KeyRing.from_secrets([b"x" * 32]), imap_host="127.0.0.1", imap_port=1, imap_tls="none",
        smtp=SmtpAccount(host="127.0.0.1", port=1, tls="none", login="", password=""),
    )
    site.originals.keep(Box(1), 7, [msg(1)])  # type: ignore[arg-type]
    other = replace(site, imap_port=2)
    assert other.originals is not site.originals and len(other.originals) == 0
    assert site.originals.get(Box(1), 7, 1) is not None  # type: ignore[arg-type]
    assert replace(site) == site  # the cache takes no part in equality
