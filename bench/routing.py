"""Latency of the routing index (postroom.core.router) with a large backlog.

    python bench/routing.py --queued 100000 --agents 2000 --skills 20 [--json out.json]

Builds the scenario in memory (no database, no mail): items spread over the skills with
random priorities and arrivals (a few excluded / targeted / preferred, to exercise those
paths); agents with 1-3 skills at levels 1-5 and capacity 1-3, all Ready and saturated.
Then times single calls with perf_counter_ns:

* enqueue: `add()` onto the backlog (the added items are removed again afterwards);
* routing decision: each step one random agent event (Ready, Not Ready, or release of one
  email) followed by the timed `assign(now, limit=1)`; every routed item is replaced by a
  new one so the backlog stays at --queued;
* peak RSS of the process (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import sys
from pathlib import Path
from time import perf_counter_ns

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postroom.core.router import QueuedItem, Router  # noqa: E402


def percentile(values: list[int], p: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in microseconds."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1] / 1000


class Scenario:
    def __init__(self, queued: int, agents: int, skills: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.skills = [f"skill{i:02d}" for i in range(skills)]
        self.addresses = [f"agent{i:05d}@example.com" for i in range(agents)]
        self.router = Router()
        self.now = 1_000_000.0
        self.next_key = 0
        for address in self.addresses:
            chosen = self.rng.sample(self.skills, self.rng.randint(1, min(3, skills)))
            levels = {skill: self.rng.randint(1, 5) for skill in chosen}
            self.router.set_agent(address, levels, self.rng.randint(1, 3))
            self.router.agent_ready(address, self.now - self.rng.random() * 600)
        for _ in range(queued):
            self.router.add(self.new_item())
        routed = self.router.assign(self.now)  # saturate every agent, then top the backlog up
        for _ in routed:
            self.router.add(self.new_item())

    def new_item(self) -> QueuedItem:
        rng, key = self.rng, self.next_key
        self.next_key += 1
        target = preferred = until = None
        excluded: frozenset[str] = frozenset()
        roll = rng.random()
        if roll < 0.005:
            target = rng.choice(self.addresses)
        elif roll < 0.025:
            preferred, until = rng.choice(self.addresses), self.now + rng.random() * 300
        elif roll < 0.035:
            excluded = frozenset(rng.sample(self.addresses, 2))
        return QueuedItem(
            key=key,
            priority=rng.choice((0, 0, 0, 0, 1, 1, 2, 5)),
            arrival=self.now - rng.random() * 86_400,
            queue=rng.choice(self.skills),
            target_agent=target,
            preferred_agent=preferred,
            preferred_until=until,
            excluded=excluded,
        )

    def agent_event(self) -> None:
        """One random agent change: Ready, Not Ready, or one email finished."""
        address = self.rng.choice(self.addresses)
        state = self.router.agent(address)
        assert state is not None
        roll = self.rng.random()
        if not state.ready:
            self.router.agent_ready(address, self.now)
        elif roll < 0.3:
            self.router.agent_not_ready(address)
        else:
            self.router.release(address, self.now)


def run(queued: int, agents: int, skills: int, enqueues: int, decisions: int, seed: int) -> dict:
    sc = Scenario(queued, agents, skills, seed)
    router = sc.router

    enqueue_ns: list[int] = []
    added = [sc.new_item() for _ in range(enqueues)]
    for it in added:
        t0 = perf_counter_ns()
        router.add(it)
        enqueue_ns.append(perf_counter_ns() - t0)
    remove_ns: list[int] = []
    for it in added:
        t0 = perf_counter_ns()
        router.remove(it.key)
        remove_ns.append(perf_counter_ns() - t0)

    decide_ns: list[int] = []
    routed_ns: list[int] = []
    event_ns: list[int] = []
    for _ in range(decisions):
        sc.now += 0.05
        t0 = perf_counter_ns()
        sc.agent_event()
        event_ns.append(perf_counter_ns() - t0)
        t0 = perf_counter_ns()
        out = router.assign(sc.now, limit=1)
        elapsed = perf_counter_ns() - t0
        decide_ns.append(elapsed)
        if out:
            routed_ns.append(elapsed)
            router.add(sc.new_item())

    return {
        "queued": router.queued_count(),
        "agents": agents,
        "skills": skills,
        "enqueue_p50_us": percentile(enqueue_ns, 50),
        "enqueue_p99_us": percentile(enqueue_ns, 99),
        "remove_p99_us": percentile(remove_ns, 99),
        "agent_event_p99_us": percentile(event_ns, 99),
        "routing_decision_p50_us": percentile(decide_ns, 50),
        "routing_decision_p99_us": percentile(decide_ns, 99),
        "routing_decision_max_us": max(decide_ns) / 1000,
        "routed_decision_p99_us": percentile(routed_ns, 99),
        "decisions_that_routed": len(routed_ns),
        "routing_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stats": router.stats(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=2_000)
    parser.add_argument("--skills", type=int, default=20)
    parser.add_argument("--enqueues", type=int, default=20_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run(args.queued, args.agents, args.skills, args.enqueues, args.decisions, args.seed)
    print(f"routing index: {result['queued']} queued, {args.agents} agents, {args.skills} skills")
    print(f"{'measure':<28}{'value':>12}")
    for name, value in result.items():
        if isinstance(value, float):
            print(f"{name:<28}{value:>12.1f}")
        elif isinstance(value, int):
            print(f"{name:<28}{value:>12d}")
    print("router.stats():", result["stats"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
