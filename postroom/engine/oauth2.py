"""OAuth2 mailboxes: who holds each box's tokens, refreshes them and tells a human (B-10).

The decisions are core/oauth2.py's; this module does the I/O around them: the token
endpoint through Authlib, the grant row (store.models.OAuth2Grant), the alerts.

A refresh, in this order, because the IdP may rotate the refresh token and a strict one
(the fake IdP in the tests, Okta, Auth0 without a reuse interval) refuses the old one for
ever once it has answered:

1. claim the row (`refreshing_until`, a conditional UPDATE): two nodes or threads that
   both used the same refresh token would have the second refused as ``invalid_grant``;
2. call the token endpoint, outside any transaction (a rolled-back transaction must not
   take the IdP's answer with it, and no lock is held over HTTP);
3. store both tokens in ONE UPDATE, before anything else happens and before the new
   access token is handed to any login: the only step between the IdP's answer and the
   store is parsing it. A process killed inside that window loses the rotated token (no
   order avoids that with a strict IdP); the grant is then refused, which raises the
   alert and asks for `postroom oauth2 authorize` instead of failing silently.

A token endpoint that is away (network, 429, 5xx) is retried with backoff while the box
keeps its last access token as long as that is valid; ``invalid_grant`` marks the grant
invalid and raises one alert naming the login. Only that box's logins fail
(MailboxUnavailable), so its watcher backs off and the other boxes go on (B-9).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from postroom.config.schema import Config
from postroom.core import oauth2 as core
from postroom.core.alerts import AlertKind
from postroom.core.backoff import delay
from postroom.core.oauth2 import Answer, GrantState
from postroom.engine.alerts import clear_alert, open_alerts, raise_alert
from postroom.engine.faults import checkpoint
from postroom.mail.imap import MailboxUnavailable, TokenSource
from postroom.store import oauth2 as store
from postroom.store.models import OAuth2Grant
from postroom.store.oauth2 import Provider, Reply, call_token_endpoint, expires, refresh_expires_in

log = logging.getLogger(__name__)

# A refresh holds its claim on the row for the provider's timeout plus this: the call is
# over by then, and a process killed while it held the claim delays the box's next
# refresh by no more than that.
CLAIM_MARGIN = timedelta(seconds=5)
RETRY_BASE = 5.0
RETRY_CAP = 300.0


class NoGrant(MailboxUnavailable):
    """The login has no usable grant: a human must authorize it (`postroom oauth2 authorize`)."""


class Tokens:
    """Every login on OAuth2 of one site: its provider, the file's first refresh token.
    Thread-safe: all state is in the database."""

    def __init__(self, logins: Mapping[str, tuple[Provider, str | None]],
                 clock: Callable[[], datetime] = timezone.now) -> None:
        self.logins = {login.lower(): value for login, value in logins.items()}
        # The engine's clock (Engine sets it: the tests skip time ahead).
        self.clock = clock

    @classmethod
    def of(cls, config: Config) -> Tokens | None:
        logins = {login: (Provider.of(p), first) for login, (p, first) in config.oauth2_logins().items()}
        return cls(logins) if logins else None

    def source(self, login: str) -> TokenSource | None:
        """What a mail adapter asks for a token at each login; None for a password login."""
        key = login.lower()
        if key not in self.logins:
            return None
        return lambda: self.access_token(key)

    def provider(self, login: str) -> Provider:
        return self.logins[login.lower()][0]

    # -- using ----------------------------------------------------------------------------
    def access_token(self, login: str, now: datetime | None = None) -> str:
        """A valid access token for `login`, refreshed first when it is due."""
        now = now or self.clock()
        grant = self._grant(login, now)
        if grant.state == GrantState.INVALID:
            raise NoGrant(f"{login}: the OAuth2 grant was refused ({grant.last_error}); "
                          f"run `postroom oauth2 authorize {login}`")
        if not core.refresh_due(grant.issued_at, grant.access_expires_at, now):
            return grant.access_token
        if grant.retry_at is not None and now < grant.retry_at:
            return self._last_good(grant, now)
        return self._last_good(self.refresh(grant, now), now)

    @staticmethod
    def _last_good(grant: OAuth2Grant, now: datetime) -> str:
        if grant.state == GrantState.VALID and core.usable(grant.access_expires_at, now):
            return grant.access_token
        if grant.state == GrantState.INVALID:
            raise NoGrant(f"{grant.login}: the OAuth2 grant was refused ({grant.last_error}); "
                          f"run `postroom oauth2 authorize {grant.login}`")
        raise MailboxUnavailable(f"{grant.login}: no valid OAuth2 access token yet "
                                 f"(token endpoint: {grant.last_error or 'busy'})")

    def _grant(self, login: str, now: datetime) -> OAuth2Grant:
        key = login.lower()
        grant = OAuth2Grant.objects.filter(login=key).first()
        if grant is not None:
            return grant
        provider, first = self.logins[key]
        if first is None:
            message = (f"{key} has no OAuth2 grant yet: run `postroom oauth2 authorize {key}` "
                       "(or give the box's refresh_token once)")
            if not open_alerts(AlertKind.OAUTH2_GRANT_INVALID, key):
                raise_alert(AlertKind.OAUTH2_GRANT_INVALID, key, message, now)
            raise NoGrant(message)
        # The file's refresh token is taken into the database once; from then on the
        # database's (rotated) one is the truth and the file's is never read again.
        # (IntegrityError: taken in by another thread at the same moment.)
        with contextlib.suppress(IntegrityError), transaction.atomic():
            OAuth2Grant.objects.create(
                login=key, provider=provider.name, refresh_token=first, authorized_at=now,
                refresh_expires_at=core.refresh_expiry(now, None, provider.refresh_lifetime, None, True),
            )
        return OAuth2Grant.objects.get(login=key)

    # -- refreshing ------------------------------------------------------------------------
    def refresh(self, grant: OAuth2Grant, now: datetime) -> OAuth2Grant:
        """Refresh `grant` (claimed, called, stored: see the module's docstring); the row
        as it is afterwards. Never raises for the IdP's answer: the row says what it was."""
        provider = self.provider(grant.login)
        claimed = (
            OAuth2Grant.objects.filter(pk=grant.pk, generation=grant.generation)
            .filter(Q(refreshing_until=None) | Q(refreshing_until__lt=now))
            .update(refreshing_until=now + timedelta(seconds=provider.timeout) + CLAIM_MARGIN)
        )
        if not claimed:
            return self._wait_for_other(grant)
        reply = call_token_endpoint(provider, refresh_token=grant.refresh_token)
        checkpoint("oauth2_before_store")
        if reply.answer is Answer.OK:
            self._store(grant, provider, reply.token, now)
            checkpoint("oauth2_after_store")
            log.info("%s: OAuth2 access token refreshed", grant.login)
        elif reply.answer is Answer.GRANT_INVALID:
            self._invalid(grant, reply.detail, now)
        else:
            self._retry_later(grant, reply, now)
        return OAuth2Grant.objects.get(pk=grant.pk)

    def _store(self, grant: OAuth2Grant, provider: Provider, token: Mapping[str, Any], now: datetime) -> None:
        new = token.get("refresh_token")
        rotated = bool(new) and new != grant.refresh_token
        stored = OAuth2Grant.objects.filter(pk=grant.pk, generation=grant.generation).update(
            # An IdP that does not rotate (Google) sends none: the one in hand stays.
            refresh_token=new or grant.refresh_token,
            access_token=token["access_token"],
            issued_at=now,
            access_expires_at=expires(token, now),
            refresh_expires_at=core.refresh_expiry(
                now, refresh_expires_in(token), provider.refresh_lifetime, grant.refresh_expires_at, rotated
            ),
            generation=F("generation") + 1,
            state=GrantState.VALID,
            refreshing_until=None,
            failures=0,
            retry_at=None,
            last_error="",
        )
        if not stored:
            # Re-authorized in between: that grant is newer; this answer is dropped (the
            # IdP keeps both families valid).
            log.info("%s: re-authorized during a refresh; keeping the new grant", grant.login)
            return
        clear_alert(AlertKind.OAUTH2_GRANT_INVALID, grant.login, now)

    def _invalid(self, grant: OAuth2Grant, detail: str, now: datetime) -> None:
        OAuth2Grant.objects.filter(pk=grant.pk, generation=grant.generation).update(
            state=GrantState.INVALID, refreshing_until=None, last_error=detail[:2000]
        )
        raise_alert(
            AlertKind.OAUTH2_GRANT_INVALID,
            grant.login,
            f"{grant.login}: the identity provider refused the OAuth2 grant ({detail}); the box "
            f"cannot log in until someone runs `postroom oauth2 authorize {grant.login}` "
            "(or uses the admin's authorize action)",
            now,
        )

    def _retry_later(self, grant: OAuth2Grant, reply: Reply, now: datetime) -> None:
        failures = grant.failures + 1
        wait = delay(failures, base=RETRY_BASE, cap=RETRY_CAP, jitter=random.random())
        OAuth2Grant.objects.filter(pk=grant.pk, generation=grant.generation).update(
            failures=failures, retry_at=now + timedelta(seconds=wait), refreshing_until=None,
            last_error=reply.detail[:2000],
        )
        log.warning("%s: token endpoint: %s (%s); next try in %.0f s", grant.login, reply.detail,
                    reply.answer.value, wait)
        if reply.answer is Answer.REFUSED and not open_alerts(AlertKind.OAUTH2_GRANT_INVALID, grant.login):
            raise_alert(AlertKind.OAUTH2_GRANT_INVALID, grant.login,
                        f"{grant.login}: the identity provider refused Postroom's client ({reply.detail}): "
                        "check the [[oauth2]] client_id, client_secret and scopes", now)

    @staticmethod
    def _wait_for_other(grant: OAuth2Grant) -> OAuth2Grant:
        """Another thread or node is refreshing this grant: wait a little for its answer
        rather than spend the same refresh token a second time."""
        for _ in range(25):
            time.sleep(0.2)
            row = OAuth2Grant.objects.get(pk=grant.pk)
            if row.generation != grant.generation or row.state != grant.state or row.refreshing_until is None:
                return row
        return OAuth2Grant.objects.get(pk=grant.pk)

    # -- the worker step -------------------------------------------------------------------
    def step(self, now: datetime) -> bool:
        """Refresh every valid grant that is due, before any login needs it (an idle relay
        account too), and warn ahead of a known refresh-token expiry. True if it did work."""
        did = False
        for login, (provider, _first) in self.logins.items():
            grant = OAuth2Grant.objects.filter(login=login).first()
            if grant is None or grant.state != GrantState.VALID:
                continue
            due = core.refresh_due(grant.issued_at, grant.access_expires_at, now)
            if due and (grant.retry_at is None or now >= grant.retry_at):
                grant = self.refresh(grant, now)
                did = True
            expiring = open_alerts(AlertKind.OAUTH2_GRANT_EXPIRING, login)
            if core.expiry_warning_due(grant.refresh_expires_at, now, provider.warn_before):
                if not expiring:
                    raise_alert(AlertKind.OAUTH2_GRANT_EXPIRING, login,
                                f"{login}: the OAuth2 refresh token runs out at "
                                f"{grant.refresh_expires_at:%Y-%m-%d %H:%M} UTC; run "
                                f"`postroom oauth2 authorize {login}` before then", now)
                    did = True
            elif expiring:
                clear_alert(AlertKind.OAUTH2_GRANT_EXPIRING, login, now)
        return did

    # -- authorizing ---------------------------------------------------------------------
    def authorization_url(self, login: str, redirect_uri: str) -> tuple[str, str, str]:
        return store.authorization_url(self.provider(login), login, redirect_uri)

    def authorize(self, login: str, code: str, verifier: str, now: datetime, redirect_uri: str) -> Reply:
        reply = store.authorize(self.provider(login), login, code, verifier, now, redirect_uri)
        if reply.answer is Answer.OK:
            log.info("%s: authorized again through %s", login, self.provider(login).name)
        return reply
