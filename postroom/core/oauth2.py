"""OAuth2 mailboxes: the token lifecycle's decisions, with no HTTP and no clock (B-10).

A box on OAuth2 logs in with a short-lived access token (SASL XOAUTH2) minted from a
long-lived refresh token, which the database keeps (engine/oauth2.py). What went wrong in
the field, and the decision here that answers it:

* Refreshing only once a login failed left boxes dead for a while and mixed "token
  expired" with "password wrong": `refresh_due` renews ahead of expiry.
* A refresh that broke went unnoticed for ten days: `classify` tells a grant that needs a
  human (RFC 6749 §5.2 ``invalid_grant``: revoked, expired, or a rotated refresh token
  used twice) from a token endpoint that is merely away (network, 429, 5xx), which is
  retried with backoff while the box keeps its last good access token.
* Google "Testing" apps' and some tenants' refresh tokens die after a known time:
  `expiry_warning_due` says when to warn before that happens.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

# Renew this long before the access token expires at most (a quarter of a short lifetime).
REFRESH_MARGIN = timedelta(minutes=5)


class GrantState(StrEnum):
    # The refresh token worked last time (or was just granted).
    VALID = "valid"
    # The IdP refused the grant for good: a human must authorize the box again.
    INVALID = "invalid"


class Answer(StrEnum):
    """What a token endpoint's answer means for the box."""

    OK = "ok"
    # Network error, timeout, 429, 5xx, an unreadable body: try again later.
    RETRY = "retry"
    # invalid_grant: revoked, expired or already-rotated refresh token; re-authorize.
    GRANT_INVALID = "grant_invalid"
    # Any other refusal (invalid_client, unauthorized_client, invalid_scope...): the
    # configuration is wrong; retrying will not help either.
    REFUSED = "refused"


def classify(status: int | None, error: str | None, has_access_token: bool = False) -> Answer:
    """`status`: the HTTP status (None: no answer at all); `error`: the ``error`` member of
    a JSON error body (RFC 6749 §5.2), if any."""
    if status is None or status == 429 or status >= 500:
        return Answer.RETRY
    if error == "invalid_grant":
        return Answer.GRANT_INVALID
    if error is not None or status >= 400:
        # 408 is a timeout at a proxy, not a refusal.
        return Answer.RETRY if status == 408 else Answer.REFUSED
    return Answer.OK if has_access_token else Answer.RETRY


def refresh_due(issued_at: datetime | None, expires_at: datetime | None, now: datetime) -> bool:
    """Renew the access token now? Yes when there is none, and ahead of its expiry by
    REFRESH_MARGIN or a quarter of its lifetime, whichever is shorter, so that a login
    never starts with a token about to run out."""
    if expires_at is None:
        return True
    lifetime = expires_at - issued_at if issued_at is not None else REFRESH_MARGIN * 4
    return now >= expires_at - min(REFRESH_MARGIN, max(lifetime, timedelta(0)) / 4)


def usable(expires_at: datetime | None, now: datetime) -> bool:
    """The access token may still be presented (a refresh is retried in the meantime)."""
    return expires_at is not None and now < expires_at


def expiry_warning_due(refresh_expires_at: datetime | None, now: datetime, warn_before: timedelta) -> bool:
    """Warn that the refresh token itself runs out soon (only when its expiry is known)."""
    return refresh_expires_at is not None and now >= refresh_expires_at - warn_before


def refresh_expiry(
    now: datetime, answered_seconds: int | None, configured: timedelta | None, previous: datetime | None, rotated: bool
) -> datetime | None:
    """When the refresh token in hand runs out: the IdP's own word
    (``refresh_token_expires_in``) first, else the configured lifetime counted from when a
    new refresh token was issued; a refresh token kept (not rotated) keeps its expiry."""
    if answered_seconds is not None and answered_seconds > 0:
        return now + timedelta(seconds=answered_seconds)
    if rotated or previous is None:
        return now + configured if configured is not None else None
    return previous
