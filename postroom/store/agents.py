"""The one place an agent's state changes: Ready / Not Ready, answering an offer, API tokens.

The API, the CLI and the web pages all call these functions, so every change is stamped
and journaled the same way. Every write is a conditional UPDATE (compare-and-set), so two
processes racing on the same row cannot both win; the loser learns it from the return
value instead of overwriting the winner.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from postroom.core.lifecycle import Answered, IllegalTransition, State
from postroom.store import audit
from postroom.store.models import Agent, ApiToken, Interaction, JournalEvent
from postroom.store.transitions import StaleInteraction, apply

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

__all__ = ["answer", "issue_token", "revoke_tokens", "set_ready", "token_hash", "user_for_token"]


def _actor(by: object) -> str | None:
    """How the journal names whoever made a change: a user's username, or a given label."""
    if by is None:
        return None
    if isinstance(by, str):
        return by
    get_username = getattr(by, "get_username", None)
    return get_username() if callable(get_username) else str(by)


def set_ready(agent: Agent, ready: bool, *, now: datetime, by: object = None) -> bool:
    """Make `agent` Ready (True) or Not Ready (False). Returns whether anything changed.

    `by` is the user (or a label such as "cli") who asked; it is written to the journal.
    Setting the state the agent is already in changes nothing and journals nothing.
    """
    ready = bool(ready)
    with transaction.atomic():
        changed = (
            Agent.objects.filter(pk=agent.pk)
            .exclude(ready=ready)
            .update(ready=ready, state_changed_at=now)
        )
        if changed:
            detail = {"by": actor} if (actor := _actor(by)) else {}
            JournalEvent.objects.create(
                at=now,
                kind="agent_ready" if ready else "agent_not_ready",
                agent=agent,
                detail=detail,
            )
            if by is not None and getattr(by, "pk", None) != agent.user_id:
                # Someone else set this agent's state (a supervisor forcing Not Ready).
                audit.record(
                    "agent_ready" if ready else "agent_not_ready",
                    actor=_actor(by) or "",
                    target=agent.address,
                    at=now,
                )
    if changed:
        agent.ready = ready
        agent.state_changed_at = now
    else:
        agent.refresh_from_db(fields=["ready", "state_changed_at"])
    return bool(changed)


def answer(interaction: Interaction, agent: Agent, *, now: datetime) -> bool:
    """`agent` answers the interaction offered (routed) to them. Returns whether they won.

    The write is a compare-and-set on the version the caller read (store.transitions): it
    succeeds only if the interaction is still routed to this agent and nobody changed it
    since. Load the interaction fresh before calling. On success `interaction` is updated
    in place.
    """
    if interaction.agent_id != agent.pk or interaction.state is not State.ROUTED:
        return False
    try:
        with transaction.atomic():
            apply(interaction, Answered(), now, by=agent.address)
    except (IllegalTransition, StaleInteraction):
        return False
    return True


# --- API tokens -----------------------------------------------------------------------


def token_hash(key: str) -> str:
    """The stored form of a token: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def issue_token(
    user: AbstractBaseUser,
    name: str = "default",
    *,
    days: int | None = None,
    by: str | None = None,
    now: datetime | None = None,
) -> str:
    """A new bearer token for `user`, valid for `days` (default settings.API_TOKEN_DAYS).
    The key is shown once; only its hash is stored. Audited."""
    now = now or timezone.now()
    days = days if days is not None else settings.API_TOKEN_DAYS
    key = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, key_hash=token_hash(key), expires_at=now + timedelta(days=days)
        )
        audit.record(
            "token_issued",
            actor=by or user.get_username(),
            target=user.get_username(),
            token=token.pk,
            name=name,
            expires_at=token.expires_at.isoformat(),
        )
    return key


def revoke_tokens(
    tokens: Iterable[ApiToken], *, by: str, now: datetime | None = None
) -> int:
    """Revoke the tokens not revoked yet; returns how many. Audited, each."""
    now = now or timezone.now()
    done = 0
    with transaction.atomic():
        for token in tokens:
            if ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=now):
                done += 1
                audit.record(
                    "token_revoked",
                    actor=by,
                    target=token.user.get_username(),
                    token=token.pk,
                    name=token.name,
                )
    return done


def user_for_token(key: str, *, now: datetime | None = None) -> AbstractBaseUser | None:
    """The active user a live (unexpired, unrevoked) bearer token belongs to, or None."""
    if not key:
        return None
    now = now or timezone.now()
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(key.strip()), revoked_at=None)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    return token.user
