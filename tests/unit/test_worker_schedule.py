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


def test_the_senders_are_woken_right_after_delivery_not_at_the_rounds_end() -> None:
    """A forward queued by delivery is sent while the round goes on (decision 0050): the
    steps after delivery (clean-up's IMAP round, the expiry, the alerts) are nothing the
    customer's mail waits for. Failed before 0050: the senders were woken after "alerts"."""
    from types import SimpleNamespace

    from postroom.engine.runtime import Engine

    events: list[str] = []

    def step(name: str, worked: bool):
        def run() -> bool:
            events.append(name)
            return worked

        return run

    worker = SimpleNamespace(
        schedule=Schedule(Clock(), every=1.0),
        _wake_senders=lambda: events.append("wake senders"),
        _refused=lambda where, exc: None,
    )
    worker.steps = lambda: [
        ("routing", step("routing", True)),
        ("delivery", step("delivery", True)),
        ("cleanup", step("cleanup", False)),
        ("alerts", step("alerts", False)),
    ]
    assert Engine.work(worker) is True  # type: ignore[arg-type]
    assert events == ["routing", "delivery", "wake senders", "cleanup", "alerts"]

    # A step after delivery that queues mail wakes them again at the end; a round in which
    # only housekeeping worked wakes nobody.
    events.clear()
    worker.steps = lambda: [("delivery", step("delivery", True)), ("alerts", step("alerts", True))]
    Engine.work(worker)  # type: ignore[arg-type]
    assert events == ["delivery", "wake senders", "alerts", "wake senders"]
    events.clear()
    worker.steps = lambda: [("delivery", step("delivery", False)), ("cleanup", step("cleanup", True))]
    Engine.work(worker)  # type: ignore[arg-type]
    assert events == ["delivery", "cleanup"]
