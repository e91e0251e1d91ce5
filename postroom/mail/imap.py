"""IMAP adapter: one connection to one folder of one account, on IMAPClient.

It speaks the protocol and nothing else: no database, no decisions. Library and socket
errors become `MailboxUnavailable`; every operation has a timeout so a half-open TCP
connection cannot hang a worker (field bug B-8).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import imapclient
from imapclient.exceptions import IMAPClientError

log = logging.getLogger(__name__)


class MailboxUnavailable(Exception):
    """The server could not be reached or refused us; try again later."""


# An OAuth2 box's current access token, asked for at each login (engine/oauth2.py): it
# may refresh first, or raise MailboxUnavailable when the box has no usable grant.
TokenSource = Callable[[], str]


@dataclass(frozen=True)
class ImapAccount:
    host: str
    port: int
    tls: str  # "tls" | "starttls" | "none"
    login: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    cafile: str | None = None
    timeout: float = 30.0
    # Set for a box on OAuth2: log in by SASL XOAUTH2 with its token, not the password.
    token: TokenSource | None = field(default=None, repr=False, compare=False)


def login(client: imapclient.IMAPClient, account: ImapAccount) -> None:
    """LOGIN, or AUTHENTICATE XOAUTH2 (Google's mechanism, older than RFC 7628's
    OAUTHBEARER, and the one Microsoft 365, Google and Dovecot all take) with a token asked
    for just now, so that a refreshed token is used at the next login."""
    if account.token is None:
        client.login(account.login, account.password)
    else:
        client.oauth2_login(account.login, account.token())


@dataclass(frozen=True)
class FetchedMessage:
    """One message as fetched. `truncated`: it was larger than the fetch's size limit and
    `raw` holds its header only; such bytes must never be sent on or taken as the mail
    (window 3 of issue 7: a header-only copy once went to a customer as the reply)."""

    uid: int
    internaldate: datetime
    size: int
    raw: bytes
    truncated: bool = False


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying context; `cafile` pins a private CA such as the dev stack's."""
    return ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()


class ImapSession:
    """An open, selected IMAP folder. Not thread-safe: one thread uses one session."""

    def __init__(self, account: ImapAccount) -> None:
        self.account = account
        self.client: imapclient.IMAPClient | None = None
        self.uidvalidity = 0
        self.exists = 0
        self.capabilities: frozenset[bytes] = frozenset()
        # Folders known to exist, so a bulk move costs one command, not a LIST first.
        self._folders: set[str] = set()

    # -- connection ---------------------------------------------------------------
    def open(self) -> ImapSession:
        a = self.account
        try:
            ctx = tls_context(a.cafile)
            client = imapclient.IMAPClient(
                a.host, port=a.port, ssl=a.tls == "tls", ssl_context=ctx, timeout=a.timeout
            )
            # Never fall back to clear text when STARTTLS was asked for (unlike
            # django-helpdesk, which warns and carries on unencrypted).
            if a.tls == "starttls":
                client.starttls(ctx)
            client.normalise_times = False
            login(client, a)
            info = client.select_folder(a.folder)
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            raise MailboxUnavailable(f"{a.login}@{a.host}:{a.port}/{a.folder}: {exc}") from exc
        self.client = client
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        self.exists = int(info.get(b"EXISTS", 0))
        self._folders = {a.folder}
        self.capabilities = frozenset(client.capabilities())
        return self

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # the connection may already be dead; nothing to save
            with contextlib.suppress(Exception):
                client.shutdown()

    @property
    def is_open(self) -> bool:
        return self.client is not None

    @property
    def has_idle(self) -> bool:
        return b"IDLE" in self.capabilities

    def _c(self) -> imapclient.IMAPClient:
        if self.client is None:
            self.open()
        assert self.client is not None
        return self.client

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            self.close()
            raise MailboxUnavailable(f"{what} on {self.account.login}: {exc}") from exc

    # -- reading ------------------------------------------------------------------
    def refresh(self) -> None:
        """NOOP: lets the server announce mail that arrived since our last command.

        A session only knows the messages announced to it; a UID FETCH or STORE for a
        newer message silently matches nothing until then (RFC 3501 §6.4.8).
        """
        c = self._c()
        self._call("noop", c.noop)

    def new_uids(self, after: int) -> list[int]:
        """UIDs greater than `after`, ascending (RFC 3501: `N:*` always includes the last)."""
        c = self._c()
        # NOOP first: a selected mailbox only shows mail that arrived since the last
        # command once the server has had a chance to announce it.
        self._call("noop", c.noop)
        uids = self._call("search", c.search, ["UID", f"{after + 1}:*"])
        return sorted(u for u in uids if u > after)

    def all_uids(self) -> list[int]:
        """Every UID in the folder now, ascending (NOOP first, as for `new_uids`)."""
        c = self._c()
        self._call("noop", c.noop)
        return sorted(self._call("search", c.search, ["ALL"]))

    def headers(self, uids: Iterable[int], fields: tuple[str, ...] = ("MESSAGE-ID", "FROM", "DATE", "SUBJECT")) -> dict[int, bytes]:
        """The named header fields of each message (raw bytes), in one FETCH."""
        uids = list(uids)
        if not uids:
            return {}
        c = self._c()
        item = f"BODY.PEEK[HEADER.FIELDS ({' '.join(fields)})]"
        data = self._call("fetch", c.fetch, uids, [item])
        out: dict[int, bytes] = {}
        for uid, parts in data.items():
            # The response names the item without .PEEK; take whichever body item is there.
            raw = next((v for k, v in parts.items() if k.startswith(b"BODY[")), b"")
            out[uid] = raw or b""
        return out

    def fetch(self, uids: Iterable[int], max_size: int | None = None) -> dict[int, FetchedMessage]:
        """Full messages without setting \\Seen (BODY.PEEK). Larger than `max_size`:
        only the header is fetched, so a huge mail cannot exhaust memory (B-19), and the
        result says so (`truncated`)."""
        uids = list(uids)
        if not uids:
            return {}
        c = self._c()
        meta = self._call("fetch", c.fetch, uids, ["INTERNALDATE", "RFC822.SIZE"])
        small = [u for u in uids if u in meta and (max_size is None or meta[u][b"RFC822.SIZE"] <= max_size)]
        big = [u for u in uids if u in meta and u not in small]
        out: dict[int, FetchedMessage] = {}
        for part, group in ((b"BODY[]", small), (b"BODY[HEADER]", big)):
            if not group:
                continue
            item = "BODY.PEEK[]" if part == b"BODY[]" else "BODY.PEEK[HEADER]"
            data = self._call("fetch", c.fetch, group, [item])
            for uid in group:
                if uid not in data:
                    continue  # expunged in between
                raw = data[uid].get(part) or b""
                when = meta[uid][b"INTERNALDATE"]
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                out[uid] = FetchedMessage(uid, when, int(meta[uid][b"RFC822.SIZE"]), raw, truncated=part != b"BODY[]")
        return out

    def fetch_one(self, uid: int) -> FetchedMessage | None:
        return self.fetch([uid]).get(uid)

    def locate(self, message_id: str, size: int, internaldate: datetime | None) -> list[int]:
        """UIDs of the message with this Message-ID (or, without one, this size), narrowed
        to those with this exact size and INTERNALDATE when known: what survives a MOVE."""
        c = self._c()
        self._call("noop", c.noop)
        if message_id:
            found = self._call("search", c.search, ["HEADER", "Message-ID", message_id])
        else:
            found = self._call("search", c.search, ["LARGER", str(max(size - 1, 0)), "SMALLER", str(size + 1)])
        if not found:
            return []
        meta = self._call("fetch", c.fetch, found, ["INTERNALDATE", "RFC822.SIZE"])
        out = []
        for uid, item in meta.items():
            when = item[b"INTERNALDATE"]
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if int(item[b"RFC822.SIZE"]) == size and (internaldate is None or abs((when - internaldate).total_seconds()) < 1):
                out.append(uid)
        return sorted(out)

    def search_header(self, name: str, value: str) -> list[int]:
        c = self._c()
        return sorted(self._call("search", c.search, ["HEADER", name, value]))

    # -- changing -----------------------------------------------------------------
    def delete(self, uids: Iterable[int]) -> None:
        """Remove messages for good. Idempotent: a UID already gone is not an error."""
        uids = list(uids)
        if not uids:
            return
        c = self._c()
        self._call("store", c.add_flags, uids, [imapclient.DELETED])
        if b"UIDPLUS" in self.capabilities:
            self._call("expunge", c.uid_expunge, uids)
        else:
            self._call("expunge", c.expunge)

    def ensure_folder(self, folder: str) -> None:
        if folder in self._folders:
            return
        c = self._c()
        if not self._call("folder_exists", c.folder_exists, folder):
            # Created by someone else in between? Fine; a real failure shows on use.
            with contextlib.suppress(IMAPClientError):
                c.create_folder(folder)
        self._folders.add(folder)

    def move(self, uids: Iterable[int], folder: str) -> None:
        """Move messages (one UID set, one command: RFC 6851). Idempotent: UIDs already
        gone are not an error, so a move repeated after a crash is harmless."""
        uids = sorted(set(uids))
        if not uids:
            return
        self.ensure_folder(folder)
        c = self._c()
        if b"MOVE" in self.capabilities:
            self._call("move", c.move, uids, folder)
        else:
            self._call("copy", c.copy, uids, folder)
            self.delete(uids)

    def append(self, raw: bytes, folder: str | None = None, when: datetime | None = None) -> None:
        folder = folder or self.account.folder
        self.ensure_folder(folder)
        c = self._c()
        self._call("append", c.append, folder, raw, (), when)

    # -- waiting ------------------------------------------------------------------
    def wait(self, timeout: float, stop: Callable[[], bool] | None = None) -> bool:
        """Block until the server reports a change, `timeout` passes or `stop()` is true;
        True on a change.

        With IDLE the server pushes EXISTS (Dovecot about 0.5 s after delivery); the
        check runs in one-second slices so a stopping engine is not held up by a long
        IDLE. Without IDLE, a NOOP after sleeping gives the same answer more slowly.
        """
        c = self._c()
        if not self.has_idle:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not (stop and stop()):
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            return bool(self._call("noop", c.noop)[1])
        self._call("idle", c.idle)
        deadline = time.monotonic() + timeout
        responses: list = []
        try:
            while not responses and time.monotonic() < deadline and not (stop and stop()):
                responses = self._call("idle_check", c.idle_check, timeout=min(1.0, timeout))
        finally:
            if self.client is not None:
                self._call("idle_done", c.idle_done)
        return bool(responses)



__all__ = [
    "FetchedMessage",
    "TokenSource",
    "login",
    "ImapAccount",
    "ImapSession",
    "MailboxUnavailable",
]
