"""The chaos figures: `chaos_lost` and `chaos_duplicates`, counted in the mailboxes.

The run is the one `make test` judges (tests/chaos/harness.py: customers and agents' mail
clients on the stack while `postroom engine` is SIGKILLed at seeded moments and
restarted), at benchmark size: 1,000 customers and 50 kills by default. Lost = the
auto-responses and replies a customer never got; duplicates = second copies (a second
auto-response or reply, or a mail held twice by anyone). Both must be 0. The seed and the
schedule of kills are kept in results.json; the engines' logs are kept when either figure
is not 0 (var/chaos-logs/).
"""

from __future__ import annotations

import functools
from pathlib import Path

from bench.common import Stack, log
from postroom.devstack import testing as devstack_testing
from tests.chaos.harness import ChaosRun, Plan
from tests.e2e.databases import fresh_database


def chaos_run(stack: Stack, workdir: Path, customers: int, kills: int, seed: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    database = fresh_database(workdir, "chaos")  # SQLite, as the engine runs by default
    # Customers write for about as long as the kills last (~3.5 s each), then the last
    # engine drains what is left.
    plan = Plan(seed=seed, customers=customers, kills=kills, mails_per_s=max(4.0, customers / (3.5 * kills)),
                settle_timeout_s=900.0)
    new_user = functools.partial(devstack_testing.new_user, stack.dev)
    try:
        verdict = ChaosRun(stack.dev, new_user, workdir, database, plan, say=log).run()
    finally:
        database.drop()
    if verdict.lost or verdict.duplicates or not verdict.settled:
        verdict.keep_logs()
    report = verdict.report()
    log(report)
    return {
        "seed": seed,
        "customers": len(verdict.sent),
        "kills": len(verdict.kills),
        "lost": verdict.lost,
        "duplicates": verdict.duplicates,
        "not_closed": len(verdict.not_closed),
        "left_in_boxes": sum(verdict.leftovers.values()),
        "settled": verdict.settled,
        "seconds": round(verdict.seconds, 1),
        "schedule": verdict.kills,
        "report": report,
        "logs_kept": str(verdict.kept) if verdict.kept else None,
    }
