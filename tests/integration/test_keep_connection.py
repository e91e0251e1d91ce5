"""engine/nodes.keep_connection: an engine loop's database connection is kept from round to
round while it is healthy and opened under this process's registration (decision 0069).

Each test runs its rounds in a thread of its own, as the engine's loops do (a connection per
thread, outside the test's transaction).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, close_old_connections, connection

from postroom.core.cluster import Role
from postroom.engine import nodes

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(body: Callable[[], Any]) -> Any:
    """`body` run in a new thread, as an engine loop runs; its result (or its exception)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = body()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["value"]


def ask() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_healthy_connection_is_kept_from_round_to_round() -> None:
    def rounds() -> tuple[bool, bool]:
        ask()
        # What the loops called before: with CONN_MAX_AGE 0 it closes at every round.
        first = connection.connection
        close_old_connections()
        ask()
        kept_by_close_old = connection.connection is first
        second = connection.connection
        nodes.keep_connection()
        ask()
        nodes.keep_connection()
        ask()
        return connection.connection is second, kept_by_close_old

    kept, kept_by_close_old = in_thread(rounds)
    assert kept
    assert not kept_by_close_old


def test_a_connection_opened_under_another_registration_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    ticket = nodes.Ticket(
        node_id="kept-node", role=Role.PRIMARY, epoch=424242, lease=timedelta(seconds=30),
        hostname="localhost", pid=1,
    )

    def rounds() -> tuple[bool, Any, str | None]:
        ask()
        before = connection.connection
        # A new registration (a new epoch after a stand-down): the next round's connection
        # must carry it, for the fence reads the epoch a connection was opened with.
        monkeypatch.setattr(nodes, "_current", ticket)
        nodes.keep_connection()
        closed = connection.connection is None
        ask()
        epoch = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('postroom.epoch', true)")
                epoch = cursor.fetchone()[0]
        assert connection.connection is not before
        return closed, connection.postroom_ticket, epoch

    closed, carried, epoch = in_thread(rounds)
    assert closed
    assert carried is ticket
    if connection.vendor == "postgresql":
        assert epoch == "424242"


def test_a_broken_connection_is_closed_and_the_next_round_connects_again() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a session ended by the server: PostgreSQL")
    ready, ended = threading.Event(), threading.Event()
    pid: dict[str, int] = {}

    def rounds() -> tuple[bool, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid["old"] = cursor.fetchone()[0]
        ready.set()
        assert ended.wait(30)
        with pytest.raises(OperationalError):
            ask()  # the server ended this session: the error marks the connection
        nodes.keep_connection()
        closed = connection.connection is None
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return closed, cursor.fetchone()[0]

    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(value=_catch(lambda: in_thread(rounds))))
    worker.start()
    assert ready.wait(30)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid["old"]])
    ended.set()
    worker.join(60)
    value = result["value"]
    if isinstance(value, BaseException):
        raise value
    closed, new_pid = value
    assert closed
    assert new_pid != pid["old"]


def _catch(body: Callable[[], Any]) -> Any:
    try:
        return body()
    except BaseException as exc:  # noqa: BLE001 - handed to the test
        return exc
