"""SMTP adapter on smtplib: send one prepared message, report the outcome as data.

Expected protocol outcomes (4xx, 5xx, a dropped connection) are values, never exceptions,
so the outbox can decide retry or dead without guessing (Mailman's split of temporary and
permanent failures).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from postroom.mail.imap import tls_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpAccount:
    host: str
    port: int
    tls: str  # "tls" | "starttls" | "none"
    login: str = ""
    password: str = field(default="", repr=False)
    cafile: str | None = None
    timeout: float = 30.0


class Result(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"  # try again later: 4xx, connection trouble
    PERMANENT = "permanent"  # 5xx for every recipient: retrying cannot help


@dataclass(frozen=True)
class SmtpOutcome:
    result: Result
    detail: str = ""

    @property
    def sent(self) -> bool:
        return self.result is Result.SENT


class SmtpSender:
    """Keeps one authenticated session open across sends; reconnects when it drops."""

    def __init__(self, account: SmtpAccount) -> None:
        self.account = account
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        a = self.account
        ctx = tls_context(a.cafile)
        smtp: smtplib.SMTP
        if a.tls == "tls":
            smtp = smtplib.SMTP_SSL(a.host, a.port, timeout=a.timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(a.host, a.port, timeout=a.timeout)
        try:
            smtp.ehlo()
            if a.tls == "starttls":
                # starttls() raises if the server does not offer it: never send in clear
                # text when encryption was configured.
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if a.login:
                smtp.login(a.login, a.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, envelope_from: str, recipients: Sequence[str], raw: bytes) -> SmtpOutcome:
        for attempt in (1, 2):
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                refused = self._smtp.sendmail(envelope_from, list(recipients), raw)
            except smtplib.SMTPServerDisconnected as exc:
                # A reused session may have been closed by the server's idle timeout;
                # one fresh connection is worth a try before calling it temporary.
                self.close()
                if attempt == 1:
                    continue
                return SmtpOutcome(Result.TEMPORARY, f"disconnected: {exc}")
            except smtplib.SMTPRecipientsRefused as exc:
                self._reset()
                return classify_codes([code for code, _ in exc.recipients.values()], str(exc.recipients))
            except smtplib.SMTPResponseException as exc:
                self._reset()
                return classify_codes([exc.smtp_code], f"{exc.smtp_code} {exc.smtp_error!r}")
            except (OSError, ssl.SSLError, smtplib.SMTPException) as exc:
                self.close()
                return SmtpOutcome(Result.TEMPORARY, f"{type(exc).__name__}: {exc}")
            if refused:
                # Some recipients took it: the message left; report who refused.
                return SmtpOutcome(Result.SENT, f"refused by some: {refused}")
            return SmtpOutcome(Result.SENT)
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except Exception:
            self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except Exception:
            smtp.close()


def classify_codes(codes: Sequence[int], detail: str) -> SmtpOutcome:
    """5xx for every recipient is permanent; anything else is worth retrying."""
    if codes and all(500 <= c < 600 for c in codes):
        return SmtpOutcome(Result.PERMANENT, detail)
    return SmtpOutcome(Result.TEMPORARY, detail)
