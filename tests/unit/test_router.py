"""The routing index (core.router): each rule on its own, then the whole against a scan.

`Reference` below is the obviously-correct version of the contract (scan every item and
every agent per decision); the Hypothesis test drives both with the same random calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.core import router as router_module
from postroom.core.router import Assignment, QueuedItem, Router


def item(key, queue="support", priority=0, arrival=None, **kw) -> QueuedItem:
    return QueuedItem(key, priority, float(key if arrival is None else arrival), queue, **kw)


def ready_agent(
    r: Router, address: str, skills: dict, capacity: int = 1, idle: float = 0.0
) -> None:
    r.set_agent(address, skills, capacity)
    r.agent_ready(address, float(idle))


def router(*agents, items=()) -> Router:
    """agents: (address, skills[, capacity=1[, idle_since=0]]), each Ready since idle_since."""
    r = Router()
    for spec in agents:
        ready_agent(r, *spec)
    for it in items:
        r.add(it)
    return r


def pairs(assignments: list[Assignment]) -> list[tuple[int, str]]:
    return [(a.item_key, a.agent) for a in assignments]


# -- one rule at a time ----------------------------------------------------------------


def test_priority_beats_age() -> None:
    r = router(("a", {"support": 1}), items=[item(1), item(2, priority=5)])
    assert pairs(r.assign(10.0)) == [(2, "a")]
    assert r.queued_count() == 1


def test_age_breaks_priority_ties_then_key() -> None:
    r = router(
        ("a", {"support": 1}), items=[item(3, arrival=2), item(1, arrival=5), item(2, arrival=2)]
    )
    assert pairs(r.assign(10.0)) == [(2, "a")]


def test_skill_level_beats_idle_time() -> None:
    r = router(("a", {"support": 1}, 1, 0), ("b", {"support": 4}, 1, 9), items=[item(1)])
    assert pairs(r.assign(10.0)) == [(1, "b")]


def test_idle_time_breaks_level_ties_then_address() -> None:
    r = router(
        ("c", {"support": 2}, 1, 5), ("b", {"support": 2}, 1, 3), ("a", {"support": 2}, 1, 3)
    )
    for k in (1, 2, 3):
        r.add(item(k))
    assert pairs(r.assign(10.0)) == [(1, "a"), (2, "b"), (3, "c")]


def test_capacity_allows_several_and_round_robins_among_equals() -> None:
    r = router(("a", {"support": 1}, 2, 0), ("b", {"support": 1}, 1, 1))
    for k in (1, 2, 3, 4):
        r.add(item(k))
    # a (idle 0) takes 1 and goes to the back (idle 10); b takes 2; a takes 3; a is full.
    assert pairs(r.assign(10.0)) == [(1, "a"), (2, "b"), (3, "a")]
    assert r.agent("a").load == 2 and r.queued_count() == 1


def test_not_ready_and_full_agents_get_nothing() -> None:
    r = router(("a", {"support": 1}), ("b", {"support": 1}, 1, 5))
    r.agent_not_ready("a")
    r.set_load("b", 1, 6.0)
    r.add(item(1))
    assert r.assign(10.0) == []
    r.agent_ready("a", 11.0)
    assert pairs(r.assign(12.0)) == [(1, "a")]


def test_an_agent_without_the_skill_gets_nothing() -> None:
    r = router(("a", {"sales": 5, "support": 0}), items=[item(1)])
    assert r.assign(1.0) == []


def test_excluded_agent_is_skipped_but_the_item_goes_to_another() -> None:
    r = router(
        ("a", {"support": 5}),
        ("b", {"support": 1}, 1, 3),
        items=[item(1, excluded=frozenset({"a"}))],
    )
    assert pairs(r.assign(10.0)) == [(1, "b")]


def test_an_item_only_excluded_agents_could_take_does_not_block_the_next() -> None:
    r = router(
        ("a", {"support": 1}), items=[item(1, priority=9, excluded=frozenset({"a"})), item(2)]
    )
    assert pairs(r.assign(10.0)) == [(2, "a")]
    r.set_agent("b", {"support": 1}, 1)
    r.agent_ready("b", 11.0)
    assert pairs(r.assign(12.0)) == [(1, "b")]
    assert r.stats()["parked"] == 0


def test_targeted_waits_for_its_agent_even_with_others_free() -> None:
    r = router(("a", {"support": 1}), ("b", {}, 1, 0))
    r.agent_not_ready("b")
    r.add(item(1, priority=9, target_agent="b"))
    r.add(item(2))
    assert pairs(r.assign(10.0)) == [(2, "a")]
    r.agent_ready("b", 11.0)  # no skill needed, exclusions do not apply to a target
    assert pairs(r.assign(12.0)) == [(1, "b")]


def test_targeted_item_competes_by_rank_for_its_agents_attention() -> None:
    r = router(("a", {"support": 1}), items=[item(1, priority=1), item(2, target_agent="a")])
    assert pairs(r.assign(10.0)) == [(1, "a")]


def test_preferred_waits_until_the_deadline_then_anyone() -> None:
    r = router(("a", {"support": 1}), ("b", {"support": 1}, 1, 0))
    r.set_load("b", 1, 0.0)
    r.add(item(1, preferred_agent="b", preferred_until=20.0))
    assert r.assign(10.0) == []
    assert r.assign(19.9) == []
    assert pairs(r.assign(20.0)) == [(1, "a")]


def test_preferred_agent_free_in_time_takes_it() -> None:
    r = router(("a", {"support": 9}), ("b", {"support": 1}, 1, 5))
    r.add(item(1, preferred_agent="b", preferred_until=20.0))
    assert pairs(r.assign(10.0)) == [(1, "b")]


def test_an_excluded_preferred_agent_cancels_the_preference() -> None:
    r = router(("a", {"support": 1}), ("b", {"support": 1}, 1, 5))
    r.add(item(1, preferred_agent="b", preferred_until=20.0, excluded=frozenset({"b"})))
    assert pairs(r.assign(10.0)) == [(1, "a")]


def test_unassigned_is_a_queue_worked_by_whoever_has_that_skill() -> None:
    r = router(("agent", {"support": 5}), ("supervisor", {"unassigned": 1}, 1, 9))
    r.add(item(1, queue="unassigned"))
    assert pairs(r.assign(10.0)) == [(1, "supervisor")]


def test_an_agent_with_several_skills_takes_the_best_item_across_them() -> None:
    r = router(
        ("a", {"support": 1, "sales": 1}), items=[item(1, "support"), item(2, "sales", priority=1)]
    )
    assert pairs(r.assign(10.0)) == [(2, "a")]


def test_remove_and_update_priority() -> None:
    r = router(("a", {"support": 1}, 3), items=[item(1), item(2), item(3)])
    assert r.remove(1).key == 1 and r.remove(1) is None
    r.update_priority(3, 7)
    assert r.get(3).priority == 7 and r.queued_count("support") == 2
    assert pairs(r.assign(10.0)) == [(3, "a"), (2, "a")]
    with pytest.raises(KeyError):
        r.update_priority(3, 1)


def test_release_makes_an_agent_free_again_and_idle_from_now() -> None:
    r = router(
        ("a", {"support": 1}), ("b", {"support": 1}, 1, 1), items=[item(1), item(2), item(3)]
    )
    assert pairs(r.assign(10.0)) == [(1, "a"), (2, "b")]
    r.release("b", 11.0)
    r.release("a", 12.0)
    assert pairs(r.assign(13.0)) == [(3, "b")]
    assert r.agent("a").load == 0 and r.agent("a").idle_since == 12.0


def test_limit_and_duplicate_key() -> None:
    r = router(("a", {"support": 1}, 5), items=[item(1), item(2)])
    assert pairs(r.assign(1.0, limit=1)) == [(1, "a")]
    with pytest.raises(ValueError):
        r.add(item(2))


def test_skill_change_and_agent_removal() -> None:
    r = router(("a", {"sales": 1}), items=[item(1)])
    assert r.assign(1.0) == []
    r.set_agent("a", {"support": 1}, 1)
    r.remove_agent("a")
    assert r.assign(2.0) == [] and r.agent("a") is None
    r.set_agent("a", {"support": 2}, 1)
    r.agent_ready("a", 3.0)
    assert pairs(r.assign(4.0)) == [(1, "a")]


def test_datetimes_work_as_instants() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    r = Router()
    r.set_agent("a", {"support": 1}, 1)
    r.agent_ready("a", t0)
    r.add(
        QueuedItem(
            1, 0, t0, "support", preferred_agent="b", preferred_until=t0 + timedelta(minutes=5)
        )
    )
    assert r.assign(t0 + timedelta(minutes=1)) == []
    assert pairs(r.assign(t0 + timedelta(minutes=5))) == [(1, "a")]


# -- the same contract, written as a scan ------------------------------------------------


@dataclass
class RefAgent:
    skills: Mapping[str, int]
    capacity: int
    load: int = 0
    ready: bool = False
    idle_since: float = 0.0


@dataclass
class Reference:
    items: dict[int, QueuedItem] = field(default_factory=dict)
    agents: dict[str, RefAgent] = field(default_factory=dict)

    def candidates(self, it: QueuedItem, now: float) -> list[str]:
        free = {a for a, s in self.agents.items() if s.ready and s.load < s.capacity}
        if it.target_agent is not None:
            return [it.target_agent] if it.target_agent in free else []
        pref = it.preferred_agent
        if pref is not None and pref not in it.excluded and now < it.preferred_until:
            return [pref] if pref in free else []
        return [
            a for a in free if self.agents[a].skills.get(it.queue, 0) >= 1 and a not in it.excluded
        ]

    def assign(self, now: float, limit: int | None) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        while limit is None or len(out) < limit:
            for it in sorted(self.items.values(), key=lambda i: (-i.priority, i.arrival, i.key)):
                cands = self.candidates(it, now)
                if cands:
                    best = min(
                        cands,
                        key=lambda a: (
                            -self.agents[a].skills.get(it.queue, 0),
                            self.agents[a].idle_since,
                            a,
                        ),
                    )
                    del self.items[it.key]
                    self.agents[best].load += 1
                    self.agents[best].idle_since = now
                    out.append((it.key, best))
                    break
            else:
                return out
        return out


ADDRESSES = ["a", "b", "c", "d"]
QUEUES = ["support", "sales", "unassigned"]
skills_st = st.dictionaries(st.sampled_from(QUEUES), st.integers(0, 3), max_size=3)
add_op = st.tuples(
    st.just("add"),
    st.integers(0, 3),  # priority
    st.integers(0, 5),  # arrival offset back from now
    st.sampled_from(QUEUES),
    st.sampled_from([None, None, None, *ADDRESSES]),  # target
    st.sampled_from([None, None, *ADDRESSES]),  # preferred
    st.integers(0, 6),  # preference window
    st.frozensets(st.sampled_from(ADDRESSES), max_size=3),
)
ops_st = st.lists(
    st.one_of(
        add_op,
        add_op,
        st.tuples(st.just("assign"), st.sampled_from([None, 1, 2])),
        st.tuples(st.just("remove"), st.integers(0, 40)),
        st.tuples(st.just("priority"), st.integers(0, 40), st.integers(0, 3)),
        st.tuples(st.just("set_agent"), st.sampled_from(ADDRESSES), skills_st, st.integers(0, 3)),
        st.tuples(st.just("ready"), st.sampled_from(ADDRESSES)),
        st.tuples(st.just("not_ready"), st.sampled_from(ADDRESSES)),
        st.tuples(st.just("release"), st.sampled_from(ADDRESSES)),
        st.tuples(st.just("release"), st.sampled_from(ADDRESSES)),
        st.tuples(st.just("set_load"), st.sampled_from(ADDRESSES), st.integers(0, 3)),
        st.tuples(st.just("remove_agent"), st.sampled_from(ADDRESSES)),
        st.tuples(st.just("tick"), st.integers(0, 3)),
        st.tuples(st.just("assign"), st.sampled_from([None, 1, 2])),
    ),
    max_size=80,
)


start_st = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(QUEUES), st.integers(1, 3), min_size=1), st.integers(1, 3)
    ),
    min_size=len(ADDRESSES),
    max_size=len(ADDRESSES),
)
add_st = st.lists(add_op, max_size=30)


@settings(max_examples=400, deadline=None)
@given(start_st, add_st, ops_st, st.sampled_from([0, 64]))
def test_router_matches_a_full_scan(start, backlog, ops, slack) -> None:
    with patch.object(router_module, "_SLACK", slack):  # 0: rebuild heaps as often as possible
        check_against_reference(start, backlog, ops)


def check_against_reference(start, backlog, ops) -> None:
    r, ref, now, next_key = Router(), Reference(), 100.0, 0
    for address, (skills, capacity) in zip(ADDRESSES, start, strict=True):
        r.set_agent(address, skills, capacity)
        r.agent_ready(address, now)
        ref.agents[address] = RefAgent(skills, capacity, ready=True, idle_since=now)
    for op in [*backlog, *ops]:
        kind, args = op[0], op[1:]
        if kind == "add":
            prio, back, queue, target, pref, window, excluded = args
            it = QueuedItem(
                next_key,
                prio,
                now - back,
                queue,
                target,
                pref,
                now + window if pref else None,
                excluded,
            )
            next_key += 1
            r.add(it)
            ref.items[it.key] = it
        elif kind == "remove":
            assert (r.remove(args[0]) is None) == (ref.items.pop(args[0], None) is None)
        elif kind == "priority":
            if args[0] in ref.items:
                r.update_priority(*args)
                ref.items[args[0]] = replace(ref.items[args[0]], priority=args[1])
        elif kind == "set_agent":
            address, skills, capacity = args
            r.set_agent(address, skills, capacity)
            levels = {s: v for s, v in skills.items() if v >= 1}
            if address in ref.agents:
                ref.agents[address].skills, ref.agents[address].capacity = levels, capacity
            else:
                ref.agents[address] = RefAgent(levels, capacity)
        elif kind == "tick":
            now += args[0]
        elif kind == "assign":
            assert pairs(r.assign(now, args[0])) == ref.assign(now, args[0])
        elif args[0] in ref.agents:
            agent = ref.agents[args[0]]
            if kind == "ready":
                r.agent_ready(args[0], now)
                if not agent.ready:
                    agent.ready, agent.idle_since = True, now
            elif kind == "not_ready":
                r.agent_not_ready(args[0])
                agent.ready = False
            elif kind == "release":
                r.release(args[0], now)
                if agent.load > 0:
                    agent.load, agent.idle_since = agent.load - 1, now
            elif kind == "set_load":
                r.set_load(args[0], args[1], now)
                if args[1] != agent.load:
                    agent.load, agent.idle_since = args[1], now
            elif kind == "remove_agent":
                r.remove_agent(args[0])
                del ref.agents[args[0]]
        assert r.queued_count() == len(ref.items)
    assert pairs(r.assign(now + 1000, None)) == ref.assign(now + 1000, None)
