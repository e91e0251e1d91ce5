"""Routing (fig. 6): queued interactions to Ready agents, by priority, then arrival.

The choice is made by `postroom.core.router.Router`, an in-memory index that never scans
the backlog. This module keeps it in step with the database, which other threads and
processes change too (reception queues mail, the web makes agents Ready, a transfer puts
mail back): the journal is the change feed. Every state change and every Ready/Not Ready
appends a JournalEvent, so each round reads the events after the last one seen and
refreshes exactly the interactions and agents they name. At start (and every few
minutes, as a safety net) the index is rebuilt from the tables.

A decision is then written with a CAS (`store.transitions.apply`); the routed count goes
up (fig. 6 356), and an agent flagged auto-answer answers at once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, Max, Q

from postroom.core.lifecycle import WITH_AGENT, Answered, Routed, State
from postroom.core.router import Assignment, QueuedItem, Router
from postroom.engine.notices import queue_notice
from postroom.engine.site import Site
from postroom.store import journal, locking
from postroom.store.compiled import Compiled, CompiledIn
from postroom.store.models import Agent, Interaction, JournalEvent, skill_levels
from postroom.store.transitions import StaleInteraction, apply

log = logging.getLogger(__name__)

REBUILD_EVERY = 300.0  # seconds: a full rebuild catches what the feed cannot (admin edits)
AGENT_REFRESH_EVERY = 10.0
# PostgreSQL numbers a row at its insert and shows it at its commit: with several writers
# (watchers, the worker, the web, other nodes: decision 0030) an event may become visible
# after one with a higher id was read. Each round re-reads this many ids below the cursor
# and takes the events it has not seen yet. SQLite has one writer at a time, which commits
# before the next one numbers a row: there, ids become visible in order and no look back is
# needed (issue 9: the window was 500 rows read each round).
LOOKBACK = 500
# Decisions per write transaction: a round that routes a whole backlog at once holds
# SQLite's single write lock for a bounded time.
ROUND_CHUNK = 50


def lookback() -> int:
    return LOOKBACK if locking.shared() else 0


# Compiled once per thread and connection (decision 0067): the journal's newest id (an idle
# round's whole question, where no look-back is needed), and a round's interactions and
# agents (by as many ids or addresses as the round has; Django built each of these again
# at every round, on the path from a customer's mail to its forward).
_NEWEST = Compiled(lambda: JournalEvent.objects.order_by("-id").values_list("id")[:1])
_ROUND_ITEMS = CompiledIn(
    lambda pks: Interaction.objects.select_related("mailbox", "agent").filter(pk__in=pks),
    Interaction._meta.pk,  # type: ignore[arg-type]
    ROUND_CHUNK,
)
_ROUND_AGENTS = CompiledIn(
    lambda addresses: Agent.objects.filter(address__in=addresses),
    Agent._meta.get_field("address"),  # type: ignore[arg-type]
    ROUND_CHUNK,
)


def newest_event() -> int:
    """The journal's newest id (0: none)."""
    rows = _NEWEST.rows()
    return rows[0][0] if rows else 0


# What the index needs of a queued interaction, read as plain values: building 100,000
# model instances (every column, two joined agents) took 5-14 s of a restart (issue 9's
# `resume_100k`); these columns take under a second.
QUEUED_COLUMNS = (
    "pk", "priority", "arrival_time", "queue", "target_agent__address",
    "preferred_agent__address", "preferred_until", "excluded_agents",
)


def item_for(row: tuple) -> QueuedItem:
    """The index's item for one row of `QUEUED_COLUMNS`."""
    pk, priority, arrival, queue, target, preferred, preferred_until, excluded = row
    preferred = preferred if preferred and preferred_until else None
    return QueuedItem(
        key=pk,
        priority=priority,
        arrival=arrival,
        queue=queue,
        target_agent=target or None,
        preferred_agent=preferred,
        preferred_until=preferred_until if preferred else None,
        excluded=frozenset(excluded or ()),
    )


class RoutingDesk:
    """The engine's routing state: a Router plus the journal cursor that feeds it."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.router: Router | None = None
        self.cursor = 0
        # The ids in (cursor - LOOKBACK, cursor] already taken in.
        self.seen: set[int] = set()
        self.built_at = 0.0
        self.agents_at = 0.0
        # The journal ids this desk's own rounds wrote and committed (decision 0055): what
        # they say (an item routed, answered, its agent's load one up) the index made so
        # itself when it assigned; the round after does not read those back.
        self.own: set[int] = set()

    # -- keeping the index in step ---------------------------------------------------
    def rebuild(self, now: datetime) -> None:
        started = time.monotonic()
        router = Router()
        # Read the cursor first: anything journaled while we load is replayed after.
        self.cursor = JournalEvent.objects.aggregate(m=Max("id"))["m"] or 0
        self.own = set()
        back = lookback()
        self.seen = set(JournalEvent.objects.filter(id__gt=self.cursor - back).values_list("id", flat=True)) if back else set()
        self.router = router
        self._load_agents(now)
        queued = Interaction.objects.filter(status=State.QUEUED).values_list(*QUEUED_COLUMNS)
        for row in queued.iterator(chunk_size=5000):
            router.add(item_for(row))
        self.built_at = self.agents_at = time.monotonic()
        log.info("routing index built: %s queued, %.2f s", router.queued_count(), self.built_at - started)

    def _load_agents(self, now: datetime) -> None:
        assert self.router is not None
        states = [s.value for s in WITH_AGENT]
        agents = Agent.objects.annotate(load=Count("interactions", filter=Q(interactions__status__in=states)))
        seen = set()
        for agent in agents:
            seen.add(agent.address)
            # An agent new to the index has been idle since they last changed state, the
            # best guess there is; for one already known, a load that changed behind our
            # back changed now (resetting to the old state time would put that agent at
            # the head of the line for ever).
            known = self.router.agent(agent.address)
            self._put_agent(agent, agent.load, now if known else (agent.state_changed_at or now))
        for address in list(self.router.agents()):
            if address not in seen:
                self.router.remove_agent(address)

    def _put_agent(self, agent: Agent, load: int, stamp: datetime) -> None:
        assert self.router is not None
        router = self.router
        known = router.agent(agent.address)
        router.set_agent(agent.address, skill_levels(agent.skills), agent.capacity)
        if known is None or known.load != load:
            router.set_load(agent.address, load, stamp)
        if agent.ready and (known is None or not known.ready):
            router.agent_ready(agent.address, agent.state_changed_at or stamp)
        elif not agent.ready and (known is None or known.ready):
            router.agent_not_ready(agent.address)

    def sync(self, now: datetime) -> None:
        if self.router is None or time.monotonic() - self.built_at > REBUILD_EVERY:
            self.rebuild(now)
            return
        back = lookback()
        if not back and newest_event() <= self.cursor:
            # Nothing journaled since the last round (ids become visible in order here,
            # see LOOKBACK): what reading the window would have done with no rows.
            self.own = {i for i in self.own if i > self.cursor}
            if time.monotonic() - self.agents_at > AGENT_REFRESH_EVERY:
                self._refresh_agents(set(), now)
            return
        window = list(
            JournalEvent.objects.filter(id__gt=self.cursor - back)
            .order_by("id")
            .values_list("id", "kind", "interaction_id", "agent_id")
        )
        events = [e for e in window if e[0] not in self.seen and e[0] not in self.own]
        if window:
            self.cursor = max(self.cursor, window[-1][0])
        self.seen = {e[0] for e in window if e[0] > self.cursor - back} if back else set()
        if self.own:
            # Each own id is passed over once, in the first window that shows it (then it
            # is in `seen`, or below the cursor); ids at or below the look-back are gone.
            self.own = {i for i in self.own if i > self.cursor} - {e[0] for e in window}
        changed = {ix for _, kind, ix, _ in events if ix is not None}
        agents_changed = {a for _, kind, _, a in events if a is not None}
        if changed:
            self._refresh_interactions(changed)
        if agents_changed or time.monotonic() - self.agents_at > AGENT_REFRESH_EVERY:
            self._refresh_agents(agents_changed, now)

    def _refresh_interactions(self, pks: set[int]) -> None:
        assert self.router is not None
        found = Interaction.objects.filter(pk__in=pks, status=State.QUEUED).values_list(*QUEUED_COLUMNS)
        queued = set()
        for row in found:
            queued.add(row[0])
            self.router.remove(row[0])
            self.router.add(item_for(row))
        for pk in pks - queued:
            self.router.remove(pk)

    def _refresh_agents(self, pks: set[int], now: datetime) -> None:
        if time.monotonic() - self.agents_at > AGENT_REFRESH_EVERY:
            self._load_agents(now)
            self.agents_at = time.monotonic()
            return
        states = [s.value for s in WITH_AGENT]
        agents = Agent.objects.filter(pk__in=pks).annotate(
            load=Count("interactions", filter=Q(interactions__status__in=states))
        )
        for agent in agents:
            self._put_agent(agent, agent.load, now)

    # -- deciding --------------------------------------------------------------------
    def route(self, now: datetime) -> bool:
        self.sync(now)
        assert self.router is not None
        assignments = self.router.assign(now)
        did = False
        try:
            for start in range(0, len(assignments), ROUND_CHUNK):
                did = self._commit_all(assignments[start : start + ROUND_CHUNK], now) or did
        except BaseException:
            # The index took these items as routed; whatever the database did not keep is
            # queued still: start again from the tables rather than lose them until the
            # next rebuild.
            self.router = None
            raise
        return did

    def _commit_all(self, assignments: list[Assignment], now: datetime) -> bool:
        """A round's decisions in one write transaction (issue 9: a commit each was a
        quarter of the worker's time; on SQLite with synchronous=FULL each one an fsync).
        Each decision is still its own compare-and-set in its own savepoint, so a stale
        one is skipped alone; the journal rows go in with one INSERT at the end. Nothing
        leaves the machine from here (the notices and forwards are outbox rows), so a
        kill before the commit loses nothing: the items are simply queued still."""
        found: dict[int, Interaction] = {
            ix.pk: ix  # type: ignore[misc]
            for ix in _ROUND_ITEMS.objects(sorted({a.item_key for a in assignments}))
        }
        agents: dict[str, Agent] = {
            agent.address: agent  # type: ignore[attr-defined]
            for agent in _ROUND_AGENTS.objects(sorted({a.agent for a in assignments}))
        }
        routed: Counter[int] = Counter()
        own: list[JournalEvent] = []
        # Only this round's rows, its own transaction's (an enclosing batch would hold
        # other steps' rows too; none does in the engine's worker).
        alone = not transaction.get_connection().in_atomic_block
        with transaction.atomic(), journal.batched():
            # Written in id order, as the senders lock theirs (engine/outbox.py, Outcomes):
            # the decisions are made already, and rows locked in one order by everyone
            # cannot deadlock with another node's senders or router.
            for assignment in sorted(assignments, key=lambda a: a.item_key):
                ix = found.get(assignment.item_key)
                if ix is not None and self.commit(ix, assignment.agent, now, agents):
                    routed[ix.agent_id] += 1
                else:
                    # A decision the database did not keep: the index counted it for its
                    # agent all the same; the round's rows are read back as before, which
                    # sets that agent's load from the database again.
                    alone = False
            # Fig. 6 356: the routed counts, one UPDATE per agent of the round.
            for agent_id, n in routed.items():
                Agent.objects.filter(pk=agent_id).update(routed_count=F("routed_count") + n)
            if alone:
                journal.flush()  # the round's journal rows, with their ids
                own = journal.deferred(JournalEvent)
        # Committed: the next round's sync passes over these (their items and agents are
        # as the index has them since `assign`; anything else that changes them journals
        # rows of its own, read as before).
        self.own.update(row.pk for row in own if row.pk is not None)
        return bool(routed)

    def commit(self, ix: Interaction, address: str, now: datetime, agents: dict[str, Agent] | None = None) -> bool:
        if ix.state is not State.QUEUED:
            return False  # the journal will tell the index what happened instead
        try:
            with journal.savepoint():
                apply(ix, Routed(agent=address), now, offer_timeout=self.site.offer_timeout, queue=ix.queue, agents=agents)
                agent = ix.agent
                if agent.auto_answer:
                    apply(ix, Answered(), now, auto=True)
                elif agent.notify_offers:
                    queue_notice(
                        self.site,
                        now,
                        key=f"notice:offer:{ix.guid}:{ix.version}",
                        to=agent.address,
                        subject=f"New email for you: {ix.subject}",
                        text=(
                            f"An email from {ix.customer} to {ix.mailbox.address} is offered to you.\n"
                            "Answer it on your agent page to receive it.\n"
                        ),
                        interaction=ix,
                    )
        except StaleInteraction:
            return False
        return True

