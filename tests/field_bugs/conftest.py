"""Fixtures for the field-bug tests: the in-process contact center of the end-to-end
tests (`center`, `make_center`: real Dovecot + Postfix, the engine's step functions driven
by `run_until_idle`, a skippable clock), and a TCP proxy in front of the stack (`proxy`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from postroom.devstack import DevStack
from postroom.devstack.netproxy import TcpProxy
from tests.e2e.conftest import center, make_center  # noqa: F401

__all__ = ["center", "make_center"]


@pytest.fixture
def proxy(mailstack: DevStack) -> Iterator[Callable[[int], TcpProxy]]:
    """proxy(port) -> a TcpProxy in front of that port of the stack; stopped after the test."""
    made: list[TcpProxy] = []

    def make(port: int) -> TcpProxy:
        made.append(TcpProxy(port))
        return made[-1]

    yield make
    for p in made:
        p.stop()
