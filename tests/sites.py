"""A `Site` with nothing behind it, for the tests of steps that reach no mail server: every
address is 127.0.0.1 with nothing listening on port 1 (give what a test needs, e.g.
`offline_site(sync_alert_after=timedelta(seconds=30))`)."""

from __future__ import annotations

from typing import Any

from postroom.core.keys import KeyRing
from postroom.engine.site import Site
from postroom.mail.smtp import SmtpAccount


def offline_site(node_id: str = "n", **changes: Any) -> Site:
    return Site(
        node_id=node_id,
        keys=KeyRing.from_secrets([b"x" * 32]),
        imap_host="127.0.0.1",
        imap_port=1,
        imap_tls="none",
        smtp=SmtpAccount(host="127.0.0.1", port=1, tls="none", login="", password=""),
        **changes,
    )
