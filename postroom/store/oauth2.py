"""OAuth2 grants where the engine and the web meet (field bug B-10, decision 0046).

The engine owns the token lifecycle (engine/oauth2.py: refreshing, alerts); what both it
and the web need is here: the provider as configured, one call to the token endpoint
through Authlib, classified by core/oauth2.py, and a human's authorization stored as the
box's grant (the CLI's `postroom oauth2 authorize` and the admin's action). The web never
refreshes: it only borrows the access token in hand.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from django.conf import settings
from django.db.models import F

from postroom.config import Config, ConfigInvalid, load_config
from postroom.config.schema import OAuth2Provider
from postroom.core import oauth2 as core
from postroom.core.alerts import AlertKind
from postroom.core.oauth2 import Answer, GrantState, usable
from postroom.store.models import Alert, OAuth2Grant


@dataclass(frozen=True)
class Provider:
    """The engine's view of an [[oauth2]] table."""

    name: str
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str | None
    scopes: tuple[str, ...]
    redirect_uri: str
    refresh_lifetime: timedelta | None
    warn_before: timedelta
    timeout: float
    preset: str = "custom"

    @classmethod
    def of(cls, p: OAuth2Provider) -> Provider:
        assert p.authorize_url is not None and p.token_url is not None
        return cls(
            name=p.name,
            authorize_url=p.authorize_url,
            token_url=p.token_url,
            client_id=p.client_id,
            client_secret=p.client_secret,
            scopes=p.scopes,
            redirect_uri=p.redirect_uri,
            refresh_lifetime=timedelta(seconds=p.refresh_token_lifetime_seconds)
            if p.refresh_token_lifetime_seconds else None,
            warn_before=timedelta(seconds=p.warn_before_seconds),
            timeout=float(p.timeout_seconds),
            preset=p.preset,
        )

    def session(self, **kwargs: Any) -> OAuth2Session:
        return OAuth2Session(
            self.client_id,
            self.client_secret,
            scope=" ".join(self.scopes),
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
            timeout=self.timeout,
            **kwargs,
        )


@dataclass(frozen=True)
class Reply:
    """The token endpoint's answer, classified."""

    answer: Answer
    token: Mapping[str, Any]
    detail: str


def call_token_endpoint(provider: Provider, **grant: str) -> Reply:
    """One request to the token endpoint: ``refresh_token=...`` or ``code=..., code_verifier=...``."""
    status: list[int] = []

    def seen(resp: requests.Response) -> requests.Response:
        status.append(resp.status_code)
        return resp

    session = provider.session(redirect_uri=provider.redirect_uri)
    session.register_compliance_hook("refresh_token_response", seen)
    session.register_compliance_hook("access_token_response", seen)
    try:
        if "refresh_token" in grant:
            token = session.refresh_token(provider.token_url, refresh_token=grant["refresh_token"])
        else:
            token = session.fetch_token(provider.token_url, grant_type="authorization_code", **grant)
    except OAuthError as exc:
        code = status[-1] if status else 400
        return Reply(core.classify(code, exc.error), {}, f"{code} {exc.error}: {exc.description or ''}".strip())
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else None
        return Reply(core.classify(code, None), {}, f"{code}: {exc}")
    except (requests.RequestException, ValueError) as exc:
        return Reply(core.classify(None, None), {}, f"{type(exc).__name__}: {exc}")
    finally:
        session.close()
    answer = core.classify(status[-1] if status else 200, None, has_access_token=bool(token.get("access_token")))
    return Reply(answer, dict(token), "" if answer is Answer.OK else "no access_token in the answer")


def expires(token: Mapping[str, Any], now: datetime) -> datetime:
    try:
        seconds = int(token.get("expires_in") or 3600)
    except (TypeError, ValueError):
        seconds = 3600
    return now + timedelta(seconds=max(seconds, 1))


def refresh_expires_in(token: Mapping[str, Any]) -> int | None:
    try:
        value = token.get("refresh_token_expires_in")
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def authorization_url(provider: Provider, login: str, redirect_uri: str) -> tuple[str, str, str]:
    """(the IdP's URL for a human to open, its state, the PKCE verifier: RFC 7636)."""
    verifier = generate_token(64)
    session = provider.session(redirect_uri=redirect_uri, code_challenge_method="S256")
    extra: dict[str, str] = {"login_hint": login}
    if provider.preset == "google":
        # Without these Google issues no refresh token on a second consent.
        extra.update(access_type="offline", prompt="consent")
    url, state = session.create_authorization_url(provider.authorize_url, code_verifier=verifier, **extra)
    session.close()
    return url, state, verifier


def authorize(provider: Provider, login: str, code: str, verifier: str, now: datetime, redirect_uri: str) -> Reply:
    """Exchange the code a human brought back for a new grant, stored at once whatever
    the old one's state; the running engine's next login uses it (no restart)."""
    key = login.lower()
    reply = call_token_endpoint(provider, code=code, code_verifier=verifier, redirect_uri=redirect_uri)
    if reply.answer is not Answer.OK or not reply.token.get("refresh_token"):
        detail = reply.detail or "the answer carries no refresh_token (offline access not granted?)"
        return Reply(reply.answer if reply.answer is not Answer.OK else Answer.REFUSED, reply.token, detail)
    token = reply.token
    values = dict(
        provider=provider.name, state=GrantState.VALID, refresh_token=token["refresh_token"],
        access_token=token["access_token"], issued_at=now, access_expires_at=expires(token, now),
        refresh_expires_at=core.refresh_expiry(now, refresh_expires_in(token), provider.refresh_lifetime, None, True),
        refreshing_until=None, failures=0, retry_at=None, last_error="", authorized_at=now,
    )
    if not OAuth2Grant.objects.filter(login=key).update(generation=F("generation") + 1, **values):
        OAuth2Grant.objects.create(login=key, generation=1, **values)
    # As engine.alerts.clear_alert does (the store may not import the engine).
    Alert.objects.filter(
        kind__in=[AlertKind.OAUTH2_GRANT_INVALID, AlertKind.OAUTH2_GRANT_EXPIRING], key=key, cleared_at=None
    ).update(cleared_at=now, pending_notice=False)
    return reply


def current_access_token(login: str, now: datetime) -> str | None:
    grant = OAuth2Grant.objects.filter(login=login.lower()).first()
    if grant is None or grant.state != GrantState.VALID or not usable(grant.access_expires_at, now):
        return None
    return grant.access_token


def providers(config: Config) -> dict[str, Provider]:
    """Login (lower-cased) -> its provider, for every login on OAuth2 in `config`."""
    return {login: Provider.of(p) for login, (p, _first) in config.oauth2_logins().items()}


def site_providers() -> dict[str, Provider]:
    """The same for the site's configuration file (settings.POSTROOM_CONFIG), as the web
    reads it; empty when there is none or it does not load."""
    path = getattr(settings, "POSTROOM_CONFIG", "")
    try:
        mtime = Path(path).stat().st_mtime if path else 0.0
    except OSError:
        return {}
    return _providers(path, mtime) if path else {}


@functools.lru_cache(maxsize=4)
def _providers(path: str, mtime: float) -> dict[str, Provider]:
    try:
        return providers(load_config(path))
    except (ConfigInvalid, OSError):
        return {}
