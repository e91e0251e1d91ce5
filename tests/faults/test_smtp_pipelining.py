"""postroom.mail.smtp's pipelined envelope (RFC 2920) against a scripted SMTP server on
127.0.0.1 that answers the way Postfix never does: 354 to DATA after refusing the journal
box or every recipient, a dropped connection after the 354, garbage, silence. The real
Postfix cases are in test_smtp_sender.py; here the point is what the client writes.

The server records every byte it is sent. "Queued" means it saw a final dot after a 354
with at least one accepted recipient: the one thing that must never happen for a
transaction reported as not sent."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from postroom.core.outbox import Result
from postroom.mail.smtp import SmtpAccount, SmtpSender

# reply(command line, server) -> the reply to write (None: write nothing, close the connection)
Script = Callable[[bytes, "ScriptedServer"], bytes | None]


@dataclass
class Session:
    received: bytearray = field(default_factory=bytearray)
    accepted: int = 0  # recipients answered 250 in the current transaction
    queued: int = 0  # final dots after a 354 with an accepted recipient
    dots: int = 0  # final dots seen at all (a lone "." after 354 included)
    # Commands that were already waiting when the server answered the one before them.
    ahead: int = 0


class ScriptedServer:
    def __init__(
        self, script: Script, *, pipelining: bool = True, hold_until_data: bool = False, drop_after_354: bool = False
    ) -> None:
        self.script = script
        self.drop_after_354 = drop_after_354
        self.pipelining = pipelining
        # Answer nothing of an envelope until DATA has arrived: only a pipelining client
        # gets anywhere (a step-by-step one waits for the MAIL reply until its timeout).
        self.hold_until_data = hold_until_data
        self.sessions: list[Session] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        for s in (self._listener, *self._socks):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._socks.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        session = Session()
        self.sessions.append(session)
        buf = b""
        held: list[bytes] = []
        in_data = False
        with contextlib.suppress(OSError), conn:
            conn.sendall(b"220 scripted ESMTP\r\n")
            while True:
                while b"\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    session.received += chunk
                    buf += chunk
                line, buf = buf.split(b"\r\n", 1)
                if in_data:
                    if line == b".":
                        in_data = False
                        session.dots += 1
                        if session.accepted:
                            session.queued += 1
                        session.accepted = 0
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                if b"\r\n" in buf:
                    session.ahead += 1
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
                if verb == b"EHLO":
                    extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                    conn.sendall(b"250-scripted\r\n" + extra + b"250 8BITMIME\r\n")
                    continue
                if verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                reply = self.script(line, self) if verb in (b"MAIL", b"RCPT", b"DATA") else b"250 ok\r\n"
                if verb == b"RSET":
                    session.accepted = 0
                if reply is None:
                    return
                if verb == b"RCPT" and reply.startswith(b"25"):
                    session.accepted += 1
                if verb == b"DATA" and reply.startswith(b"354"):
                    in_data = True
                if self.hold_until_data and verb in (b"MAIL", b"RCPT"):
                    held.append(reply)
                    continue
                conn.sendall(b"".join(held) + reply)
                held.clear()
                if in_data and self.drop_after_354:
                    return


def script(rcpt: dict[str, bytes] | None = None, data: bytes | None = b"354 go ahead\r\n") -> Script:
    """MAIL 250; RCPT 250 unless `rcpt` names a substring of the address; DATA `data`."""

    def reply(line: bytes, _server: ScriptedServer) -> bytes | None:
        if line.upper().startswith(b"MAIL"):
            return b"250 2.1.0 ok\r\n"
        if line.upper().startswith(b"RCPT"):
            for needle, answer in (rcpt or {}).items():
                if needle.encode() in line:
                    return answer
            return b"250 2.1.5 ok\r\n"
        return data

    return reply


@pytest.fixture
def serve():
    servers: list[ScriptedServer] = []

    def start(s: Script, **kw) -> ScriptedServer:
        servers.append(ScriptedServer(s, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def send(server: ScriptedServer, *, journal: str | None = "journal@example.test", timeout: float = 2.0):
    sender = SmtpSender(SmtpAccount("127.0.0.1", server.port, "none", timeout=timeout))
    try:
        return sender.send(
            "box@example.test",
            ["customer@example.test"],
            b"Subject: hi\r\nMessage-ID: <m1@example.test>\r\n\r\nhello\r\n",
            journal=journal,
        )
    finally:
        sender.close()


def test_mail_rcpts_and_data_go_in_one_write_when_pipelining_is_offered(serve) -> None:
    # The server answers nothing until it has DATA: a client waiting for each reply
    # would time out here (main before PIPELINING: TEMPORARY, nothing queued).
    server = serve(script(), hold_until_data=True)
    outcome = send(server)
    assert outcome.result is Result.SENT, outcome.detail
    (session,) = server.sessions
    assert session.queued == 1


def test_without_pipelining_on_offer_the_client_waits_for_each_reply(serve) -> None:
    server = serve(script(), pipelining=False)
    assert send(server).result is Result.SENT
    (session,) = server.sessions
    assert session.ahead == 0 and session.queued == 1


@pytest.mark.parametrize(
    ("rcpt", "result"),
    [
        ({"journal@": b"550 5.1.1 no such box\r\n"}, Result.TEMPORARY),
        ({"customer@": b"550 5.1.1 no such user\r\n"}, Result.PERMANENT),
        ({"customer@": b"452 4.2.2 full\r\n"}, Result.TEMPORARY),
        ({"customer@": b"550 5.1.1 no\r\n", "journal@": b"550 5.1.1 no\r\n"}, Result.PERMANENT),
        ({"customer@": b"garbage without a code\r\n"}, Result.TEMPORARY),
    ],
    ids=["journal-refused", "customer-550", "customer-452", "everyone-refused", "garbage-rcpt"],
)
def test_a_354_after_a_refusal_sends_no_body_and_no_dot(serve, rcpt, result) -> None:
    """The server answers DATA 354 whatever happened to the RCPTs. A lone dot would
    deliver an empty message to whoever was accepted (the customer, or the journal box):
    the client drops the connection instead, before any byte of the message."""
    server = serve(script(rcpt))
    outcome = send(server)
    assert outcome.result is result, outcome.detail
    (session,) = server.sessions
    assert session.dots == 0 and session.queued == 0
    assert b"hello" not in session.received and b"Subject" not in session.received


def test_mail_refused_with_data_answered_354_sends_nothing(serve) -> None:
    def reply(line: bytes, _s: ScriptedServer) -> bytes:
        if line.upper().startswith(b"MAIL"):
            return b"553 5.7.1 sender refused\r\n"
        return b"250 ok\r\n" if line.upper().startswith(b"RCPT") else b"354 go ahead\r\n"

    server = serve(reply)
    outcome = send(server)
    assert outcome.result is Result.PERMANENT, outcome.detail
    (session,) = server.sessions
    assert session.dots == 0 and b"hello" not in session.received


def test_a_refused_data_leaves_the_session_usable(serve) -> None:
    server = serve(script(data=b"451 4.3.0 try later\r\n"))
    sender = SmtpSender(SmtpAccount("127.0.0.1", server.port, "none", timeout=2.0))
    try:
        first = sender.send("box@example.test", ["customer@example.test"], b"Subject: a\r\n\r\nx\r\n")
        assert first.result is Result.TEMPORARY, first.detail
        assert sender._smtp is not None  # RSET, not a new connection
    finally:
        sender.close()
    assert len(server.sessions) == 1 and b"RSET" in server.sessions[0].received.upper()


def test_a_connection_dropped_after_the_354_is_not_sent(serve) -> None:
    # 354, then the server closes before reading anything more: the client finds out
    # while writing the body or waiting for the dot's reply. Never SENT; nothing queued.
    server = serve(script(), drop_after_354=True)
    outcome = send(server)
    assert outcome.result in (Result.TEMPORARY, Result.UNKNOWN), outcome.detail
    assert all(s.queued == 0 for s in server.sessions)


def test_a_server_that_never_answers_the_pipelined_envelope_is_not_sent(serve) -> None:
    def reply(line: bytes, _s: ScriptedServer) -> bytes | None:
        return b"250 ok\r\n" if line.upper().startswith(b"MAIL") else b""

    server = serve(reply)  # answers MAIL, then nothing: the RCPT replies never come
    outcome = send(server, timeout=1.0)
    assert outcome.result is Result.TEMPORARY, outcome.detail
    assert all(s.dots == 0 for s in server.sessions)
