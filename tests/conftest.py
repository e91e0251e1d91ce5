"""Suite-wide fixtures: the real Dovecot + Postfix mail stack, one per pytest-xdist worker.

``mailstack`` starts lazily, only when a test asks for it, and stops at session end
(set POSTROOM_KEEP_MAILSTACK=1 to keep its state dir and logs). ``new_user(prefix="user",
domain="example.test")`` adds a mailbox no other test shares; returns (address, password).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postroom.devstack import DevStack
from postroom.devstack import testing as devstack_testing


@pytest.fixture(scope="session")
def mailstack() -> Iterator[DevStack]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    stack = devstack_testing.start_for_worker(Path("/tmp"), worker)
    try:
        yield stack
    finally:
        devstack_testing.discard(stack)


@pytest.fixture
def new_user(mailstack: DevStack) -> Callable[..., tuple[str, str]]:
    return functools.partial(devstack_testing.new_user, mailstack)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):  # type: ignore[no-untyped-def]
    """pytest-django's test database; before it is dropped (PostgreSQL), the sessions
    still connected to it besides ours. A connection left open by a thread, a subprocess
    or a listener made PostgreSQL refuse the DROP ("accessed by other users", stop 22)
    without saying whose it was. One that only a garbage collection closes (the Django
    connection of a thread that ended without closing it: the wrapper is a reference
    cycle) is closed by collecting, and one a thread is still ending is waited for, 10 s;
    any still there is named in the error, and each is named on stderr."""
    yield
    import gc
    import sys
    import time

    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        found = _other_sessions(connection)
        if not found:
            return
        print("sessions connected to the test database at its teardown:", *found, sep="\n  ", file=sys.stderr)
        deadline = time.monotonic() + 10
        while gc.collect() >= 0 and (left := _other_sessions(connection)) and time.monotonic() < deadline:
            time.sleep(0.2)
    if left:
        raise RuntimeError("sessions still connected to the test database: " + "; ".join(left))


def _other_sessions(connection) -> list[str]:  # type: ignore[no-untyped-def]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name, state, backend_start, left(query, 120) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [f"pid {pid} app {app!r} {state} since {start:%H:%M:%S}: {query}" for pid, app, state, start, query in cursor.fetchall()]
