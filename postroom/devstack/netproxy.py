"""A loopback TCP relay in front of a real server (Dovecot, Postfix, PostgreSQL), with the
faults networks and servers have: slow answers, an SMTP server that answers the end of
DATA late, a connection cut in the middle of a response, a server that is down
(connections refused and dropped), and half-open connections that carry nothing more.

It relays bytes and nothing else (TLS passes through untouched; only the plaintext
faults, `hold_after_dot` and `cut_on`, need the client to speak in clear). Every socket
binds 127.0.0.1. Faults are attributes, changed by the test while the proxy runs.

The field-bug tests put it in front of the mail server; `postroom demo --nodes N` puts one
between each node after the first and PostgreSQL, so that a node's database link can be
cut and healed (`down()` / `up()`, driven by dblink.py from the console or the CLI).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        # Faults.
        self.delay = 0.0  # seconds before each chunk from the server is passed on
        self.hold_after_dot = 0.0  # SMTP: seconds the answer to the end of DATA is held back
        self.cut_on: bytes | None = None  # drop the connection when the server sends this (once)
        self.refusing = False  # down: new connections are closed at once
        self.refused = 0  # connections closed at once while down
        # What went through: one bytearray of client bytes per connection (plaintext only).
        self.sent: list[bytearray] = []
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    # -- faults ------------------------------------------------------------------------
    def down(self) -> None:
        """The server goes away: every connection dropped, new ones refused."""
        self.refusing = True
        self.drop_all()

    def up(self) -> None:
        self.refusing = False

    def drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server, _frozen in pairs:
            _close(client, server)

    def freeze_all(self) -> None:
        """Half-open: the connections open now stay open and never carry a byte again."""
        with self._lock:
            for _client, _server, frozen in self._pairs:
                frozen.set()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self.sent)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        self.drop_all()

    # -- relaying ----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                self.refused += 1
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            frozen = threading.Event()
            log = bytearray()
            with self._lock:
                self._pairs.append((client, server, frozen))
                self.sent.append(log)
            threading.Thread(target=self._relay, args=(client, server, frozen, log), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket, frozen: threading.Event, log: bytearray) -> None:
        held_until = 0.0
        try:
            while not self._stop.is_set():
                if frozen.is_set():
                    time.sleep(0.1)
                    continue
                ready, _, _ = select.select([client, server], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        log += data
                        if self.hold_after_dot and data.endswith(b"\r\n.\r\n"):
                            held_until = time.monotonic() + self.hold_after_dot
                        server.sendall(data)
                        continue
                    if self.delay:
                        time.sleep(self.delay)
                    if held_until:
                        time.sleep(max(0.0, held_until - time.monotonic()))
                        held_until = 0.0
                    cut = self.cut_on
                    if cut is not None and cut in data:
                        self.cut_on = None
                        client.sendall(data[: data.index(cut) + len(cut)])  # a response cut short
                        return
                    client.sendall(data)
        except (OSError, ValueError):
            # ValueError: select() on a socket that stop() or a cut closed meanwhile (fd -1).
            return
        finally:
            _close(client, server)
            with self._lock:
                self._pairs = [p for p in self._pairs if p[0] is not client]


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
