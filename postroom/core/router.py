"""The routing engine's index (patent fig. 6): which queued email goes to which agent, fast.

The engine keeps one `Router` in memory, tells it every change (an email queued or
leaving the queue, an agent Ready / Not Ready, an agent's load or skills changing) and
calls `assign(now)` for the assignments to offer. Pure: stdlib only, no clock (`now` is an
argument, and must never go backwards), no I/O. Same calls in, same assignments out.

The contract
------------
* Items rank by higher `priority`, then earlier `arrival`, then smaller `key`.
* An agent is *free* when Ready and `load < capacity`. A skill level < 1 is no skill.
* An item is eligible for a free agent that has the item's `queue` as a skill and is not
  in its `excluded` set. "unassigned" is a queue like any other: whoever has the skill
  "unassigned" (a supervisor, a triage agent) works it; nobody else sees it.
* `target_agent` set: only that agent may take the item, and it waits for them even when
  others are free; skills and exclusions do not apply.
* `preferred_agent` set (sticky thread routing): while `now < preferred_until` the item
  behaves as if targeted at that agent; from the deadline on it is an ordinary queued item.
  A preferred agent who is also excluded cancels the preference.
* Among eligible agents: highest level in the item's queue skill, then longest idle
  (smallest `idle_since`), then address. `idle_since` is stamped with `now` when the agent
  goes Ready and whenever their load changes (assignment, release, `set_load`), so an agent
  with room for several emails goes to the back of the line after each one (round robin
  among equals rather than filling one agent first).
* Fairness across queues is the patent's global rule, priority then arrival: `assign`
  repeatedly takes the highest-ranked item that has any eligible agent right now, gives it
  to its best eligible agent (load + 1), and stops when no item can be matched (or at
  `limit`). A free agent with several skills therefore takes the best item across all of
  them, and an item nobody may take never blocks the items behind it.

The data structures, and why
----------------------------
Every item lives in exactly one *lane*: a heap of its items in rank order.
 * a queue lane per skill, for ordinary items;
 * a personal lane per agent, for items targeted at them or preferred while the window
   lasts (so a waiting targeted item never sits at a queue head, blocking others); a heap
   of preference deadlines moves items to their queue lane when the window closes;
 * a parked set per queue for items whose every free agent is excluded (found when such
   an item reaches its lane head). They come back only when an agent the item does not
   exclude becomes free for that skill; exclusions are rare, so these sets stay small.
A lane is *active* when it has an agent who could take its head: a queue lane when at least
one agent with the skill is free (a counter per skill), a personal lane when its agent is
free. The head of every active lane is advertised in one global heap, so a decision pops
the best head in O(log lanes) instead of scanning. Free agents sit in one heap per skill
ordered by (-level, idle_since, address); the best eligible agent is the top, after
popping (and pushing back) the few excluded ones.

All heaps delete lazily: an entry carries a sequence number (items), a generation
(agents) or a token (lane heads) and is ignored once that no longer matches; a heap is
rebuilt once more than half of it is stale. Every operation is O(log n) amortised, apart
from scanning a parked set when an agent becomes free for its skill.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any, TypeAlias

Instant: TypeAlias = float | datetime  # one or the other throughout a Router, never mixed

_SLACK = 64  # a heap is rebuilt (in place) when it holds more than 2 * live + _SLACK entries


@dataclass(frozen=True, slots=True)
class QueuedItem:
    key: int
    priority: int
    arrival: Instant
    queue: str  # a skill name, or "unassigned"
    target_agent: str | None = None
    preferred_agent: str | None = None
    preferred_until: Instant | None = None
    excluded: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.preferred_agent is not None and self.preferred_until is None:
            raise ValueError("a preferred_agent needs a preferred_until")


@dataclass(frozen=True, slots=True)
class Assignment:
    item_key: int
    agent: str


@dataclass(frozen=True, slots=True)
class AgentState:
    address: str
    skills: Mapping[str, int]
    capacity: int
    load: int
    ready: bool
    idle_since: Instant | None


class _Agent:
    __slots__ = ("address", "skills", "capacity", "load", "ready", "idle_since", "gen")

    def __init__(self, address: str, skills: dict[str, int], capacity: int) -> None:
        self.address, self.skills, self.capacity = address, skills, capacity
        self.load, self.ready, self.idle_since = 0, False, None
        self.gen = -1  # new on every change; free-heap entries of other generations are stale

    @property
    def free(self) -> bool:
        return self.ready and self.load < self.capacity


class _Lane:
    """A heap of (-priority, arrival, key, seq) whose top is always a live entry."""

    __slots__ = ("name", "personal", "heap", "size", "token", "advertised")

    def __init__(self, name: str, personal: bool) -> None:
        self.name, self.personal = name, personal  # a queue (skill) or an agent's address
        self.heap: list[tuple[Any, ...]] = []
        self.size = 0  # live entries
        self.token: int | None = None  # the valid global-heap entry for this lane, if any
        self.advertised: tuple[Any, ...] | None = None  # the heap entry that token stands for


class Router:
    def __init__(self) -> None:
        self._items: dict[int, QueuedItem] = {}
        self._where: dict[int, tuple[_Lane | None, int]] = {}  # key -> (lane, seq); parked: None
        self._per_queue: Counter[str] = Counter()
        self._queues: dict[str, _Lane] = {}
        self._personal: dict[str, _Lane] = {}
        self._parked: dict[str, dict[int, QueuedItem]] = {}
        self._deadlines: list[tuple[Any, int, int]] = []  # (preferred_until, seq, key)
        self._heads: list[tuple[Any, ...]] = []  # (-priority, arrival, key, token, lane)
        self._advertised = 0  # lanes with a valid entry in _heads
        self._agents: dict[str, _Agent] = {}
        self._free: dict[str, list[tuple[Any, ...]]] = {}  # skill -> (-level, idle, address, gen)
        self._free_count: Counter[str] = Counter()
        self._seq = count()

    # -- items ---------------------------------------------------------------------------

    def add(self, item: QueuedItem) -> None:
        if item.key in self._items:
            raise ValueError(f"item {item.key} is already queued")
        self._items[item.key] = item
        self._per_queue[item.queue] += 1
        self._place(item, sticky=True)

    def remove(self, key: int) -> QueuedItem | None:
        """Take an item out of the queue (answered elsewhere, deleted, ...); None if absent."""
        item = self._items.pop(key, None)
        if item is not None:
            self._unplace(item)
            self._per_queue[item.queue] -= 1
        return item

    def update_priority(self, key: int, priority: int) -> None:
        item = self.remove(key)
        if item is None:
            raise KeyError(key)
        self.add(replace(item, priority=priority))

    def get(self, key: int) -> QueuedItem | None:
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def queued_count(self, queue: str | None = None) -> int:
        return len(self._items) if queue is None else self._per_queue[queue]

    # -- agents --------------------------------------------------------------------------

    def set_agent(self, address: str, skills: Mapping[str, int], capacity: int) -> None:
        """Add an agent (Not Ready, load 0) or change an existing one's skills and capacity."""
        levels = {skill: level for skill, level in skills.items() if level >= 1}
        agent = self._agents.get(address)
        if agent is None:
            self._agents[address] = _Agent(address, levels, capacity)
            return
        with self._changing(agent):
            agent.skills, agent.capacity = levels, capacity

    def remove_agent(self, address: str) -> None:
        agent = self._agents[address]
        with self._changing(agent):
            agent.ready = False
        del self._agents[address]

    def agent_ready(self, address: str, now: Instant) -> None:
        agent = self._agents[address]
        if not agent.ready:
            with self._changing(agent):
                agent.ready, agent.idle_since = True, now

    def agent_not_ready(self, address: str) -> None:
        agent = self._agents[address]
        if agent.ready:
            with self._changing(agent):
                agent.ready = False

    def set_load(self, address: str, load: int, now: Instant) -> None:
        agent = self._agents[address]
        if load != agent.load:
            with self._changing(agent):
                agent.load, agent.idle_since = load, now

    def release(self, address: str, now: Instant) -> None:
        """The agent finished one email: load - 1 (not below 0) and idle from now."""
        agent = self._agents[address]
        self.set_load(address, max(0, agent.load - 1), now)

    def agent(self, address: str) -> AgentState | None:
        a = self._agents.get(address)
        if a is None:
            return None
        return AgentState(a.address, dict(a.skills), a.capacity, a.load, a.ready, a.idle_since)

    def agents(self) -> Iterable[str]:
        return list(self._agents)

    # -- routing -------------------------------------------------------------------------

    def assign(self, now: Instant, limit: int | None = None) -> list[Assignment]:
        """Make the globally best matches, one at a time, until none is left (or `limit`)."""
        self._expire(now)
        out: list[Assignment] = []
        heads = self._heads
        while heads and (limit is None or len(out) < limit):
            entry = heappop(heads)
            lane: _Lane = entry[4]
            if entry[3] != lane.token:
                continue  # stale: the lane's head changed or the lane went inactive
            lane.token = lane.advertised = None
            self._advertised -= 1
            item = self._items[entry[2]]
            address = lane.name if lane.personal else self._best_agent(lane.name, item.excluded)
            if address is None:  # every free agent with the skill is excluded: park it
                self._unplace(item)
                self._parked.setdefault(item.queue, {})[item.key] = item
                self._where[item.key] = (None, -1)
                continue
            self._take(item, address, now)
            out.append(Assignment(item.key, address))
        return out

    def stats(self) -> dict[str, int]:
        return {
            "queued": len(self._items),
            "in_queue_lanes": sum(lane.size for lane in self._queues.values()),
            "in_personal_lanes": sum(lane.size for lane in self._personal.values()),
            "parked": sum(len(p) for p in self._parked.values()),
            "agents": len(self._agents),
            "free_agents": sum(1 for a in self._agents.values() if a.free),
            "head_entries": len(self._heads),
            "free_entries": sum(len(h) for h in self._free.values()),
            "deadline_entries": len(self._deadlines),
        }

    # -- items in lanes --------------------------------------------------------------------

    def _place(self, item: QueuedItem, sticky: bool) -> None:
        seq = next(self._seq)
        if item.target_agent is not None:
            lane = self._personal_lane(item.target_agent)
        elif sticky and item.preferred_agent and item.preferred_agent not in item.excluded:
            lane = self._personal_lane(item.preferred_agent)
            heappush(self._deadlines, (item.preferred_until, seq, item.key))
        else:
            lane = self._queues.get(item.queue) or self._new_lane(self._queues, item.queue, False)
        entry = (-item.priority, item.arrival, item.key, seq)
        heappush(lane.heap, entry)
        lane.size += 1
        self._where[item.key] = (lane, seq)
        if lane.heap[0] is entry:
            self._refresh(lane)

    def _unplace(self, item: QueuedItem) -> None:
        lane, _ = self._where.pop(item.key)
        if lane is None:
            del self._parked[item.queue][item.key]
            return
        lane.size -= 1
        if lane.heap[0][2] == item.key:
            self._refresh(lane)
        elif len(lane.heap) > 2 * lane.size + _SLACK:
            lane.heap[:] = [e for e in lane.heap if self._live(e)]
            heapify(lane.heap)

    def _live(self, entry: tuple[Any, ...]) -> bool:
        where = self._where.get(entry[2])
        return where is not None and where[1] == entry[3]

    def _refresh(self, lane: _Lane) -> None:
        """Drop stale entries off the lane's top and (re-)advertise its head if active."""
        heap = lane.heap
        while heap and not self._live(heap[0]):
            heappop(heap)
        if lane.personal:
            agent = self._agents.get(lane.name)
            active = agent is not None and agent.free
        else:
            active = self._free_count[lane.name] > 0
        if not (active and heap):
            self._advertised -= lane.token is not None
            lane.token = lane.advertised = None
        elif lane.token is None or lane.advertised is not heap[0]:
            self._advertised += lane.token is None
            top = heap[0]
            lane.token, lane.advertised = next(self._seq), top
            heappush(self._heads, (top[0], top[1], top[2], lane.token, lane))
            if len(self._heads) > 2 * self._advertised + _SLACK:
                self._heads[:] = [e for e in self._heads if e[3] == e[4].token]
                heapify(self._heads)

    def _personal_lane(self, address: str) -> _Lane:
        return self._personal.get(address) or self._new_lane(self._personal, address, True)

    @staticmethod
    def _new_lane(lanes: dict[str, _Lane], name: str, personal: bool) -> _Lane:
        lane = lanes[name] = _Lane(name, personal)
        return lane

    def _expire(self, now: Instant) -> None:
        """Preference windows that closed by `now`: those items join their queue lane."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, seq, key = heappop(deadlines)
            where = self._where.get(key)
            if where is not None and where[1] == seq:
                self._unplace(self._items[key])
                self._place(self._items[key], sticky=False)

    # -- agents in free heaps --------------------------------------------------------------

    def _best_agent(self, skill: str, excluded: frozenset[str]) -> str | None:
        heap = self._free.get(skill)
        if not heap:
            return None
        agents, skipped, found = self._agents, [], None
        while heap:
            top = heap[0]
            agent = agents.get(top[2])
            if agent is None or agent.gen != top[3]:
                heappop(heap)
            elif top[2] in excluded:
                skipped.append(heappop(heap))
            else:
                found = top[2]
                break
        for entry in skipped:
            heappush(heap, entry)
        return found

    def _take(self, item: QueuedItem, address: str, now: Instant) -> None:
        del self._items[item.key]
        self._per_queue[item.queue] -= 1
        self._unplace(item)
        agent = self._agents[address]
        with self._changing(agent):
            agent.load, agent.idle_since = agent.load + 1, now

    def _changing(self, agent: _Agent) -> _AgentChange:
        return _AgentChange(self, agent)

    def _agent_changed(self, agent: _Agent, before: frozenset[str], was_free: bool) -> None:
        """Re-file an agent after a change: new free-heap entries, counters, lanes."""
        agent.gen = next(self._seq)
        after = frozenset(agent.skills) if agent.free else frozenset()
        for skill in after:
            heap = self._free.get(skill)
            if heap is None:
                heap = self._free[skill] = []
            heappush(heap, (-agent.skills[skill], agent.idle_since, agent.address, agent.gen))
            if len(heap) > 2 * self._free_count[skill] + _SLACK:
                heap[:] = [e for e in heap if self._agent_entry_live(e)]
                heapify(heap)
        for skill in before - after:
            self._free_count[skill] -= 1
            if self._free_count[skill] == 0 and skill in self._queues:
                self._refresh(self._queues[skill])
        for skill in after - before:
            self._free_count[skill] += 1
            self._unpark(skill, agent.address)
            if skill in self._queues:
                self._refresh(self._queues[skill])
        if was_free != agent.free and agent.address in self._personal:
            self._refresh(self._personal[agent.address])

    def _agent_entry_live(self, entry: tuple[Any, ...]) -> bool:
        agent = self._agents.get(entry[2])
        return agent is not None and agent.gen == entry[3]

    def _unpark(self, skill: str, address: str) -> None:
        """`address` just became free for `skill`: parked items it may take come back."""
        parked = self._parked.get(skill)
        if not parked:
            return
        for key in [k for k, item in parked.items() if address not in item.excluded]:
            self._place(parked.pop(key), sticky=False)


class _AgentChange:
    """`with router._changing(agent): mutate` re-files the agent once the mutation is done."""

    __slots__ = ("router", "agent", "before", "was_free")

    def __init__(self, router: Router, agent: _Agent) -> None:
        self.router, self.agent = router, agent

    def __enter__(self) -> None:
        self.was_free = self.agent.free
        self.before = frozenset(self.agent.skills) if self.was_free else frozenset()

    def __exit__(self, *exc: object) -> None:
        self.router._agent_changed(self.agent, self.before, self.was_free)
