"""A loopback SMTP proxy that lies the way real networks and relays do.

It sits between Postroom and the real Postfix submission port and relays every command
and reply, one line at a time. It terminates TLS on both legs (STARTTLS towards the
client with the dev stack's own certificate, which the engine already trusts; STARTTLS
towards Postfix, verified against the same file) and relays AUTH as it comes, so the
engine speaks to it exactly as it speaks to Postfix. Terminating TLS is what lets it
see the protocol: a transparent byte relay could not tell the final dot of DATA from
any other byte, and the interesting faults sit exactly there.

The faults (`Fault`), each applied to the transactions a `Rule` matches:

* ``DELAY_REPLY``: the message goes to Postfix (which queues it), the final reply is held
  back for `delay` seconds before it is relayed (a slow relay, or a client timeout);
* ``DROP_AFTER_DOT``: the message goes to Postfix, then the client's connection is reset
  before the reply is relayed: the server said 250, the client never heard it;
* ``PASS_THEN_RESET``: the reply is relayed, then the connection is reset (the next
  command on that connection finds it dead);
* ``REFUSE_RCPT``: RCPT TO for a matching recipient is answered with `code` without
  asking Postfix (a mailbox that does not exist, a full one: 550/452);
* ``REFUSE_DATA``: the message is read but its final dot is never passed on (Postfix
  discards it); the client is answered `code` and both legs are closed.

`discard_ehlo` names EHLO keywords the proxy strips from Postfix's answer (as Postfix's
own `smtpd_discard_ehlo_keywords` would): with ``("PIPELINING",)`` the client sees a
server without RFC 2920 and must send step by step.

Only 127.0.0.1 is bound. Everything that happened is in `log` for the test to read.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CRLF = b"\r\n"


class Fault(enum.Enum):
    DELAY_REPLY = "delay_reply"
    DROP_AFTER_DOT = "drop_after_dot"
    PASS_THEN_RESET = "pass_then_reset"
    REFUSE_RCPT = "refuse_rcpt"
    REFUSE_DATA = "refuse_data"


@dataclass
class Rule:
    """Apply `fault` to transactions that `match`: a substring of a recipient (or, for
    faults at the end of DATA, of the message) or a predicate on (recipients, message
    bytes or None); None matches everything. `times` transactions, or forever if None."""

    fault: Fault
    match: str | Callable[[list[str], bytes | None], bool] | None = None
    times: int | None = 1
    code: int = 451
    delay: float = 0.0
    used: int = 0

    def matches(self, rcpts: list[str], data: bytes | None) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.match is None:
            return True
        if callable(self.match):
            return self.match(rcpts, data)
        needle = self.match.lower()
        if any(needle in r.lower() for r in rcpts):
            return True
        return data is not None and needle.encode() in data.lower()


@dataclass
class Transaction:
    """One MAIL .. end of DATA as the proxy saw it."""

    mail_from: str
    rcpts: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    message_id: str = ""
    fault: Fault | None = None
    upstream_reply: str = ""  # what Postfix answered to the final dot ("" if never sent)
    client: str = ""  # the client's address:port (one per connection)


class SmtpFaultProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        cafile: Path,
        certfile: Path,
        keyfile: Path,
        discard_ehlo: tuple[str, ...] = (),
    ) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.discard_ehlo = tuple(k.upper() for k in discard_ehlo)
        self.client_tls = ssl.create_default_context(cafile=str(cafile))
        self.server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_tls.load_cert_chain(str(certfile), str(keyfile))
        self.rules: list[Rule] = []
        self.log: list[Transaction] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.port = 0

    # -- control ----------------------------------------------------------------------
    def start(self) -> SmtpFaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, name="smtp-fault-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        with self._lock:
            socks = [s for s in (listener, *self._open) if s is not None]
        for sock in socks:
            # shutdown() wakes a thread blocked in accept() or recv(); close() alone does not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(5)

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def delivered(self, message_id: str) -> int:
        """How many times Postfix accepted (250) a message with this Message-ID."""
        return sum(1 for t in self.log if t.message_id == message_id and t.upstream_reply.startswith("250"))

    # -- the relay --------------------------------------------------------------------
    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _rule(self, rcpts: list[str], data: bytes | None, faults: tuple[Fault, ...]) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.fault in faults and rule.matches(rcpts, data):
                    rule.used += 1
                    return rule
        return None

    def _serve(self, client: socket.socket) -> None:
        conn: _Legs | None = None
        try:
            up = socket.create_connection(self.upstream, timeout=30)
            client.settimeout(60)
            with self._lock:
                self._open.update((client, up))
            conn = _Legs(client, up)
            conn.relay_reply()  # greeting
            txn: Transaction | None = None
            while True:
                line = conn.client_line()
                if not line:
                    return
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
                if verb == b"STARTTLS":
                    conn.to_up(line)
                    reply = conn.up_reply()
                    if reply.startswith(b"220"):
                        conn.up = self.client_tls.wrap_socket(conn.up, server_hostname="127.0.0.1")
                        conn.up_file = conn.up.makefile("rb")
                        conn.to_client(reply)
                        conn.client = self.server_tls.wrap_socket(conn.client, server_side=True)
                        conn.client_file = conn.client.makefile("rb")
                        with self._lock:
                            self._open.update((conn.client, conn.up))
                    else:
                        conn.to_client(reply)
                elif verb == b"AUTH":
                    conn.to_up(line)
                    while True:
                        reply = conn.up_reply()
                        conn.to_client(reply)
                        if not reply.startswith(b"334"):
                            break
                        conn.to_up(conn.client_line())
                elif verb == b"MAIL":
                    txn = Transaction(mail_from=_address(line), client="{}:{}".format(*conn.client.getpeername()[:2]))
                    conn.to_up(line)
                    conn.relay_reply()
                elif verb == b"RCPT" and txn is not None:
                    rcpt = _address(line)
                    rule = self._rule([rcpt], None, (Fault.REFUSE_RCPT,))
                    if rule is not None:
                        txn.refused.append(rcpt)
                        conn.to_client(f"{rule.code} 5.1.1 <{rcpt}>: refused by the fault proxy\r\n".encode())
                        continue
                    conn.to_up(line)
                    reply = conn.up_reply()
                    if reply.startswith(b"250"):
                        txn.rcpts.append(rcpt)
                    conn.to_client(reply)
                elif verb == b"DATA" and txn is not None:
                    conn.to_up(line)
                    reply = conn.up_reply()
                    conn.to_client(reply)
                    if not reply.startswith(b"354"):
                        continue
                    body = conn.data_lines()
                    txn.message_id = _message_id(body)
                    self.log.append(txn)
                    done = self._end_of_data(conn, txn, body)
                    txn = None
                    if done:
                        return
                elif verb == b"RSET":
                    txn = None
                    conn.to_up(line)
                    conn.relay_reply()
                else:
                    conn.to_up(line)
                    reply = conn.up_reply()
                    if verb == b"EHLO" and self.discard_ehlo:
                        reply = _discard_keywords(reply, self.discard_ehlo)
                    conn.to_client(reply)
                    if verb == b"QUIT":
                        return
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            # After STARTTLS the live sockets are the wrapped ones in `conn`.
            socks = [client] if conn is None else [client, conn.client, conn.up]
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._open.difference_update(socks)

    def _end_of_data(self, conn: _Legs, txn: Transaction, body: bytes) -> bool:
        """Pass the message on (or not), answer the client (or not); True: connection over."""
        faults = (Fault.DELAY_REPLY, Fault.DROP_AFTER_DOT, Fault.PASS_THEN_RESET, Fault.REFUSE_DATA)
        rule = self._rule(txn.rcpts, body, faults)
        txn.fault = rule.fault if rule else None
        if rule is not None and rule.fault is Fault.REFUSE_DATA:
            # Without its final dot Postfix never queues the message; closing is the only
            # way out of DATA.
            conn.to_client(f"{rule.code} 5.0.0 refused by the fault proxy\r\n".encode())
            conn.close_up()
            return True
        conn.to_up(body + b".\r\n")
        reply = conn.up_reply()
        txn.upstream_reply = reply.decode("ascii", "replace").strip()
        if rule is None:
            conn.to_client(reply)
            return False
        if rule.fault is Fault.DELAY_REPLY:
            time.sleep(rule.delay)
            conn.to_client(reply)
            return False
        if rule.fault is Fault.DROP_AFTER_DOT:
            conn.reset_client()
            return True
        conn.to_client(reply)  # PASS_THEN_RESET
        conn.reset_client()
        return True


class _Legs:
    """The two sockets of one relayed session, line by line."""

    def __init__(self, client: socket.socket, up: socket.socket) -> None:
        self.client = client
        self.up = up
        self.client_file = client.makefile("rb")
        self.up_file = up.makefile("rb")

    def client_line(self) -> bytes:
        return self.client_file.readline(65536)

    def to_up(self, data: bytes) -> None:
        self.up.sendall(data)

    def to_client(self, data: bytes) -> None:
        self.client.sendall(data)

    def up_reply(self) -> bytes:
        """One whole (possibly multi-line) SMTP reply from Postfix."""
        out = b""
        while True:
            line = self.up_file.readline(65536)
            if not line:
                raise ValueError("upstream closed")
            out += line
            if len(line) < 4 or line[3:4] != b"-":
                return out

    def relay_reply(self) -> None:
        self.to_client(self.up_reply())

    def data_lines(self) -> bytes:
        """The message as sent (dot-stuffed), without its terminating ".\\r\\n"."""
        out = bytearray()
        while True:
            line = self.client_line()
            if not line:
                raise ValueError("client closed during DATA")
            if line == b".\r\n":
                return bytes(out)
            out += line

    def reset_client(self) -> None:
        # SO_LINGER 0: close() sends a TCP RST, as a crashed middlebox or a killed relay does.
        with contextlib.suppress(OSError):
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.client.close()

    def close_up(self) -> None:
        with contextlib.suppress(OSError):
            self.up.close()


def _discard_keywords(reply: bytes, keywords: tuple[str, ...]) -> bytes:
    """The EHLO reply without the lines naming `keywords`, its continuation marks redone."""
    lines = [ln for ln in reply.split(CRLF) if ln]
    kept = [lines[0]] + [ln for ln in lines[1:] if ln[4:].split(b" ", 1)[0].decode("ascii", "replace").upper() not in keywords]
    out = [ln[:3] + (b" " if i == len(kept) - 1 else b"-") + ln[4:] for i, ln in enumerate(kept)]
    return CRLF.join(out) + CRLF


def _address(line: bytes) -> str:
    text = line.decode("ascii", "replace")
    start, end = text.find("<"), text.find(">")
    return text[start + 1 : end] if 0 <= start < end else ""


def _message_id(body: bytes) -> str:
    for raw in body.split(b"\n"):  # bare LF too: smtplib passes bytes on as they are
        raw = raw.rstrip(b"\r")
        if not raw:
            break  # end of the header
        if raw.lower().startswith(b"message-id:"):
            return raw.split(b":", 1)[1].strip().decode("ascii", "replace")
    return ""


def proxy_for(stack, *, discard_ehlo: tuple[str, ...] = ()) -> SmtpFaultProxy:  # stack: DevStack
    """A started proxy in front of `stack`'s submission port, with the stack's certificate."""
    lay = stack._lay  # the key is not public API: only a test would want it
    return SmtpFaultProxy(
        stack.submission_port,
        cafile=stack.cafile,
        certfile=lay.cert_file,
        keyfile=lay.key_file,
        discard_ehlo=discard_ehlo,
    ).start()
