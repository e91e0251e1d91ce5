"""The worker's lazy rounds (engine/runtime.py `Schedule`, decision 0041): a step that
found nothing is asked again once a second, at once when something made work for it;
clean-up gathers its work, at most every `GATHER` seconds whatever marks it (0047)."""

from __future__ import annotations

from postroom.engine.runtime import EVERY, GATHER, STEPS, Schedule

MARKABLE = tuple(name for name in STEPS if name not in GATHER)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_every_step_runs_first_then_only_once_a_second() -> None:
    clock = Clock()
    schedule = Schedule(clock, every=1.0)
    assert all(schedule.due(name) for name in STEPS)
    clock.t += 0.5
    assert not any(schedule.due(name) for name in STEPS)
    clock.t += 0.5
    assert all(schedule.due(name) for name in MARKABLE)


def test_a_marked_step_runs_at_once_and_once() -> None:
    clock = Clock()
    schedule = Schedule(clock, every=1.0)
    for name in STEPS:
        schedule.due(name)
    schedule.mark("routing", "delivery")
    assert [name for name in STEPS if schedule.due(name)] == ["routing", "delivery"]
    assert not any(schedule.due(name) for name in STEPS)


def test_every_marks_all_steps() -> None:
    clock = Clock()
    schedule = Schedule(clock, every=1.0)
    for name in STEPS:
        schedule.due(name)
    schedule.mark(EVERY)
    assert all(schedule.due(name) for name in MARKABLE)


def test_clean_up_gathers_its_work_marked_or_not() -> None:
    clock = Clock()
    schedule = Schedule(clock, every=1.0)
    assert all(schedule.due(name) for name in STEPS)
    schedule.mark(EVERY)
    clock.t += 1.0
    assert not schedule.due("cleanup")
    assert schedule.wait_s() == 0.01  # the other steps are due by time
    for name in MARKABLE:
        schedule.due(name)
    assert schedule.wait_s() == 1.0
    clock.t += GATHER["cleanup"] - 1.0
    assert schedule.due("cleanup")


def test_the_wait_ends_when_the_step_asked_longest_ago_is_due() -> None:
    clock = Clock()
    schedule = Schedule(clock, every=1.0)
    schedule.due("timers")
    clock.t += 0.25
    schedule.due("routing")
    assert schedule.wait_s() == 0.75
    clock.t += 2.0
    assert schedule.wait_s() == 0.01
