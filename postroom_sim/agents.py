"""Simulated agents: reply to forwarded customer mail the way real mail clients do.

``compose_reply`` is pure (no I/O): it builds the reply that Thunderbird,
Outlook, Gmail or Apple Mail would send for a forwarded mail. ``AgentClient``
is the I/O part: it watches the agent's IMAP inbox with IDLE and sends
replies over authenticated submission.
"""

from __future__ import annotations

import base64
import contextlib
import email
import html
import logging
import random
import re
import smtplib
import string
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from typing import Literal, get_args

from imapclient import IMAPClient

from postroom.core.htmltext import html_to_text
from postroom_sim._net import EHLO_NAME, bare_address, has_8bit, tls_context

log = logging.getLogger("postroom_sim.agents")

Style = Literal["thunderbird", "outlook", "gmail", "apple"]
STYLES: tuple[str, ...] = get_args(Style)

_CONTENT = "\0content"  # placeholder in a header list: "the Content-* fields go here"
_MSGID = re.compile(r"<[^<>\s]+>")
_RE_PREFIX = re.compile(r"^\s*re\s*:\s*", re.IGNORECASE)

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# --------------------------------------------------------------------------------------
# Pieces of the reply
# --------------------------------------------------------------------------------------


def _as_email_message(msg: Message) -> EmailMessage:
    if isinstance(msg, EmailMessage) and msg.policy is not policy.compat32:
        return msg
    return email.message_from_bytes(msg.as_bytes(), policy=policy.default)  # type: ignore[return-value]


def _header(msg: EmailMessage, name: str) -> str:
    try:
        value = msg[name]
    except Exception:  # a header the parser cannot make sense of
        return ""
    return str(value).strip() if value is not None else ""


def _addresses(msg: EmailMessage, name: str) -> list[tuple[str, str]]:
    """[(display name, addr_spec)] of an address header; [] when absent or unreadable."""
    try:
        value = msg[name]
        if value is None:
            return []
        return [(a.display_name, a.addr_spec) for a in value.addresses if a.addr_spec]
    except Exception:
        return []


def _format_addr(name: str, addr: str) -> str:
    return str(Address(display_name=name, addr_spec=addr)) if name else addr


def _msg_ids(value: str) -> list[str]:
    return _MSGID.findall(value or "")


def _reply_subject(subject: str, style: str) -> str:
    """What the client puts in the Subject. A "[PR:...]" tag stays where it is."""
    subject = " ".join(subject.split())
    if style == "outlook":
        # Outlook strips its own/English prefix and writes "RE: ".
        return "RE: " + _RE_PREFIX.sub("", subject, count=1)
    if _RE_PREFIX.match(subject):
        return subject
    return "Re: " + subject


def _parent_datetime(msg: EmailMessage, fallback: datetime) -> datetime:
    try:
        header = msg["Date"]
        dt = header.datetime if header is not None else None
    except Exception:
        dt = None
    if dt is None:
        return fallback
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return dt


def _clock(dt: datetime) -> str:
    hour = dt.hour % 12 or 12
    return f"{hour}:{dt.minute:02d} {'AM' if dt.hour < 12 else 'PM'}"


def original_text(msg: EmailMessage) -> str:
    """The text a mail client shows (and so quotes) for a message: its plain body,
    else its HTML body as text. Trailing spaces and surrounding blank lines removed."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        return ""
    try:
        content = part.get_content()
    except Exception:  # unknown charset, broken encoding: do what clients do, show something
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    if part.get_content_subtype() == "html":
        content = html_to_text(content)
    lines = [line.rstrip() for line in content.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def _quote(text: str, *, blank: str = ">") -> str:
    """RFC 3676-style quoting: "> " before text, ">" before an already quoted line."""
    out = []
    for line in text.split("\n"):
        if not line:
            out.append(blank)
        elif line.startswith(">"):
            out.append(">" + line)
        else:
            out.append("> " + line)
    return "\n".join(out)


def _html_lines(text: str) -> str:
    return "<br>\n".join(html.escape(line) for line in text.split("\n"))


def _random_token(rng: random.Random, n: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _outlook_thread_index(parent: str, now: datetime, rng: random.Random) -> str:
    """Outlook's Thread-Index: a 22-byte header block (reserved byte, time, GUID) for a
    new conversation, plus one 5-byte child block per reply."""
    try:
        raw = base64.b64decode(parent.strip(), validate=True) if parent else b""
    except (ValueError, TypeError):
        raw = b""
    if len(raw) >= 22 and (len(raw) - 22) % 5 == 0:
        child = rng.getrandbits(39).to_bytes(5, "big")  # top bit 0: time-delta code 0
        return base64.b64encode(raw + child).decode("ascii")
    filetime = int((now.timestamp() + 11644473600) * 10_000_000)
    head = b"\x01" + filetime.to_bytes(8, "big")[1:6]
    return base64.b64encode(head + rng.getrandbits(128).to_bytes(16, "big")).decode("ascii")


def _assemble(headers: list[tuple[str, str]], body: EmailMessage) -> EmailMessage:
    """Give ``body`` (a message with its content set) ``headers`` in that order; its
    own Content-* fields go where the ``_CONTENT`` placeholder is. The payload is not
    touched, so an 8bit body stays 8bit."""
    for part in body.iter_parts():  # email adds MIME-Version to add_alternative()'s part
        del part["MIME-Version"]
    content = [(k, v) for k, v in body.items() if k.lower() != "mime-version"]
    for name in {k for k, _ in body.items()}:
        del body[name]
    for name, value in headers:
        if name == _CONTENT:
            for k, v in content:
                body[k] = v
        else:
            body[name] = value
    return body


def _text_part(
    text: str, *, charset: str = "utf-8", cte: str | None = None, flowed: bool = False
) -> EmailMessage:
    part = EmailMessage(policy=policy.default)
    part.set_content(text, charset=charset, cte="7bit" if text.isascii() else cte)
    if flowed:
        label = "UTF-8" if charset.lower() == "utf-8" else charset
        part.replace_header("Content-Type", f"text/plain; charset={label}; format=flowed")
    return part


def _reply_all(
    fwd: EmailMessage, targets: list[tuple[str, str]], agent_addr: str, style: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(To, Cc) of a Reply All: ``targets`` plus everyone else the mail names, the agent
    left out, each address once (compared ignoring case)."""
    seen = {agent_addr.lower()}
    to: list[tuple[str, str]] = []
    cc: list[tuple[str, str]] = []

    def add(into: list[tuple[str, str]], entries: list[tuple[str, str]]) -> None:
        for name, addr in entries:
            if addr.lower() not in seen:
                seen.add(addr.lower())
                into.append((name, addr))

    add(to, targets)
    if style in ("thunderbird", "apple"):
        add(to, _addresses(fwd, "From"))
    if style == "outlook":
        add(to, _addresses(fwd, "To"))
    add(cc, _addresses(fwd, "To") + _addresses(fwd, "Cc"))
    return to, cc


# --------------------------------------------------------------------------------------
# compose_reply
# --------------------------------------------------------------------------------------


def compose_reply(
    forwarded: Message,
    *,
    agent_addr: str,
    agent_name: str,
    style: Style,
    text: str,
    date: datetime | None = None,
    top_post: bool | None = None,
    rng: random.Random | None = None,
    reply_all: bool = False,
) -> EmailMessage:
    """The reply an agent's mail client sends when the agent hits "Reply" on ``forwarded``
    (or "Reply All", with ``reply_all``).

    * To: the forwarded mail's Reply-To (else its From), as every client does.
    * Reply All adds everyone else the mail names, except the agent: Thunderbird and Apple
      Mail also put the From in To when it differs from Reply-To, Outlook puts the
      original To in To, and every client puts the rest of the original To and Cc in Cc.
    * Subject: "Re: " + subject ("RE: " for Outlook), an existing "Re:" kept; any tag
      such as "[PR:...]" stays in place.
    * In-Reply-To: the forwarded Message-ID. References: its References (or its single
      In-Reply-To) + its Message-ID, except Outlook, which sends no References but
      Thread-Index and Thread-Topic.
    * The body quotes the original the way that client does:
      thunderbird  "On 3/12/24 9:58 AM, Name wrote:" + "> " lines, reply below the quote
                   (Thunderbird's default; ``top_post=True`` puts it above), format=flowed;
      apple        reply on top, then "> On Mar 12, 2024, at 9:58 AM, Name <addr> wrote:"
                   and the "> " quote (modern Apple Mail quotes the attribution too);
      gmail        reply on top, "On Tue, Mar 12, 2024 at 9:58 AM Name <addr> wrote:" +
                   "> " lines; multipart/alternative with a gmail_quote HTML part;
      outlook      reply on top, then an unquoted "From:/Sent:/To:/Subject:" block and the
                   original; multipart/alternative with a Word-style HTML part.
    * A fresh Message-ID on the agent's domain (in the client's own format), Date, From,
      and the client's User-Agent/X-Mailer (Gmail sends neither). No header of the
      forwarded mail is copied: no X-Postroom-*, no other X- field.

    ``date`` (default: now) and ``rng`` make the output deterministic for tests.
    """
    if style not in STYLES:
        raise ValueError(f"unknown mail client style {style!r}; expected one of {STYLES}")
    rng = rng or random.Random()
    fwd = _as_email_message(forwarded)
    now = date or datetime.now().astimezone()
    if now.tzinfo is None:
        now = now.astimezone()
    domain = bare_address(agent_addr).rpartition("@")[2] or "localhost"
    agent_addr = bare_address(agent_addr)
    sender = _format_addr(agent_name, agent_addr)

    # Where it goes and what it answers.
    targets = _addresses(fwd, "Reply-To") or _addresses(fwd, "From")
    copies: list[tuple[str, str]] = []
    if reply_all:
        targets, copies = _reply_all(fwd, targets, agent_addr, style)
    to = ", ".join(_format_addr(n, a) for n, a in targets)
    cc = ", ".join(_format_addr(n, a) for n, a in copies)
    parent_ids = _msg_ids(_header(fwd, "Message-ID"))
    parent_id = parent_ids[0] if parent_ids else ""
    refs = _msg_ids(_header(fwd, "References"))
    if not refs:
        in_reply = _msg_ids(_header(fwd, "In-Reply-To"))
        refs = in_reply if len(in_reply) == 1 else []
    if parent_id:
        refs = [r for r in refs if r != parent_id] + [parent_id]
    subject = _reply_subject(_header(fwd, "Subject"), style)
    topic = _RE_PREFIX.sub("", _header(fwd, "Subject"), count=1)

    # What is quoted.
    authors = _addresses(fwd, "From")
    author_name, author_addr = authors[0] if authors else ("", "")
    when = _parent_datetime(fwd, now)
    original = original_text(fwd)
    reply_text = text.replace("\r\n", "\n").rstrip("\n")
    date_header = format_datetime(now)

    if style == "thunderbird":
        who = author_name or author_addr
        attribution = f"On {when.month}/{when.day}/{when:%y} {_clock(when)}, {who} wrote:"
        quoted = f"{attribution}\n{_quote(original)}\n" if original else f"{attribution}\n"
        body_text = f"{reply_text}\n\n{quoted}" if top_post else f"{quoted}\n{reply_text}\n\n"
        body_text = "\n".join(line.rstrip() for line in body_text.split("\n"))
        body = _text_part(body_text, cte="8bit", flowed=True)
        headers = [
            ("Message-ID", f"<{uuid.UUID(int=rng.getrandbits(128), version=4)}@{domain}>"),
            ("Date", date_header),
            ("MIME-Version", "1.0"),
            ("User-Agent", "Mozilla Thunderbird"),
            ("Subject", subject),
            ("Content-Language", "en-US"),
            ("To", to),
            ("Cc", cc),
            ("References", " ".join(refs)),
            ("From", sender),
            ("In-Reply-To", parent_id),
            (_CONTENT, ""),
        ]

    elif style == "apple":
        who = _format_addr(author_name, author_addr) if author_name else author_addr
        attribution = (
            f"On {_MONTHS[when.month - 1][:3]} {when.day}, {when.year}, "
            f"at {_clock(when)}, {who} wrote:"
        )
        quoted = _quote(f"{attribution}\n\n{original}", blank="> ")
        if top_post is False:
            body_text = f"{quoted}\n\n{reply_text}\n"
        else:
            body_text = f"{reply_text}\n\n{quoted}\n"
        charset = "us-ascii" if body_text.isascii() else "utf-8"
        body = _text_part(body_text, charset=charset, cte="quoted-printable")
        mid = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
        headers = [
            (_CONTENT, ""),
            ("Mime-Version", "1.0 (Mac OS X Mail 16.0 \\(3826.400.131.1.6\\))"),
            ("Subject", subject),
            ("From", sender),
            ("In-Reply-To", parent_id),
            ("Date", date_header),
            ("Message-Id", f"<{mid}@{domain}>"),
            ("References", " ".join(refs)),
            ("To", to),
            ("Cc", cc),
            ("X-Mailer", "Apple Mail (2.3826.400.131.1.6)"),
        ]

    elif style == "gmail":
        if author_name:
            who_text = f"{author_name} <{author_addr}>"
            who_html = (
                f'{html.escape(author_name)} &lt;<a href="mailto:{html.escape(author_addr)}">'
                f"{html.escape(author_addr)}</a>&gt;"
            )
        else:
            who_text = f"<{author_addr}>"
            who_html = (
                f'&lt;<a href="mailto:{html.escape(author_addr)}">'
                f"{html.escape(author_addr)}</a>&gt;"
            )
        stamp = (
            f"On {_DAYS[when.weekday()][:3]}, {_MONTHS[when.month - 1][:3]} {when.day}, "
            f"{when.year} at {_clock(when)}"
        )
        body_text = f"{reply_text}\n\n{stamp} {who_text} wrote:\n\n{_quote(original)}\n"
        reply_html = "".join(
            f"<div>{html.escape(line)}</div>" if line else "<div><br></div>"
            for line in reply_text.split("\n")
        )
        body_html = (
            f'<div dir="ltr">{reply_html}</div><br><div class="gmail_quote">'
            f'<div dir="ltr" class="gmail_attr">{stamp} {who_html} wrote:<br></div>'
            '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
            'border-left:1px solid rgb(204,204,204);padding-left:1ex">'
            f"{_html_lines(original)}</blockquote></div>\n"
        )
        body = _text_part(body_text, cte="quoted-printable")
        body.add_alternative(body_html, subtype="html", cte="quoted-printable")
        body.set_boundary("000000000000" + _random_token(rng, 16, "0123456789abcdef"))
        token = _random_token(rng, 40, string.ascii_letters + string.digits + "_-+=")
        headers = [
            ("MIME-Version", "1.0"),
            ("References", " ".join(refs)),
            ("In-Reply-To", parent_id),
            ("From", sender),
            ("Date", date_header),
            ("Message-ID", f"<CA{token}@{domain}>"),
            ("Subject", subject),
            ("To", to),
            ("Cc", cc),
            (_CONTENT, ""),
        ]

    else:  # outlook
        sent = (
            f"{_DAYS[when.weekday()]}, {_MONTHS[when.month - 1]} {when.day}, {when.year} "
            f"{_clock(when)}"
        )
        block = [
            ("From", _format_addr(author_name, author_addr) if author_addr else ""),
            ("Sent", sent),
            ("To", _header(fwd, "To")),
            ("Cc", _header(fwd, "Cc")),
            ("Subject", _header(fwd, "Subject")),
        ]
        block = [(k, v) for k, v in block if v]
        block_text = "\n".join(f"{k}: {v}" for k, v in block)
        body_text = f"{reply_text}\n\n{block_text}\n\n{original}\n"
        para = "".join(
            f"<p class=MsoNormal>{html.escape(line) or '<o:p>&nbsp;</o:p>'}</p>"
            for line in reply_text.split("\n")
        )
        block_html = "<br>".join(f"<b>{k}:</b> {html.escape(v)}" for k, v in block)
        body_html = (
            '<html xmlns:v="urn:schemas-microsoft-com:vml" '
            'xmlns:o="urn:schemas-microsoft-com:office:office" '
            'xmlns:w="urn:schemas-microsoft-com:office:word" '
            'xmlns:m="http://schemas.microsoft.com/office/2004/12/omml" '
            'xmlns="http://www.w3.org/TR/REC-html40"><head>'
            '<meta http-equiv=Content-Type content="text/html; charset=utf-8">'
            '<meta name=Generator content="Microsoft Word 15 (filtered medium)">'
            "<style><!--\np.MsoNormal, li.MsoNormal, div.MsoNormal\n"
            '\t{margin:0cm;\n\tfont-size:11.0pt;\n\tfont-family:"Aptos",sans-serif;}\n'
            "span.EmailStyle19\n\t{mso-style-type:personal-reply;}\n--></style></head>"
            '<body lang=EN-US link="#467886" vlink="#96607D" style=\'word-wrap:break-word\'>'
            f"<div class=WordSection1>{para}<p class=MsoNormal><o:p>&nbsp;</o:p></p>"
            "<div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>"
            f"<p class=MsoNormal>{block_html}<o:p></o:p></p></div>"
            "<p class=MsoNormal><o:p>&nbsp;</o:p></p>"
            f"<p class=MsoNormal>{_html_lines(original)}<o:p></o:p></p></div></body></html>\n"
        )
        body = _text_part(body_text, cte="quoted-printable")
        body.add_alternative(body_html, subtype="html", cte="quoted-printable")
        # Outlook derives both from the FILETIME clock: "----=_NextPart_000_0001_01DA9C87.9D52B210"
        # and "<000001da9c7f$3b8e4a10$b2aade30$@domain>".
        filetime = int((now.timestamp() + 11644473600) * 10_000_000)
        body.set_boundary(
            f"----=_NextPart_000_{rng.getrandbits(8):04X}_{filetime >> 32:08X}"
            f".{filetime & 0xFFFFFFFF:08X}"
        )
        body.preamble = "This is a multipart message in MIME format.\n"
        mid = (
            f"<00{rng.getrandbits(8):02x}{filetime >> 32:08x}${rng.getrandbits(32):08x}"
            f"${rng.getrandbits(32):08x}$@{domain}>"
        )
        headers = [
            ("From", sender),
            ("To", to),
            ("Cc", cc),
            ("In-Reply-To", parent_id),
            ("Subject", subject),
            ("Date", date_header),
            ("Message-ID", mid),
            ("MIME-Version", "1.0"),
            (_CONTENT, ""),
            ("X-Mailer", "Microsoft Outlook 16.0"),
            ("Thread-Topic", topic),
            ("Thread-Index", _outlook_thread_index(_header(fwd, "Thread-Index"), now, rng)),
            ("Content-Language", "en-us"),
        ]

    # A parent without Message-ID/References/Subject: the client leaves the field out.
    headers = [(k, v) for k, v in headers if k == _CONTENT or v]
    return _assemble(headers, body)


# --------------------------------------------------------------------------------------
# AgentClient
# --------------------------------------------------------------------------------------

DEFAULT_TEXTS: tuple[str, ...] = (
    "Hello,\n\nthank you for your message. I have looked into this and sorted it out;"
    " you will receive a confirmation shortly.\n\nBest regards,\n{agent}",
    "Hi,\n\nsorry for the trouble. I've passed this on to the right team and we will"
    " get back to you within one working day.\n\nKind regards,\n{agent}",
    "Dear customer,\n\nthanks for getting in touch. Could you send us your order or"
    " customer number so that I can find your account?\n\nMany thanks,\n{agent}",
    "Hello,\n\nI have checked your account and everything is in order now. Please let"
    " me know if anything else comes up.\n\nBest wishes,\n{agent}",
)


def is_auto_submitted(headers: Message) -> bool:
    """RFC 3834: an Auto-Submitted field other than "no" marks machine-made mail."""
    try:
        value = headers.get("Auto-Submitted")
    except Exception:
        return True
    return value is not None and str(value).strip().lower() != "no"


class AgentClient:
    """One simulated agent at their mail client.

    A thread logs in to the agent's IMAP inbox, waits with IDLE, and answers every
    forwarded customer mail (one with a Reply-To and no Auto-Submitted) after a random
    delay in ``reply_after`` seconds, with ``compose_reply`` in ``style`` and a random
    text from ``texts`` (``{agent}`` in a text is replaced by the agent's name). The
    reply goes out over submission (STARTTLS + AUTH, ``smtp_port``) and the forwarded
    mail is flagged \\Answered and \\Seen. Mail that is skipped (Postroom notices, mail
    without Reply-To) is left as it is.

    The thread reconnects when the server drops it and logs and goes on when one
    message cannot be answered. ``stop()`` returns within about ``poll`` seconds plus
    one round trip. ``reply_to_all_waiting()`` does one synchronous pass without the
    thread and without the delay, for tests.

    TLS: with ``cafile`` the server certificates are verified against it; without, a
    loopback host is accepted unverified and any other host is verified normally.
    """

    def __init__(
        self,
        host: str,
        imap_port: int,
        smtp_port: int,
        address: str,
        password: str,
        *,
        cafile: str | None = None,
        style: Style = "thunderbird",
        reply_after: tuple[float, float] = (3.0, 12.0),
        texts: Sequence[str] | None = None,
        name: str | None = None,
        imap_starttls: bool = True,
        poll: float = 1.0,
        timeout: float = 30.0,
        seed: int | None = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown mail client style {style!r}; expected one of {STYLES}")
        self.host = host
        self.imap_port = imap_port
        self.smtp_port = smtp_port
        self.address = bare_address(address)
        self.password = password
        self.cafile = cafile
        self.style: Style = style
        lo, hi = reply_after
        self.reply_after = (max(0.0, float(min(lo, hi))), max(0.0, float(max(lo, hi))))
        self.texts = list(texts) if texts else list(DEFAULT_TEXTS)
        local = self.address.partition("@")[0]
        self.name = name or " ".join(p.capitalize() for p in re.split(r"[._-]+", local) if p)
        self.imap_starttls = imap_starttls
        self.poll = poll
        self.timeout = timeout
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._done: set[tuple[int, int]] = set()  # (UIDVALIDITY, UID) answered or skipped
        self._attempts: dict[tuple[int, int], int] = {}
        self._inflight: set[tuple[int, int]] = set()  # being answered right now
        self._replied = 0
        self._skipped = 0
        self._errors = 0
        self.max_attempts = 3

    # -- counters ------------------------------------------------------------------

    @property
    def replied(self) -> int:
        with self._lock:
            return self._replied

    @property
    def skipped(self) -> int:
        with self._lock:
            return self._skipped

    @property
    def errors(self) -> int:
        with self._lock:
            return self._errors

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    # -- connections -----------------------------------------------------------------

    def _imap(self) -> tuple[IMAPClient, int]:
        """Logged-in client with INBOX selected, and the folder's UIDVALIDITY."""
        client = IMAPClient(self.host, port=self.imap_port, ssl=False, timeout=self.timeout)
        try:
            if self.imap_starttls and client.has_capability("STARTTLS"):
                client.starttls(tls_context(self.host, self.cafile))
            client.login(self.address, self.password)
            info = client.select_folder("INBOX")
            return client, int(info.get(b"UIDVALIDITY", 0))
        except BaseException:
            _close(client)
            raise

    def _send(self, reply: EmailMessage) -> None:
        with smtplib.SMTP(
            self.host, self.smtp_port, local_hostname=EHLO_NAME, timeout=self.timeout
        ) as smtp:
            smtp.ehlo()
            smtp.starttls(context=tls_context(self.host, self.cafile))
            smtp.ehlo()
            smtp.login(self.address, self.password)
            eight_bit = has_8bit(reply.as_bytes())
            opts = ["BODY=8BITMIME"] if eight_bit and smtp.has_extn("8bitmime") else []
            smtp.send_message(reply, from_addr=self.address, mail_options=opts)

    # -- one pass ------------------------------------------------------------------

    def _candidates(
        self, client: IMAPClient, uidvalidity: int, known: Sequence[int] = ()
    ) -> list[int]:
        """UIDs of unanswered forwarded mail not handled yet (``known`` UIDs are taken as
        already looked at); marks the other new mail as skipped."""
        uids = client.search(["UNANSWERED", "UNDELETED"])
        with self._lock:
            fresh = [u for u in uids if (uidvalidity, u) not in self._done and u not in known]
        if not fresh:
            return []
        wanted: list[int] = []
        for uid, data in client.fetch(fresh, ["BODY.PEEK[HEADER]"]).items():
            raw = data.get(b"BODY[HEADER]")
            if raw is None:  # expunged meanwhile
                continue
            try:
                hdr = BytesHeaderParser(policy=policy.default).parsebytes(raw)
                forwarded = bool(_addresses(hdr, "Reply-To")) and not is_auto_submitted(hdr)
            except Exception:
                log.exception("agent %s: unreadable header of UID %s", self.address, uid)
                forwarded = False
            if forwarded:
                wanted.append(uid)
            else:
                with self._lock:
                    self._done.add((uidvalidity, uid))
                    self._skipped += 1
        return sorted(wanted)

    def _answer(self, client: IMAPClient, uidvalidity: int, uid: int) -> EmailMessage | None:
        """Reply to one mail. IMAP trouble propagates (the caller reconnects); trouble
        with this message or with sending is logged and retried up to max_attempts."""
        key = (uidvalidity, uid)
        with self._lock:
            if key in self._done or key in self._inflight:
                return None
            self._inflight.add(key)
        try:
            return self._answer_claimed(client, key)
        finally:
            with self._lock:
                self._inflight.discard(key)

    def _answer_claimed(self, client: IMAPClient, key: tuple[int, int]) -> EmailMessage | None:
        uid = key[1]
        fetched = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {})
        raw = fetched.get(b"BODY[]")
        if raw is None:
            with self._lock:
                self._done.add(key)
            return None
        try:
            forwarded = email.message_from_bytes(raw, policy=policy.default)
            text = self._rng.choice(self.texts).replace("{agent}", self.name)
            reply = compose_reply(
                forwarded,
                agent_addr=self.address,
                agent_name=self.name,
                style=self.style,
                text=text,
            )  # no seeded rng here: Message-IDs must differ between runs with one seed
            self._send(reply)
        except Exception:
            with self._lock:
                self._errors += 1
                tries = self._attempts[key] = self._attempts.get(key, 0) + 1
                if tries >= self.max_attempts:
                    self._done.add(key)
            log.exception(
                "agent %s: could not answer UID %s (attempt %s)", self.address, uid, tries
            )
            return None
        with self._lock:
            self._done.add(key)
            self._attempts.pop(key, None)
            self._replied += 1
        log.info(
            "agent %s answered UID %s as %s: %s", self.address, uid, self.style, reply["Message-ID"]
        )
        client.add_flags([uid], [b"\\Answered", b"\\Seen"])
        return reply

    def reply_to_all_waiting(self, *, expect: int = 0, timeout: float = 10.0) -> list[EmailMessage]:
        """Answer every forwarded mail waiting in the inbox now, without delay; return
        the replies sent. With ``expect``, first wait (up to ``timeout`` s) until at
        least that many are waiting, since delivery into the mailbox is asynchronous."""
        client, uidvalidity = self._imap()
        try:
            deadline = time.monotonic() + timeout
            candidates = self._candidates(client, uidvalidity)
            while len(candidates) < expect and time.monotonic() < deadline:
                time.sleep(0.2)
                client.noop()
                candidates = self._candidates(client, uidvalidity)
            sent = []
            for uid in candidates:
                reply = self._answer(client, uidvalidity, uid)
                if reply is not None:
                    sent.append(reply)
            return sent
        finally:
            _logout(client)

    # -- the thread ------------------------------------------------------------------

    def _due(self) -> float:
        return time.monotonic() + self._rng.uniform(*self.reply_after)

    def _session(self, client: IMAPClient, uidvalidity: int) -> None:
        pending: dict[int, float] = {}
        use_idle = client.has_capability("IDLE")
        while not self._stop.is_set():
            for uid in self._candidates(client, uidvalidity, known=tuple(pending)):
                pending[uid] = self._due()
            now = time.monotonic()
            for uid in sorted(u for u, due in pending.items() if due <= now):
                if self._stop.is_set():
                    return
                pending.pop(uid)
                self._answer(client, uidvalidity, uid)
                with self._lock:  # a failed send is retried after a pause
                    if (uidvalidity, uid) not in self._done:
                        pending[uid] = time.monotonic() + 5.0
            if use_idle:
                self._idle(client, pending)
            else:
                self._stop.wait(self.poll)
                client.noop()

    def _idle(self, client: IMAPClient, pending: dict[int, float]) -> None:
        """IDLE until new mail, a reply falls due, stop(), or 10 seconds."""
        client.idle()
        started = time.monotonic()
        while not self._stop.is_set():
            if client.idle_check(timeout=self.poll):
                break
            now = time.monotonic()
            # 10 s, not minutes: Dovecot never announces mail that arrived between our
            # last look and the start of IDLE (docs/decisions/0006-idle-race.md).
            if any(due <= now for due in pending.values()) or now - started > 10:
                break
        client.idle_done()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            client = None
            try:
                client, uidvalidity = self._imap()
                backoff = 0.5
                self._session(client, uidvalidity)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._count("_errors")
                log.warning(
                    "agent %s: connection problem (%s: %s); reconnecting in %.1fs",
                    self.address,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                if client is not None:
                    _close(client)
                    client = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if client is not None:
                    _logout(client)

    def start(self) -> AgentClient:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"sim-agent-{self.address}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _close(client: IMAPClient) -> None:
    """Drop a connection without a LOGOUT round trip (it may be dead already)."""
    with contextlib.suppress(Exception):
        client.shutdown()


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        _close(client)
