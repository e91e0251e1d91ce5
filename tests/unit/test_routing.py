from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.core.routing import AgentView, choose_agent

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def agent(address: str, skills=("support",), ready=True, load=0, capacity=1, idle=0) -> AgentView:
    return AgentView(address, frozenset(skills), ready, load, capacity, T0 + timedelta(minutes=idle))


def test_it_picks_the_longest_idle_ready_agent_with_the_skill() -> None:
    agents = [agent("a", idle=5), agent("b", idle=1), agent("c", skills=("sales",), idle=0)]
    assert choose_agent(frozenset({"support"}), agents).address == "b"


def test_it_skips_not_ready_and_full_agents() -> None:
    agents = [agent("a", ready=False, idle=0), agent("b", load=1, idle=1), agent("c", idle=9)]
    assert choose_agent(frozenset({"support"}), agents).address == "c"


def test_capacity_above_one_takes_more() -> None:
    assert choose_agent(frozenset({"support"}), [agent("a", load=2, capacity=3)]).address == "a"


def test_no_skill_match_is_no_agent() -> None:
    assert choose_agent(frozenset({"billing"}), [agent("a"), agent("b")]) is None


def test_an_email_that_needs_no_skill_goes_to_anyone() -> None:
    assert choose_agent(frozenset(), [agent("a", skills=())]).address == "a"
