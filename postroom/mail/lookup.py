"""Read one message from a mailbox, read-only, for the web's transcripts.

The customer's mail stays on the server (decision 0001); a transcript reads it there:
EXAMINE (never SELECT, so nothing is changed, not even \\Recent), the UID the interaction
recorded when the UIDVALIDITY still matches, else SEARCH HEADER Message-ID in each folder
given (the box's inbox, then where the engine files finished mail), and BODY.PEEK[] (no
\\Seen). A short-lived connection per lookup: the web holds no IMAP session.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Sequence

import imapclient
from imapclient.exceptions import IMAPClientError

from postroom.mail.imap import ImapAccount, MailboxUnavailable, login, tls_context

log = logging.getLogger(__name__)

__all__ = ["fetch_message"]


def _open(account: ImapAccount) -> imapclient.IMAPClient:
    ctx = tls_context(account.cafile)
    client = imapclient.IMAPClient(
        account.host,
        port=account.port,
        ssl=account.tls == "tls",
        ssl_context=ctx,
        timeout=account.timeout,
    )
    if account.tls == "starttls":
        client.starttls(ctx)
    try:
        login(client, account)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def _matches(raw: bytes, message_id: str | None) -> bool:
    if not message_id:
        return True
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return message_id.encode("utf-8", "replace") in head


def fetch_message(
    account: ImapAccount,
    *,
    folders: Sequence[str],
    uidvalidity: int | None,
    uid: int | None,
    message_id: str | None,
) -> bytes | None:
    """The message's bytes, or None when no folder holds it (or the server is away)."""
    try:
        client = _open(account)
    except (IMAPClientError, OSError, ssl.SSLError, MailboxUnavailable) as exc:
        log.warning("transcript: cannot read %s: %s", account.login, exc)
        return None
    try:
        for n, folder in enumerate(dict.fromkeys(folders)):
            try:
                if not client.folder_exists(folder):
                    continue
                info = client.select_folder(folder, readonly=True)
                uids: list[int] = []
                if n == 0 and uid and uidvalidity == int(info.get(b"UIDVALIDITY", 0)):
                    uids = [uid]
                if message_id:
                    uids += [u for u in client.search(["HEADER", "Message-ID", message_id]) if u not in uids]
                for candidate in uids[:5]:
                    data = client.fetch([candidate], ["BODY.PEEK[]"]).get(candidate, {})
                    raw = data.get(b"BODY[]")
                    if isinstance(raw, bytes) and _matches(raw, message_id):
                        return raw
            except IMAPClientError as exc:
                log.warning("transcript: %s/%s: %s", account.login, folder, exc)
        return None
    except (OSError, ssl.SSLError) as exc:
        log.warning("transcript: lost %s: %s", account.login, exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            client.logout()
