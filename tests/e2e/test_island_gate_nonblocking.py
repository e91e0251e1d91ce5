"""The send gate never waits on the sync box's network (engine/claims.py).

The claims' thread does the sync box's I/O; the senders ask `Claims.admits` before each
send. Here the sync box answers through a relay that holds the server's answers back on
demand: while a step of the claims' thread waits for its answer, a sender's gate call
must still return (with the published answer), before that step does. Judged by the
order of events, never by how long anything took.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connection

from postroom.engine.claims import Claims
from postroom.engine.island import IslandSettings
from postroom.engine.runtime import Engine
from postroom.mail.imap import MailboxUnavailable
from postroom.store.models import Interaction, Mailbox, Outgoing
from tests.e2e.conftest import Center
from tests.e2e.test_island_gate import until
from tests.field_bugs.helpers import auto_responses, customer_mail, send

pytestmark = pytest.mark.mailstack

# A deadlock breaker only: the test fails when an event has not happened by then.
PATIENCE = 30.0


class HoldingRelay:
    """A loopback TCP relay to `port` that, while `hold` is set, keeps the server's
    answers back (and sets `holding` when it has one to hold)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.released = threading.Event()
        self._socks: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target, timeout=10)
                self._socks += [client, server]
                threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while True:
                ready, _, _ = select.select([client, server], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is server and self.hold.is_set():
                        self.holding.set()
                        self.released.wait()
                    (server if sock is client else client).sendall(data)

    def close(self) -> None:
        self.released.set()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.mark.django_db(transaction=True)
def test_the_gate_answers_while_the_claims_thread_waits_on_the_sync_box(center: Center, new_user) -> None:  # type: ignore[no-untyped-def]
    center.users["sync"] = new_user(prefix="sync")
    sync, password = center.users["sync"]
    settings = IslandSettings(
        sync, center.address("outbound"), claim_expiry=timedelta(seconds=60), claim_reassert=timedelta(seconds=20),
        clock_margin=timedelta(seconds=1),
    )
    site = replace(center.engine.site, island=settings, passwords={**center.engine.site.passwords, sync: password})
    center.engine.close()
    center.engine = Engine(site, now=center.clock)
    support = Mailbox.objects.get(address=center.address("support")).pk
    assert center.engine.claims is not None
    center.engine.claims.enter(support, "node-gone")
    send(center, customer_mail(center))
    until(center, "the auto-response", lambda: len(auto_responses(center)) == 1)
    (ix,) = Interaction.objects.all()
    row = Outgoing.objects.get(interaction=ix, kind=Outgoing.AUTO_RESPONSE)

    # The same node's claims, with its sync box behind the relay: it reads its claim back.
    relay = HoldingRelay(site.imap_port)
    claims = Claims(replace(site, imap_port=relay.port), settings)
    claims.enter(support, "node-gone")
    try:
        claims.step()
        assert claims.admits(row)

        relay.hold.set()
        stepped = threading.Event()

        def step() -> None:
            try:
                with contextlib.suppress(MailboxUnavailable):
                    claims.step()
            finally:
                connection.close()  # this thread's own database connection
                stepped.set()

        answers: list[bool] = []
        answered = threading.Event()

        def gate() -> None:
            try:
                answers.append(claims.admits(row))
            finally:
                connection.close()
                answered.set()

        threading.Thread(target=step, daemon=True).start()
        assert relay.holding.wait(PATIENCE), "the claims' step never reached the sync box"
        threading.Thread(target=gate, daemon=True).start()
        answered.wait(PATIENCE)
        # The gate answered while the step still waited for the sync box.
        assert answers == [True] and not stepped.is_set(), "the gate waited for the sync box's answer"
        relay.released.set()
        assert stepped.wait(PATIENCE)
    finally:
        relay.close()
        claims.close()
