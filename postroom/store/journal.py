"""Appending to the journal: every step of every interaction leaves one row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from postroom.store.models import Agent, Interaction, JournalEvent, Mailbox


def record(
    kind: str,
    now: datetime,
    *,
    interaction: Interaction | None = None,
    agent: Agent | None = None,
    mailbox: Mailbox | None = None,
    **detail: Any,
) -> None:
    if interaction is not None:
        agent = agent or interaction.agent
        mailbox = mailbox or interaction.mailbox
    JournalEvent.objects.create(
        at=now, kind=kind, interaction=interaction, agent=agent, mailbox=mailbox, detail=detail
    )
