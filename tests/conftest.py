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
