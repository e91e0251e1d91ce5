"""Operational alerts: what can go wrong with the mail itself, as an enum, and when to mail.

An alert is raised under a dedupe key (the box, the message, the withdrawal...) and stays
open until cleared; raising it again only counts. Supervisors are mailed about an alert at
most once per key per interval, so a box that flaps, or a thousand bad messages in one
box, is one mail, not a thousand.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum


class AlertKind(StrEnum):
    # A message was quarantined (key: the box address).
    QUARANTINED = "quarantined"
    # A message on the server that the ledger cannot account for (key: box:uidvalidity:uid).
    UNACCOUNTED = "unaccounted"
    # A watched box has not synced for longer than [health] sync_alert_after (key: the box).
    BOX_NOT_SYNCED = "box_not_synced"
    # A forwarded copy could not be withdrawn from an agent's mailbox (key: withdrawal id).
    WITHDRAWAL_GIVEN_UP = "withdrawal_given_up"
    # An outgoing mail was refused for good or ran out of retries (key: the outbox key).
    SEND_FAILED = "send_failed"
    # A message a size limit kept us from reading whole (key: box:uidvalidity:uid).
    OVERSIZE = "oversize"
    # The journal box cannot be read, so unknown send outcomes cannot be settled (key: its
    # address); those mails wait, neither resent nor dropped.
    JOURNAL_UNAVAILABLE = "journal_unavailable"
    # A box's OAuth2 grant was refused for good (revoked, expired): it needs
    # `postroom oauth2 authorize` (key: the login). Cleared by the next good refresh.
    OAUTH2_GRANT_INVALID = "oauth2_grant_invalid"
    # A box's refresh token runs out within [[oauth2]] warn_before (key: the login).
    OAUTH2_GRANT_EXPIRING = "oauth2_grant_expiring"


def notice_due(*, pending: bool, notified_at: datetime | None, now: datetime, interval: timedelta) -> bool:
    """Mail the supervisors now? Only for something new, and not twice within `interval`."""
    return pending and (notified_at is None or now - notified_at >= interval)
