"""Correlation tokens: how an agent's reply finds its way back to its interaction.

Postroom forwards a customer's mail to an agent with ``Reply-To: outbound+TOKEN@domain``,
``Message-ID: <TOKEN.SEQ@domain>`` and a ``[PR:TOKEN]`` subject tag.  Real mail clients
(Outlook, Gmail, Apple Mail, Thunderbird) drop custom ``X-`` headers when replying, so the
token has to ride in places they *do* keep: the recipient address, In-Reply-To/References
(RFC 5322 §3.6.4) and the subject.

A token is ``base32(guid.bytes + HMAC-SHA256(key, guid.bytes + bound + agent)[:8])``,
lowercase without padding: 39 characters of ``[a-z2-7]``.  The key is derived from the
site's secrets per purpose (``core.keys``); ``bound`` ties a token to one round of
something, such as one approval request, so that an answer to an earlier round cannot
decide a later one.  Base32 survives MTAs that case-fold
addresses (RFC 5321 §2.4 allows it for local parts) and fits a local part (RFC 5321 §4.5.3.1.1:
64 octets).  The guid finds the interaction; the MAC, checked against the agent the mail was
delivered to, proves the token was minted for that agent (field bug B-12: a stranger who
replays a token must not attach to someone else's conversation).

This module owns minting, parsing and verifying tokens and extracting them from addresses,
Message-IDs and subjects.  Deciding what to do with a candidate (is the sender a
participant?) belongs to the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

__all__ = [
    "TOKEN_LENGTH",
    "ParsedToken",
    "candidate_tokens",
    "find_tokens_in_text",
    "forward_message_id",
    "mint_token",
    "parse_token",
    "reply_address",
    "strip_subject_tag",
    "strip_tokens",
    "subject_tag",
    "token_from_address",
    "token_from_message_id",
    "token_from_subject",
    "verify_token",
]

_GUID_BYTES = 16
_MAC_BYTES = 8
# 24 bytes = 192 bits -> ceil(192 / 5) = 39 base32 characters once the "=" padding is dropped.
TOKEN_LENGTH = 39
_TOKEN_CHARS = "[a-z2-7]"
_TOKEN_RE = re.compile(rf"^{_TOKEN_CHARS}{{{TOKEN_LENGTH}}}$")
# Not preceded/followed by another base32 character, so a longer run is not mistaken for one.
_TOKEN_IN_TEXT = rf"(?<![a-z2-7]){_TOKEN_CHARS}{{{TOKEN_LENGTH}}}(?![a-z2-7])"
_MESSAGE_ID_RE = re.compile(rf"^<?\s*({_TOKEN_CHARS}{{{TOKEN_LENGTH}}})\.(\d+)@[^<>\s]+\s*>?$", re.I)
_SUBJECT_TAG_RE = re.compile(rf"\[PR:({_TOKEN_CHARS}{{{TOKEN_LENGTH}}})\]", re.I)
_SUBJECT_TAG_STRIP_RE = re.compile(rf"\s*\[PR:{_TOKEN_CHARS}{{{TOKEN_LENGTH}}}\]", re.I)


@dataclass(frozen=True)
class ParsedToken:
    guid: uuid.UUID
    mac: bytes


def _mac(key: bytes, guid: uuid.UUID, agent: str, bound: bytes) -> bytes:
    # The agent is lowercased: domains are case-insensitive (RFC 5321 §2.4) and every
    # mailbox we know treats local parts that way too.  ``bound`` is length-prefixed so
    # that no (bound, agent) pair can be spelt as another.
    if len(bound) > 0xFFFF:
        raise ValueError("bound is too long")
    message = guid.bytes + len(bound).to_bytes(2, "big") + bound + agent.lower().encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def mint_token(key: bytes, guid: uuid.UUID, agent: str, *, bound: bytes = b"") -> str:
    raw = guid.bytes + _mac(key, guid, agent, bound)
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def parse_token(token: str) -> ParsedToken | None:
    """Decode a token (any case); None for anything that is not exactly a canonical token."""
    if not isinstance(token, str):
        return None
    norm = token.strip().lower()
    if not _TOKEN_RE.match(norm):
        return None
    try:
        raw = base64.b32decode(norm.upper() + "=")
    except (binascii.Error, ValueError):
        return None
    # The last character carries 2 data bits and 3 padding bits; reject the 7 non-canonical
    # spellings so that changing any character of a token can never decode to the same bytes.
    if len(raw) != _GUID_BYTES + _MAC_BYTES or base64.b32encode(raw).decode().rstrip("=").lower() != norm:
        return None
    return ParsedToken(guid=uuid.UUID(bytes=raw[:_GUID_BYTES]), mac=raw[_GUID_BYTES:])


def verify_token(keys: bytes | Sequence[bytes], token: str, agent: str, *, bound: bytes = b"") -> bool:
    """True if ``token`` was minted for ``agent`` (and ``bound``) under any of ``keys``
    (one key, or a key ring's keys for one purpose: the old ones verify during rotation)."""
    parsed = parse_token(token)
    if parsed is None:
        return False
    ring = (keys,) if isinstance(keys, bytes) else tuple(keys)
    # Every key is tried, so the time taken does not tell which one matched.
    found = False
    for key in ring:
        found |= hmac.compare_digest(parsed.mac, _mac(key, parsed.guid, agent, bound))
    return found


def _split_address(address: str) -> tuple[str, str] | None:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    return local, domain


def reply_address(outbound: str, token: str) -> str:
    """``outbound+TOKEN@domain`` (RFC 5233 subaddressing; Postfix ``recipient_delimiter = +``)."""
    parts = _split_address(outbound)
    if parts is None or parse_token(token) is None:
        raise ValueError("reply_address needs an addr-spec and a valid token")
    local, domain = parts
    return f"{local}+{token.lower()}@{domain}"


def token_from_address(address: str, outbound: str) -> str | None:
    """The token in ``outbound+TOKEN@domain``; the base address is compared case-insensitively."""
    if not isinstance(address, str) or not isinstance(outbound, str):
        return None
    if "<" in address:
        address = parseaddr(address)[1]
    got, want = _split_address(address), _split_address(outbound)
    if got is None or want is None:
        return None
    local, domain = got
    base_local, base_domain = want
    if domain.lower() != base_domain.lower():
        return None
    prefix = base_local.lower() + "+"
    if not local.lower().startswith(prefix):
        return None
    detail = local[len(prefix) :]
    return detail.lower() if parse_token(detail) is not None else None


def forward_message_id(token: str, seq: int, domain: str) -> str:
    """``<TOKEN.SEQ@domain>``: the Message-ID of the copy forwarded to the agent.

    Every client copies it into In-Reply-To/References of the reply (RFC 5322 §3.6.4), so
    the token survives even when the agent replies to the wrong address.
    """
    if parse_token(token) is None or seq < 0 or not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        raise ValueError("forward_message_id needs a valid token, seq >= 0 and a domain")
    return f"<{token.lower()}.{seq}@{domain}>"


def token_from_message_id(mid: str | None) -> str | None:
    if not mid:
        return None
    m = _MESSAGE_ID_RE.match(mid.strip())
    if m is None:
        return None
    token = m.group(1).lower()
    return token if parse_token(token) is not None else None


def subject_tag(token: str) -> str:
    if parse_token(token) is None:
        raise ValueError("subject_tag needs a valid token")
    return f"[PR:{token.lower()}]"


def strip_subject_tag(subject: str) -> str:
    return " ".join(_SUBJECT_TAG_STRIP_RE.sub("", subject).split())


def _subject_tokens(subject: str | None) -> list[str]:
    """Every valid tag in the subject, last (most recently appended) first."""
    if not subject:
        return []
    found = [m.group(1).lower() for m in _SUBJECT_TAG_RE.finditer(subject)]
    return [t for t in reversed(found) if parse_token(t) is not None]


def token_from_subject(subject: str | None) -> str | None:
    tokens = _subject_tokens(subject)
    return tokens[0] if tokens else None


def candidate_tokens(
    *,
    recipients: list[str],
    outbound: str,
    in_reply_to: str | None,
    references: list[str],
    subject: str | None,
) -> list[tuple[str, str]]:
    """(source, token) pairs in order of trust, each token once (its most trusted source).

    Order (field bug B-11): the recipient plus-address, which the agent's client cannot
    lose (pass Delivered-To / X-Original-To / To / Cc in that order); In-Reply-To; References
    newest first (RFC 5322 §3.6.4 appends, so the last entry is the direct parent); the
    subject tag, which survives forwards through systems that strip References.  Every
    candidate still has to pass ``verify_token`` for the delivering agent.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(source: str, token: str | None) -> None:
        if token is not None and token not in seen:
            seen.add(token)
            out.append((source, token))

    for address in recipients:
        add("recipient", token_from_address(address, outbound))
    add("in-reply-to", token_from_message_id(in_reply_to))
    for mid in reversed(references):
        add("references", token_from_message_id(mid))
    for token in _subject_tokens(subject):
        add("subject", token)
    return out


def find_tokens_in_text(text: str) -> list[str]:
    """Every valid token appearing anywhere in ``text`` (used to scrub outgoing headers)."""
    return [t for t in re.findall(_TOKEN_IN_TEXT, text.lower()) if parse_token(t) is not None]


# An address whose local part ends in "+TOKEN" (ours: outbound+TOKEN@; RFC 5233), a Message-ID
# of a forward (<TOKEN.N@domain>), a subject tag, and any token left after those.  Every
# pattern is anchored on the token itself and bounded, so a 150 KB line without spaces
# costs linear time (an unanchored "[local-part chars]*\+" was quadratic on it).
_PLUS_TOKEN_RE = re.compile(rf"\+({_TOKEN_CHARS}{{{TOKEN_LENGTH}}})@", re.I)
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.!#$%&'*/=?^_`{|}~-")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9.-]{0,253}[A-Za-z0-9]")
_LOCAL_PART_MAX = 64  # RFC 5321 §4.5.3.1.1
_TAG_RE = re.compile(rf"[ \t]?\[PR:({_TOKEN_CHARS}{{{TOKEN_LENGTH}}})\]", re.I)
_TOKEN_MID_RE = re.compile(rf"<?\b({_TOKEN_CHARS}{{{TOKEN_LENGTH}}})\.\d{{1,9}}@[A-Za-z0-9.-]{{0,253}}[A-Za-z0-9]>?", re.I)
_BARE_TOKEN_RE = re.compile(_TOKEN_IN_TEXT, re.I)


def _replace_plus_addresses(text: str, replacement: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _PLUS_TOKEN_RE.finditer(text):
        if m.start() < pos or parse_token(m.group(1)) is None:
            continue
        start = m.start()
        while start > pos and m.start() - start < _LOCAL_PART_MAX and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        domain = _DOMAIN_RE.match(text, m.end())
        end = domain.end() if domain else m.end()
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def strip_tokens(text: str, *, replacement: str) -> str:
    """``text`` with every correlation token taken out, for mail that leaves the centre.

    Agents' replies quote the forward they answer (attribution lines, Outlook's header
    block): ``outbound+TOKEN@domain`` becomes ``replacement`` (the box's own address),
    a forward's Message-ID and a subject tag disappear, and so does any other token.
    Text without a valid token comes back unchanged.
    """

    def gone(m: re.Match[str]) -> str:
        return "" if parse_token(m.group(1)) is not None else m.group(0)

    text = _replace_plus_addresses(text, replacement)
    text = _TAG_RE.sub(gone, text)
    text = _TOKEN_MID_RE.sub(gone, text)
    return _BARE_TOKEN_RE.sub(lambda m: "" if parse_token(m.group(0)) else m.group(0), text)
