"""Exactly once under SIGKILL: 200 customers, four agents' mail clients, the engine killed
20 times, on the database of this pass (SQLite, or PostgreSQL when DATABASE_URL says so).

How a run goes and how the kill moments are chosen: tests/chaos/harness.py and
docs/decisions/0019-chaos-harness.md. `POSTROOM_CHAOS_SEED=N` replays (or explores) another
schedule; the seed is the first line of the report, which is printed on failure along
with where the engine logs were kept.
"""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import ChaosRun, Plan
from tests.e2e.databases import fresh_database

pytestmark = pytest.mark.mailstack

SEED = int(os.environ.get("POSTROOM_CHAOS_SEED", "7"))


def test_killed_20_times_every_customer_gets_one_auto_response_and_one_reply(mailstack, new_user, tmp_path) -> None:
    database = fresh_database(tmp_path, "chaos")
    try:
        verdict = ChaosRun(mailstack, new_user, tmp_path, database, Plan(seed=SEED)).run()
    finally:
        database.drop()
    print(verdict.report())
    # Lost or stuck is a failure of its own, never hidden by the expected duplicates.
    verdict.assert_nothing_lost_or_stuck()
    verdict.assert_exactly_once()
