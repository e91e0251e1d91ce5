"""The journal box: a mailbox that receives a copy of every mail Postroom sends.

The copy is one more envelope recipient of the same SMTP transaction (`mail/smtp.py`), so
the server's 250 covers it; this adapter only reads the box, to settle outcomes SMTP left
unknown (`holds`), and clears copies past their retention (`expunge_before`). Nothing else
ever reads it, and Postroom never watches it as an incoming box.
"""

from __future__ import annotations

from datetime import date

from postroom.mail.imap import ImapSession

# UIDs per STORE/EXPUNGE command: a long UID list would outgrow the server's command line
# (Dovecot: imap_max_line_length, 64 KiB by default).
CHUNK = 1000


class JournalBox(ImapSession):
    """An open session on the journal box. Not thread-safe."""

    def holds(self, message_id: str) -> bool:
        """Whether a copy with this Message-ID is in the box (RFC 3501 SEARCH HEADER,
        a substring match: our Message-IDs are unique enough for that to be exact).
        Raises `MailboxUnavailable` when the box cannot be searched."""
        # NOOP first: a session only sees mail the server has announced to it.
        self.refresh()
        return bool(self.search_header("Message-ID", message_id))

    def expunge_before(self, day: date) -> int:
        """Remove every copy that arrived before `day` (INTERNALDATE, RFC 3501 SEARCH
        BEFORE: whole days, so a copy is kept up to one day longer, never shorter)."""
        client = self._c()
        self.refresh()
        uids = sorted(self._call("search", client.search, ["BEFORE", day]))
        for start in range(0, len(uids), CHUNK):
            self.delete(uids[start : start + CHUNK])
        return len(uids)
