"""Simulated customers: send the sample e-mails to the company's MX over plain SMTP."""

from __future__ import annotations

import logging
import random
import re
import smtplib
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.utils import format_datetime, parseaddr
from pathlib import Path

from postroom_sim._net import EHLO_NAME, bare_address, has_8bit

log = logging.getLogger("postroom_sim.customers")

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# Header fields that a fresh send replaces, or that belong to an earlier delivery.
_REPLACED = ("from", "to", "date", "message-id")
_DROPPED = ("cc", "bcc", "return-path", "delivered-to", "x-original-to", "received")

_EOL = re.compile(rb"\r\n|\r|\n")


def sample_paths() -> list[Path]:
    """The bundled customer e-mails, sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.eml"))


def _read(sample: Path | str | bytes) -> bytes:
    if isinstance(sample, bytes | bytearray | memoryview):
        return bytes(sample)
    return Path(sample).read_bytes()


def _fold(name: str, value: str) -> bytes:
    smtp = policy.SMTP
    return smtp.header_factory(name, value).fold(policy=smtp).encode("ascii")


def _split_fields(head: bytes) -> list[tuple[str, bytes]]:
    """Header block -> [(lower-case name, raw field bytes incl. continuations and CRLF)]."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
        elif b":" in line:
            fields.append(
                (line.split(b":", 1)[0].strip().decode("ascii", "replace").lower(), line + b"\r\n")
            )
        # anything else (an mbox "From " line, garbage) is dropped
    return fields


def prepare_customer_mail(
    sample: Path | str | bytes,
    *,
    from_addr: str,
    to_addr: str,
    message_id: str | None = None,
    subject: str | None = None,
    date: datetime | None = None,
) -> tuple[bytes, str]:
    """Re-address a sample: returns (CRLF message bytes, Message-ID).

    From, To, Date and Message-ID are replaced (Subject too when given), in the
    places the sample had them; Cc/Bcc and trace fields are dropped. The body
    is kept byte for byte (only line endings become CRLF). When ``from_addr``
    is a bare address, the sample's display name is kept with it, so the
    signature in the body still matches the sender's name.
    """
    raw = _EOL.sub(b"\r\n", _read(sample))
    if raw.startswith(b"From "):  # mbox separator line
        raw = raw.split(b"\r\n", 1)[1] if b"\r\n" in raw else b""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, body = raw, b""

    old = BytesHeaderParser(policy=policy.default).parsebytes(head + b"\r\n\r\n")
    name, addr = parseaddr(from_addr)
    addr = addr or from_addr.strip()
    if not name:
        try:
            old_from = old["From"]
            if old_from is not None and old_from.addresses:
                name = old_from.addresses[0].display_name
        except Exception:  # a broken From in a caller's sample: just drop the name
            name = ""
    sender = str(Address(display_name=name, addr_spec=addr)) if name else addr
    domain = addr.rpartition("@")[2] or "customer.test"
    if message_id is None:
        message_id = f"<{uuid.uuid4()}@{domain}>"
    elif not message_id.startswith("<"):
        message_id = f"<{message_id}>"

    new = {
        "from": _fold("From", sender),
        "to": _fold("To", to_addr),
        "date": _fold("Date", format_datetime(date or datetime.now().astimezone())),
        "message-id": _fold("Message-ID", message_id),
    }
    replaced = _REPLACED
    if subject is not None:
        new["subject"] = _fold("Subject", subject)
        replaced = (*_REPLACED, "subject")

    out: list[bytes] = []
    for fname, fraw in _split_fields(head):
        if fname in _DROPPED:
            continue
        if fname in replaced:
            if fname in new:
                out.append(new.pop(fname))
            continue  # a duplicate of a replaced field
        out.append(fraw)
    # Fields the sample lacked go first, where an MUA would put them.
    data = b"".join(list(new.values()) + out) + b"\r\n" + body
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data, message_id


def send_customer_mail(
    host: str,
    smtp_port: int,
    *,
    sample: Path | str | bytes,
    from_addr: str,
    to_addr: str,
    message_id: str | None = None,
    subject: str | None = None,
    timeout: float = 30.0,
) -> str:
    """Send one customer e-mail to the MX (plain SMTP, no auth); returns its Message-ID.

    Each call gets a fresh Message-ID and Date, so sending a sample twice makes
    two distinct mails.
    """
    data, mid = prepare_customer_mail(
        sample, from_addr=from_addr, to_addr=to_addr, message_id=message_id, subject=subject
    )
    with smtplib.SMTP(host, smtp_port, local_hostname=EHLO_NAME, timeout=timeout) as smtp:
        smtp.ehlo()
        opts = ["BODY=8BITMIME"] if has_8bit(data) and smtp.has_extn("8bitmime") else []
        smtp.sendmail(bare_address(from_addr), [bare_address(to_addr)], data, mail_options=opts)
    log.info("customer %s -> %s: %s", bare_address(from_addr), bare_address(to_addr), mid)
    return mid


class CustomerSimulator:
    """Sends a random sample from a random customer every ``every`` seconds (± jitter).

    ``customers`` are addresses (optionally ``"Name <addr>"``); ``recipients``
    are the company's addresses. A sample written to one of the recipients
    (e.g. a sales enquiry to sales@) goes there; any other sample goes to a
    random recipient.
    """

    def __init__(
        self,
        host: str,
        smtp_port: int,
        *,
        customers: Sequence[str],
        recipients: Sequence[str],
        every: float = 8.0,
        jitter: float = 0.3,
        samples: Sequence[Path] | None = None,
        seed: int | None = None,
        first_after: float = 0.5,
    ) -> None:
        if not customers:
            raise ValueError("CustomerSimulator needs at least one customer address")
        if not recipients:
            raise ValueError("CustomerSimulator needs at least one recipient address")
        self.host = host
        self.smtp_port = smtp_port
        self.customers = list(customers)
        self.recipients = list(recipients)
        self.every = float(every)
        self.jitter = min(max(float(jitter), 0.0), 1.0)
        self.samples = list(samples) if samples is not None else sample_paths()
        if not self.samples:
            raise ValueError("no samples to send")
        self.first_after = first_after
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._sent = 0
        self._errors = 0
        self.sent_ids: list[str] = []

    @property
    def sent(self) -> int:
        with self._lock:
            return self._sent

    @property
    def errors(self) -> int:
        with self._lock:
            return self._errors

    def _recipient_for(self, sample: Path) -> str:
        try:
            hdr = BytesHeaderParser(policy=policy.default).parsebytes(sample.read_bytes())
            written_to = {a.addr_spec.lower() for a in hdr["To"].addresses} if hdr["To"] else set()
        except Exception:
            written_to = set()
        matching = [r for r in self.recipients if bare_address(r).lower() in written_to]
        return self._rng.choice(matching or self.recipients)

    def send_one(self) -> str:
        """Send one random sample now (synchronously); returns its Message-ID."""
        sample = self._rng.choice(self.samples)
        customer = self._rng.choice(self.customers)
        to = self._recipient_for(sample)
        mid = send_customer_mail(
            self.host, self.smtp_port, sample=sample, from_addr=customer, to_addr=to
        )
        with self._lock:
            self._sent += 1
            self.sent_ids.append(mid)
        return mid

    def _delay(self) -> float:
        return max(0.05, self.every * self._rng.uniform(1 - self.jitter, 1 + self.jitter))

    def _run(self) -> None:
        delay = self.first_after
        while not self._stop.wait(delay):
            try:
                self.send_one()
            except Exception:
                with self._lock:
                    self._errors += 1
                log.exception("customer simulator: sending failed")
            delay = self._delay()

    def start(self) -> CustomerSimulator:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-customers", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
