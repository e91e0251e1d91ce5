"""SMTP adapter on smtplib: one prepared message, one transaction, its outcome as data.

Three kinds of outcome (`postroom.core.outbox.Result`), never exceptions: sent (250 to
the final dot), not sent (no connection, MAIL/RCPT/DATA refused, 4xx/5xx to the message:
temporary or permanent), and unknown: the final dot was written and the reply never came
(connection dropped, timed out, garbled), so the server may have queued it. What a broken
connection means depends on how far the transaction got (`Phase`), which is why the
transaction is driven here rather than through `sendmail()`: with a server that offers
PIPELINING (RFC 2920, Postfix does) MAIL, every RCPT and DATA go in one write and their
replies are read in order, otherwise one command at a time; either way the body and the
final dot are written only once every envelope reply was read (decision 0052).

An unknown outcome is never retried here. A reused session that turns out dead before
the server holds anything of the message (its idle timeout) is retried once on a fresh
connection. The whole transaction, connection and TLS included, runs against one
deadline (the account's `timeout`, or the caller's, whichever is earlier), so that it
ends well inside the outbox lease that covers it.

With `journal`, the journal box is one more envelope recipient of the same transaction
(RCPT only, never a header, so the customer never sees it): a 250 then means its copy is
queued too. If the journal box is refused, the transaction is abandoned as temporary
rather than sent without the copy that would settle an unknown outcome later.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from postroom.core.outbox import Phase, Result, after_failure, classify_codes, may_retry_fresh
from postroom.mail.imap import TokenSource, tls_context

log = logging.getLogger(__name__)

__all__ = ["Result", "SmtpAccount", "SmtpOutcome", "SmtpSender"]


@dataclass(frozen=True)
class SmtpAccount:
    host: str
    port: int
    tls: str  # "tls" | "starttls" | "none"
    login: str = ""
    password: str = field(default="", repr=False)
    cafile: str | None = None
    # The budget of one whole transaction (connect to the reply to the final dot).
    timeout: float = 30.0
    # Set for a relay account on OAuth2: AUTH XOAUTH2 with its token, not the password.
    token: TokenSource | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class SmtpOutcome:
    result: Result
    detail: str = ""

    @property
    def sent(self) -> bool:
        return self.result is Result.SENT


class _Broken(Exception):
    """The connection failed at `phase`; the session is unusable."""

    def __init__(self, phase: Phase, detail: str) -> None:
        super().__init__(detail)
        self.phase = phase
        self.detail = detail


class SmtpSender:
    """Keeps one authenticated session open across sends; reconnects when it drops.
    Not thread-safe: one worker uses one sender."""

    def __init__(self, account: SmtpAccount) -> None:
        self.account = account
        self._smtp: smtplib.SMTP | None = None

    def send(
        self,
        envelope_from: str,
        recipients: Sequence[str],
        raw: bytes,
        *,
        journal: str | None = None,
        deadline: float | None = None,
    ) -> SmtpOutcome:
        """Send `raw` to `recipients` (plus `journal`), all within `deadline` (a
        `time.monotonic()` value) if given."""
        own = time.monotonic() + self.account.timeout
        deadline = own if deadline is None else min(deadline, own)
        for attempt in (1, 2):
            reused = self._smtp is not None
            try:
                return self._transaction(envelope_from, list(recipients), raw, journal, deadline)
            except _Broken as exc:
                # Never reuse a session whose state we do not know.
                self.close()
                if attempt == 1 and may_retry_fresh(exc.phase, reused):
                    log.info("SMTP session was dead (%s); one fresh connection", exc.detail)
                    continue
                return SmtpOutcome(after_failure(exc.phase), exc.detail)
        raise AssertionError("unreachable")

    def _transaction(
        self, envelope_from: str, recipients: list[str], raw: bytes, journal: str | None, deadline: float
    ) -> SmtpOutcome:
        phase = Phase.CONNECT
        try:
            if self._smtp is None:
                self._smtp = self._connect(deadline)
            smtp = self._smtp
            phase = Phase.ENVELOPE
            if smtp.has_extn("pipelining"):
                refused, stop = self._pipelined_envelope(smtp, envelope_from, recipients, journal, deadline)
            else:
                refused, stop = self._stepwise_envelope(smtp, envelope_from, recipients, journal, deadline)
            if stop is not None:
                return stop
            phase = Phase.BODY
            _budget(smtp, deadline)
            smtp.send(_wire(raw))
            phase = Phase.FINAL_DOT
            smtp.send(b".\r\n")
            code, resp = smtp.getreply()
        except Exception as exc:  # noqa: BLE001 - any failure: its phase says what it means
            raise _Broken(phase, f"{type(exc).__name__} at {phase.name.lower()}: {exc}") from exc
        result = classify_codes([code], after_dot=True)
        detail = f"{code} {_text(resp)}"
        if result is Result.SENT and refused:
            detail += f"; refused by some: {refused}"
        if result is Result.UNKNOWN:
            self.close()  # a reply we cannot read leaves the session in an unknown state
        return SmtpOutcome(result, detail[:2000])

    def _stepwise_envelope(
        self, smtp: smtplib.SMTP, envelope_from: str, recipients: list[str], journal: str | None, deadline: float
    ) -> tuple[dict[str, tuple[int, str]], SmtpOutcome | None]:
        """MAIL, RCPT..., DATA one round trip each (a server without PIPELINING). Returns
        the refused recipients and, if the message must not be sent, the outcome."""
        _budget(smtp, deadline)
        code, resp = smtp.mail(envelope_from)
        if code != 250:
            return {}, self._refused([code], f"MAIL FROM: {code} {_text(resp)}")
        refused: dict[str, tuple[int, str]] = {}
        for rcpt in recipients:
            _budget(smtp, deadline)
            code, resp = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = (code, _text(resp))
        if len(refused) == len(recipients):
            return refused, self._refused([c for c, _ in refused.values()], f"RCPT TO: {refused}")
        if journal:
            _budget(smtp, deadline)
            code, resp = smtp.rcpt(journal)
            if code not in (250, 251):
                # Without its journal copy an unknown outcome could not be settled:
                # not worth the risk. Temporary: the journal box is ours to fix.
                self._reset()
                return refused, SmtpOutcome(Result.TEMPORARY, f"the journal box was refused: {code} {_text(resp)}")
        _budget(smtp, deadline)
        code, resp = smtp.docmd("DATA")
        if code != 354:
            return refused, self._refused([code], f"DATA: {code} {_text(resp)}")
        return refused, None

    def _pipelined_envelope(
        self, smtp: smtplib.SMTP, envelope_from: str, recipients: list[str], journal: str | None, deadline: float
    ) -> tuple[dict[str, tuple[int, str]], SmtpOutcome | None]:
        """MAIL, every RCPT (the journal box's too) and DATA in one write, then their
        replies in order (RFC 2920): one round trip where the step-by-step path takes
        three or more. Every reply is read and checked before anything else is written.

        The server may have answered 354 to DATA although MAIL, every customer RCPT or the
        journal RCPT was refused; it then takes whatever comes next as the message. RFC
        2920 §3.1 would have the client send a lone dot, which delivers an empty message
        to every recipient it did accept (the customer, or the journal box). Never: the
        connection is dropped instead, before any body or dot, and a server queues
        nothing without the final dot (RFC 5321 §4.1.1.4). The outcome is what the
        refusals say, exactly as on the step-by-step path; only the session is lost."""
        rcpts = [*recipients, journal] if journal else recipients
        lines = [f"MAIL FROM:{smtplib.quoteaddr(envelope_from)}\r\n"]
        lines += [f"RCPT TO:{smtplib.quoteaddr(r)}\r\n" for r in rcpts]
        lines.append("DATA\r\n")
        wire = "".join(lines)
        if any("\r" in line[:-2] or "\n" in line[:-2] for line in lines):
            raise ValueError("an address contains a line break")
        _budget(smtp, deadline)
        smtp.send(wire)
        _budget(smtp, deadline)
        mail = smtp.getreply()
        answers = []
        for _ in rcpts:
            _budget(smtp, deadline)
            answers.append(smtp.getreply())
        _budget(smtp, deadline)
        data_code, data_resp = smtp.getreply()
        refused = {
            r: (code, _text(resp))
            for r, (code, resp) in zip(recipients, answers, strict=False)
            if code not in (250, 251)
        }
        outcome: SmtpOutcome | None = None
        if mail[0] != 250:
            outcome = SmtpOutcome(classify_codes([mail[0]]), f"MAIL FROM: {mail[0]} {_text(mail[1])}")
            refused = {}
        elif len(refused) == len(recipients):
            outcome = SmtpOutcome(classify_codes([c for c, _ in refused.values()]), f"RCPT TO: {refused}")
        elif journal and answers[-1][0] not in (250, 251):
            # Without its journal copy an unknown outcome could not be settled:
            # not worth the risk. Temporary: the journal box is ours to fix.
            code, resp = answers[-1]
            outcome = SmtpOutcome(Result.TEMPORARY, f"the journal box was refused: {code} {_text(resp)}")
        elif data_code != 354:
            outcome = SmtpOutcome(classify_codes([data_code]), f"DATA: {data_code} {_text(data_resp)}")
        if outcome is None:
            return refused, None
        if data_code == 354:
            # The server waits for the message: no RSET, no QUIT (both would be its text).
            self._abort()
            outcome = SmtpOutcome(outcome.result, f"{outcome.detail}; DATA was answered 354 anyway: connection dropped")
        else:
            self._reset()
        return refused, SmtpOutcome(outcome.result, outcome.detail[:2000])

    def _connect(self, deadline: float) -> smtplib.SMTP:
        a = self.account
        ctx = tls_context(a.cafile)
        smtp: smtplib.SMTP
        timeout = _remaining(deadline)
        if a.tls == "tls":
            smtp = smtplib.SMTP_SSL(a.host, a.port, timeout=timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(a.host, a.port, timeout=timeout)
        # The message's end (".\r\n") is written apart from its body, so that a failure
        # can be told before it (nothing accepted: retry) from after it (unknown: settled
        # from the journal box). With Nagle's algorithm that small write waits for the
        # server to ACK the body, which it delays (no reply to piggyback before the dot):
        # about 40 ms per message on Linux, 10x the message's own cost. No Nagle here.
        try:
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _budget(smtp, deadline)
            smtp.ehlo()
            if a.tls == "starttls":
                # starttls() raises if the server does not offer it: never send in clear
                # text when encryption was configured.
                _budget(smtp, deadline)
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if a.login and a.token is not None:
                _budget(smtp, deadline)
                _xoauth2(smtp, a.login, a.token())
            elif a.login:
                _budget(smtp, deadline)
                smtp.login(a.login, a.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _refused(self, codes: list[int], detail: str) -> SmtpOutcome:
        self._reset()
        return SmtpOutcome(classify_codes(codes), detail[:2000])

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except Exception:  # noqa: BLE001 - a session that cannot RSET is closed
            self.close()

    def _abort(self) -> None:
        """Drop the connection without a word: the server is reading a message's text."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                smtp.sock.settimeout(2.0)
            smtp.quit()
        except Exception:  # noqa: BLE001 - the connection may already be dead
            smtp.close()


def _xoauth2(smtp: smtplib.SMTP, login: str, token: str) -> None:
    """AUTH XOAUTH2 with an initial response. A refused token gets a 334 carrying a JSON
    error first; the empty answer to it ends the exchange with the final 5xx, which
    smtplib raises as SMTPAuthenticationError."""

    def answer(challenge: bytes | None = None) -> str:
        return f"user={login}\x01auth=Bearer {token}\x01\x01" if challenge is None else ""

    smtp.auth("XOAUTH2", answer, initial_response_ok=True)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the SMTP time budget is spent")
    return left


def _budget(smtp: smtplib.SMTP, deadline: float) -> None:
    """Bound the next socket operation by what is left of the transaction's budget."""
    left = _remaining(deadline)
    if smtp.sock is not None:
        smtp.sock.settimeout(left)


_BARE_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _wire(raw: bytes) -> bytes:
    """The message as DATA carries it, without the final dot: CRLF line ends and
    dot-stuffing (RFC 5321 §2.3.8, §4.5.2), ending in CRLF."""
    data = _LEADING_DOT.sub(b"..", _BARE_EOL.sub(b"\r\n", raw))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _text(resp: bytes | str) -> str:
    return resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
