"""Reading an OAuth2 login's current access token where nothing may refresh it (the web).

The engine owns the token lifecycle (engine/oauth2.py) and keeps every grant's access
token fresh ahead of expiry; a page that reads a box's mail only borrows the token in
hand, so it never spends a (rotating) refresh token behind the engine's back.
"""

from __future__ import annotations

from datetime import datetime

from postroom.core.oauth2 import GrantState, usable
from postroom.store.models import OAuth2Grant


def current_access_token(login: str, now: datetime) -> str | None:
    grant = OAuth2Grant.objects.filter(login=login.lower()).first()
    if grant is None or grant.state != GrantState.VALID or not usable(grant.access_expires_at, now):
        return None
    return grant.access_token
