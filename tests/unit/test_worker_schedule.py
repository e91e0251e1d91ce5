"""The worker's lazy rounds (engine/runtime.py `Schedule`, decision 0041): a step that
found nothing is asked again once a second, at once when something made work for it."""

from __future__ import annotations

from postroom.engine.runtime import EVERY, STEPS, Schedule


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
    assert all(schedule.due(name) for name in STEPS)


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
    assert all(schedule.due(name) for name in STEPS)


def test_the_wait_ends_when_the_step_asked_longest_ago_is_due() -> None:
    clock = Clock()
    schedule = Schedule(clock, every=1.0)
    schedule.due("timers")
    clock.t += 0.25
    schedule.due("routing")
    assert schedule.wait_s() == 0.75
    clock.t += 2.0
    assert schedule.wait_s() == 0.01
