"""Loop protection: is this mail from a person, or from a machine that must not be answered?

``classify()`` sorts a message into ``human``, ``auto_reply`` (out-of-office, vacation,
challenge-response, read receipts), ``bounce`` (delivery reports, ARF), ``list`` (mailing
list and bulk traffic) or ``loop`` (X-Loop with no list behind it), recording which signal
decided.  It is Zammad's ``auto_response_check`` list (X-Loop, Precedence, Auto-Submitted,
X-Auto-Response-Suppress) plus bounce detection (RFC 3464 reports, the null reverse-path,
MAILER-DAEMON) and subject heuristics for the auto-replies that carry no header at all.

Rules are ordered data (``_RULES``), most specific first.  Bounces come before
auto-replies on purpose: Exim, Google Groups and Exchange put ``Auto-Submitted:
auto-replied`` on their bounces too (field bug B-13; ``bounceparser-non-autoreply.msg``).

Postroom never auto-answers anything that is not ``human`` (RFC 3834 §2), and never
forwards an agent's non-human mail to a customer.  Because of the second use the rules
avoid body text: an agent who writes "I'm out of the office tomorrow" in a real reply
must not be dead-boxed.

``is_own()`` recognises mail Postroom itself sent (field bug B-4).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Literal

from postroom.core.headers import (
    address_list,
    msg_ids,
    raw_header_fields,
    raw_header_values,
    values_text,
)

__all__ = ["Kind", "Verdict", "classify", "is_own"]

Kind = Literal["human", "auto_reply", "bounce", "list", "loop"]

_MAX_PARTS = 500


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str

    @property
    def automatic(self) -> bool:
        return self.kind != "human"


@dataclass(frozen=True)
class _Facts:
    """Everything the rules look at, read once and tolerant of broken headers."""

    content_type: str
    report_type: str
    part_types: frozenset[str]
    subject: str
    from_addr: str
    from_name: str
    from_raw: str
    null_return_path: bool
    auto_submitted: str | None
    precedence: str
    has: frozenset[str]  # lowercased names of the headers present


def _facts(msg: Message) -> _Facts:
    own_type: str | None = None  # the message's own type, if reading it did not raise
    try:
        content_type = own_type = msg.get_content_type()
        # The report type only where the Content-Type can name one (`_may_report`).
        report_type = str(msg.get_param("report-type", "") or "").lower() if _may_report(msg) else ""
    except Exception:  # noqa: BLE001 - a broken Content-Type is "no report"
        content_type, report_type = "text/plain", ""
    part_types: set[str] = set()
    if not msg.is_multipart():
        # A single part (most mail): `walk()` gives the message alone, whose type was read
        # above; one that raised there raises again and gives no type (decision 0066).
        if own_type is not None:
            part_types.add(own_type)
    else:
        try:
            for index, part in enumerate(msg.walk()):
                if index >= _MAX_PARTS:
                    break
                part_types.add(part.get_content_type())
        except Exception:  # noqa: BLE001 - a pathological MIME tree says nothing about loops
            pass
    # The fields the rules read, in one pass over the header (`raw_header_values` per
    # name went over all of it for each: issue 9); the same values, in the same order.
    values = raw_header_fields(msg, _READ)
    has = {name.lower() for name in msg}
    froms = [pair for value in values["from"] for pair in address_list(value)]
    from_name, from_addr = froms[0] if froms else ("", "")
    auto = values_text(msg, values["auto-submitted"])
    return _Facts(
        content_type=content_type,
        report_type=report_type,
        part_types=frozenset(part_types),
        subject=values_text(msg, values["subject"]) or "",
        from_addr=from_addr,
        from_name=from_name.lower(),
        from_raw=" ".join(values["from"]).lower(),
        # RFC 5321 §4.5.5: notifications (DSNs, and RFC 3834 §3.3 auto-replies) use <>.
        null_return_path=any(re.fullmatch(r"\s*<\s*>\s*", rp) for rp in values["return-path"]),
        auto_submitted=auto.split(";", 1)[0].strip().lower() if auto is not None else None,
        precedence=(values_text(msg, values["precedence"]) or "").lower(),
        has=frozenset(has),
    )


_READ = ("from", "return-path", "auto-submitted", "subject", "precedence")


def _may_report(msg: Message) -> bool:
    """Can ``msg.get_param("report-type")`` give anything but its default "" or raise?
    Not when no Content-Type field holds the parameter's name (a token: never encoded, so
    it is in the raw text as it is), an encoded-word (which the header parser decodes
    inside quoted strings, where a decoded ``;`` could start a parameter) or a ``*``
    (RFC 2231 parameters, whose decoding can raise: then the Content-Type counts as
    broken). Then `get_param` is not asked (decision 0066); any doubt asks it."""
    for value in raw_header_values(msg, "Content-Type"):
        if "*" in value or "=?" in value or "report-type" in value.lower():
            return True
    return False


# --------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------

_DAEMON_LOCAL = re.compile(
    r"^(mailer-daemon|mailer_daemon|maildaemon|mail-daemon|mdaemon|postmaster|post_master|"
    r"mail\.?delivery|mailerdaemon|bounce|bounces)$"
)
_NO_REPLY_LOCAL = re.compile(r"^(no-?reply|do-?not-?reply)$")
_DAEMON_NAME = re.compile(r"mail delivery (subsystem|system|service)|mailer-daemon|mail administrator")

# Subjects MTAs give their reports.  Only trusted together with another machine signal: a
# parcel company's customer may well write "Undeliverable parcel".
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery status notification|delivery (status )?notification|"
    r"mail delivery (failed|failure|system)|returned mail|failure notice|delivery failure|"
    r"non[- ]?deliver|nondeliverable|delivery has failed|could not be delivered|"
    r"delivery (problem|error|report)|message not delivered|warning: could not send|"
    r"mail system error|returned to sender|delayed mail|delivery delayed|"
    r"unzustellbar|nicht zustellbar|non remis|no se puede entregar|"
    r"配信できません|メールエラー|不達|未達|退信|无法投递",
    re.I,
)

# Out-of-office and auto-reply subjects seen in the wild, in the languages of Outlook,
# Exchange, Gmail, Notes and common webmailers.  Phrases are matched anywhere; bare
# words only at the start (after Re:/AW:/[...] prefixes), where a person rarely puts them.
_AUTO_PHRASES = re.compile(
    r"automatic reply|automatic response|automated (reply|response)|auto[- ]?reply|"
    r"auto[- ]?response|auto[- ]?respons\b|autoresponder|out of (the )?office|out-of-office|"
    r"automatische antwort|abwesenheitsnotiz|ab(wesen)?heits?(notiz|meldung)|au(ss|ß)er haus|"
    r"nicht im b(ü|ue)ro|automatisch antwoord|afwezigheidsbericht|r(é|e)ponse automatique|"
    r"absence du bureau|absent du bureau|respuesta autom(á|a)tica|fuera de la oficina|"
    r"risposta automatica|fuori ufficio|resposta autom(á|a)tica|fora do escrit(ó|o)rio|"
    r"autosvar|automatisk svar|automatiskt svar|fr(å|a)nvaro|frav(æ|ae)r|"
    r"automaattinen vastaus|automatyczna odpowied|odpowied(ź|z) automatyczna|"
    r"automatick(á|a) odpov(ě|e)(ď|d)|automatikus v(á|a)lasz|otomatik yan[ıi]t|"
    r"automatisk\w* atbilde|automātisk\w* atbilde|automatinis atsakymas|"
    r"автоответ|автоматический ответ|自動応答|自動返信|自动回复|自動回覆|자동\s*응답",
    re.I,
)
_PREFIX = r"^\s*(?:(?:re|aw|sv|vs|antw|odp|r|ref|tr|wg|fwd?)\s*:\s*|\[[^\]]*\]\s*)*"
_AUTO_LEADING = re.compile(
    _PREFIX + r"(?:auto\s*:|(?:autoreply|abwesend|vacation|on vacation|on holiday|away until|"
    r"away from (?:my|the) (?:desk|office|mail)|i am away|i'm away|ooo)\b)",
    re.I,
)
# Outlook's read receipts ("Read: <subject>") when they come as TNEF rather than RFC 8098.
_READ_RECEIPT = re.compile(
    r"^\s*(read|not read|gelesen|nicht gelesen|lu|non lu|le(í|i)do|letto|gelezen|"
    r"l(ä|a)st|l(æ|ae)st|luettu|p(ř|r)e(č|c)teno|odczytan[ae]|прочитано)\s*:",
    re.I,
)

_AUTOREPLY_HEADERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-autogenerated",
    "x-autoreply-from",
    "x-mail-autoreply",
    "x-cr-hashedpuzzle",  # not sent by people: Microsoft challenge-response
)
_LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "list-subscribe",
    "list-owner",
    "list-archive",
    "mailing-list",
    "x-mailman-version",
    "x-mailing-list",
)


def _daemon_sender(f: _Facts) -> bool:
    local = f.from_addr.rpartition("@")[0]
    return bool(_DAEMON_LOCAL.match(local) or _DAEMON_NAME.search(f.from_name))


def _mailer_daemon(f: _Facts) -> bool:
    # Matched on the raw From: "MAILER-DAEMON", "MAILER-DAEMON <>" carry no addr-spec.
    return bool(re.search(r"mailer[-_]?daemon", f.from_raw))


def _null_from(f: _Facts) -> bool:
    return bool(re.fullmatch(r"[^<]*<\s*>\s*", f.from_raw)) and not f.from_addr


def _auto_subject(f: _Facts) -> bool:
    return bool(_AUTO_PHRASES.search(f.subject) or _AUTO_LEADING.match(f.subject))


_Rule = tuple[Kind, str, Callable[[_Facts], bool]]

_RULES: tuple[_Rule, ...] = (
    # --- bounces: delivery reports, whatever else they claim to be -----------------
    ("bounce", "multipart/report; report-type=delivery-status (RFC 3464)",
     lambda f: f.report_type == "delivery-status"),
    ("bounce", "message/delivery-status part (RFC 3464)",
     lambda f: "message/delivery-status" in f.part_types),
    ("bounce", "ARF feedback report (RFC 5965)",
     lambda f: f.report_type == "feedback-report" or "message/feedback-report" in f.part_types),
    ("bounce", "X-Failed-Recipients (Exim)", lambda f: "x-failed-recipients" in f.has),
    ("bounce", "sent by MAILER-DAEMON", _mailer_daemon),
    ("bounce", "delivery-failure subject from a mail system",
     lambda f: bool(_BOUNCE_SUBJECT.search(f.subject))
     and (f.null_return_path or _daemon_sender(f) or f.auto_submitted not in (None, "no")
          or bool(_NO_REPLY_LOCAL.match(f.from_addr.rpartition("@")[0])))),
    ("bounce", "sent by a mail system with a null reverse-path",
     lambda f: (_daemon_sender(f) or _null_from(f)) and f.null_return_path),
    # --- auto-replies ---------------------------------------------------------------
    ("auto_reply", "read receipt (RFC 8098 MDN)",
     lambda f: f.report_type == "disposition-notification"
     or "message/disposition-notification" in f.part_types),
    ("auto_reply", "Auto-Submitted (RFC 3834)", lambda f: f.auto_submitted not in (None, "no")),
    ("auto_reply", "auto-reply header (X-Autoreply & co.)",
     lambda f: any(h in f.has for h in _AUTOREPLY_HEADERS)),
    ("auto_reply", "Precedence: auto_reply", lambda f: f.precedence == "auto_reply"),
    # --- lists and bulk ---------------------------------------------------------------
    ("list", "List-* header (RFC 2369/2919)", lambda f: any(h in f.has for h in _LIST_HEADERS)),
    ("list", "Precedence: list", lambda f: f.precedence == "list"),
    ("auto_reply", "Precedence: bulk/junk with an auto-reply subject or null reverse-path",
     lambda f: f.precedence in ("bulk", "junk") and (f.null_return_path or _auto_subject(f))),
    ("list", "Precedence: bulk/junk", lambda f: f.precedence in ("bulk", "junk")),
    # --- loops --------------------------------------------------------------------------
    ("loop", "X-Loop without a mailing list", lambda f: "x-loop" in f.has),
    # --- header-less auto-replies -----------------------------------------------------
    ("auto_reply", "null reverse-path (RFC 5321 §4.5.5: notifications only)",
     lambda f: f.null_return_path),
    ("auto_reply", "auto-reply subject", _auto_subject),
    ("auto_reply", "read-receipt subject on a TNEF message",
     lambda f: bool(_READ_RECEIPT.match(f.subject))
     and (f.content_type == "application/ms-tnef" or "application/ms-tnef" in f.part_types)),
)
# X-Auto-Response-Suppress is deliberately no rule of its own: Outlook/Exchange put it on
# ordinary mail (meeting responses, mail sent by apps), so alone it says nothing.  In the
# corpus it only ever comes with a null reverse-path or an auto-reply subject, which the
# rules above catch.


def classify(msg: Message) -> Verdict:
    """The kind of sender behind ``msg``, and the first signal that said so; never raises."""
    f = _facts(msg)
    for kind, reason, test in _RULES:
        if test(f):
            return Verdict(kind, reason)
    return Verdict("human", "no automatic-mail signal")


def is_own(msg: Message, own_domains: str | Iterable[str]) -> bool:
    """True for mail Postroom itself sent (field bug B-4): a self-addressed mail, a BCC to
    ourselves, our forward bounced back through an agent's auto-forward.

    Signals: an ``X-Postroom-Interaction`` header (we add it only to copies we forward;
    incoming ones are stripped before anything is passed on), or a Message-ID whose
    right-hand side is one of ``own_domains``.  Those must be domains only Postroom mints
    Message-IDs in (``site.message_id_domain``): a mail domain the company's own mail
    server also uses would make colleagues' mail look like ours.
    """
    domains = {own_domains} if isinstance(own_domains, str) else set(own_domains)
    domains = {d.strip().lower() for d in domains if d and d.strip()}
    if raw_header_values(msg, "X-Postroom-Interaction"):
        return True
    for value in raw_header_values(msg, "Message-ID"):
        for mid in msg_ids(value):
            if mid[1:-1].rpartition("@")[2].lower() in domains:
                return True
    return False
