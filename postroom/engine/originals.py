"""The originals kept from reception to delivery (decision 0053).

Reception FETCHes every new mail in full; delivery, a worker round later, used to FETCH
the same original again from its own IMAP session to build the agent's forward. This
module keeps the bytes reception fetched, in the engine process, so that delivery can
build the forward without the second FETCH.

It is only ever a shortcut. The key names the message on the server for good: the box,
its account and folder, the folder's UIDVALIDITY and the UID (RFC 3501 §2.3.1.1: a UID
under one UIDVALIDITY never names other bytes). Whatever is not here (another node took
the mail, the engine restarted, the entry was evicted, the mail was too big to keep, the
box's UIDVALIDITY changed) is fetched from the server, as before. Header-only copies
(`truncated`) are never kept. The memory is bounded by bytes: least recently used
entries go first.

One `Originals` per engine (it hangs off its `Site`); reception's watcher threads put,
the worker reads, so it takes a lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from postroom.mail.imap import FetchedMessage

if TYPE_CHECKING:
    from postroom.store.models import Mailbox

# Enough for several seconds of mail at the benchmarks' rates (a few KB each) and for the
# backlog phase's 100k mails taken faster than delivered (the oldest go first, and are
# fetched again): small against the engine's 300 MB budget.
MAX_BYTES = 4 * 1024 * 1024
# A bigger mail is not kept (it would push many small ones out); delivery fetches it.
MAX_ONE = 1024 * 1024

Key = tuple[int, str, str, int, int]


class Originals:
    """A bounded (by bytes, LRU) map (box, login, folder, uidvalidity, uid) → the
    server's bytes of that message, as reception fetched them."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_one: int = MAX_ONE) -> None:
        self.max_bytes = max_bytes
        self.max_one = min(max_one, max_bytes)
        self._entries: OrderedDict[Key, FetchedMessage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        """The bytes kept now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def keep(self, box: Mailbox, uidvalidity: int, messages: Iterable[FetchedMessage]) -> None:
        """Keep the full messages of one FETCH of `box` (a Mailbox) under `uidvalidity`."""
        pk, login, folder = _box(box)
        with self._lock:
            for m in messages:
                if m.truncated or len(m.raw) > self.max_one or not uidvalidity:
                    continue
                key = (pk, login, folder, uidvalidity, m.uid)
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= len(old.raw)
                self._entries[key] = m
                self._bytes += len(m.raw)
            while self._bytes > self.max_bytes:
                _, gone = self._entries.popitem(last=False)
                self._bytes -= len(gone.raw)

    def get(self, box: Mailbox, uidvalidity: int, uid: int) -> FetchedMessage | None:
        """The kept message, or None (then fetch it)."""
        pk, login, folder = _box(box)
        key = (pk, login, folder, uidvalidity, uid)
        with self._lock:
            m = self._entries.get(key)
            if m is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return m

    def forget(self, box: Mailbox, uidvalidity: int, uid: int) -> None:
        pk, login, folder = _box(box)
        with self._lock:
            m = self._entries.pop((pk, login, folder, uidvalidity, uid), None)
            if m is not None:
                self._bytes -= len(m.raw)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _box(box: Mailbox) -> tuple[int, str, str]:
    # The account and folder too: an admin may point a box at another folder while the
    # engine runs, and that folder's UIDVALIDITY is not bound to differ.
    return (box.pk, box.login or "", box.folder or "")
