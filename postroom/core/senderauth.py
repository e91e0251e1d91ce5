"""Does the site's own mail server vouch for the sender of a mail? (decision 0014)

A From header is whatever the writer typed.  Postroom acts on mail in its outbound box
(an agent's reply goes to a customer, an approver's answer releases one) only when the
site's mail server says who sent it.  Three kinds of evidence, each switched on per site:

* **Authenticated submission, in Received** (Postfix ``smtpd_sasl_authenticated_header =
  yes``; Sendmail and others write the same comment): the server that took the mail from
  the writer's client adds ``(Authenticated sender: LOGIN)`` and an RFC 3848 protocol
  (``with ESMTPSA``) to the Received header it prepends.
* **Exchange**: ``X-MS-Exchange-Organization-AuthAs: Internal``, which Exchange's header
  firewall removes from mail that does not come from an authenticated internal source.
* **DMARC**: an ``Authentication-Results`` (RFC 8601) from a trusted authserv-id saying
  ``dmarc=pass`` for the From domain.  RFC 8601 §5 makes the site's border MTA delete any
  such header claiming its own authserv-id that it did not add; only the topmost is read.
  This proves the domain, not the person: weaker than the other two.

Anyone can put any header into the mail they submit, so only headers the site's servers
added count.  Servers prepend Received headers (RFC 5321 §4.4), so those at the top are
theirs; the walk goes down from the top through hops that stay inside the site (LMTP
delivery, or a relay whose server-verified name is one of the site's servers) to the
*entry hop*, where the mail came in from a client.  That hop alone is read; everything
below it was written by the sender and means nothing.  Postfix writes the client's
verified name in the comment ``(NAME [ADDR])``; the HELO word before it is the client's
own claim and is never trusted.

Pure: headers in, a verdict out.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from email.message import Message

from postroom.core.headers import raw_header_values

__all__ = [
    "Hop",
    "SenderAuthPolicy",
    "Vouched",
    "dmarc_pass_domain",
    "entry_hop",
    "parse_received",
    "vouch",
]

# RFC 3848 (and RFC 6531's UTF8 variants): the "A" means the client authenticated.
_AUTHENTICATED_PROTOCOLS = frozenset({"ESMTPA", "ESMTPSA", "LMTPA", "LMTPSA", "UTF8SMTPA", "UTF8SMTPSA"})
# Delivery inside the server: nothing outside the site speaks LMTP to the store (RFC 2033 §1).
_INTERNAL_PROTOCOLS = frozenset({"LMTP", "LMTPS", "LMTPA", "LMTPSA"})
_CLAUSES = frozenset({"from", "by", "via", "with", "id", "for"})
# Exactly as Postfix writes it; a HELO word cannot contain the space.
_AUTHENTICATED_SENDER = re.compile(r"^Authenticated sender: ([^\s()]+)$")
_VERIFIED_CLIENT = re.compile(r"^([^\s\[\]()]*)\s*\[([^\]\s]+)\]")
_MAX_HOPS = 50


@dataclass(frozen=True)
class SenderAuthPolicy:
    """The site's ``[sender_auth]``: which evidence its mail server adds."""

    required: bool = True
    servers: frozenset[str] = field(default_factory=frozenset)  # lower-case host names
    exchange: bool = False
    authserv_ids: frozenset[str] = field(default_factory=frozenset)  # lower-case


@dataclass(frozen=True)
class Vouched:
    ok: bool
    how: str  # for the journal: what vouched, or why nothing did


@dataclass(frozen=True)
class Hop:
    """One Received header (RFC 5321 §4.4), as far as the checks need it."""

    by: str | None = None
    protocol: str | None = None
    helo: str | None = None
    client_name: str | None = None  # the server-verified name in "(NAME [ADDR])"
    client_addr: str | None = None
    authenticated: str | None = None  # the login in "(Authenticated sender: LOGIN)"


def _tokens(value: str) -> list[tuple[str, str]] | None:
    """("word" | "comment" | "angle" | "quoted" | "end", text) items; None if a comment,
    quoted string or angle address never closes (broken or hostile: read nothing)."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c.isspace():
            i += 1
        elif c == ";":  # the date follows (RFC 5322 §3.6.7)
            out.append(("end", ""))
            return out
        elif c == "(":
            depth, j, buf = 0, i, []
            while j < n:
                ch = value[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(value[j + 1])
                    j += 2
                    continue
                if ch == "(":
                    depth += 1
                    if depth > 1:
                        buf.append(ch)
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                    buf.append(ch)
                else:
                    buf.append(ch)
                j += 1
            if depth:
                return None
            out.append(("comment", " ".join("".join(buf).split())))
            i = j + 1
        elif c in "<\"":
            close = ">" if c == "<" else '"'
            j, quoted = i + 1, c == '"'
            while j < n and not (value[j] == close and (close == '"' or not quoted)):
                if value[j] == "\\":
                    j += 1
                elif value[j] == '"' and close == ">":
                    quoted = not quoted
                j += 1
            if j >= n:
                return None
            out.append(("angle" if c == "<" else "quoted", value[i + 1 : j]))
            i = j + 1
        else:
            j = i
            while j < n and not value[j].isspace() and value[j] not in "(;<\"":
                j += 1
            out.append(("word", value[i:j]))
            i = j
    return out


def parse_received(value: str) -> Hop:
    """The clauses of one Received header; an unreadable one gives an empty Hop."""
    tokens = _tokens(value)
    if tokens is None:
        return Hop()
    clauses: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for kind, text in tokens:
        if kind == "end":
            break
        if kind == "word" and text.lower() in _CLAUSES and text.lower() not in clauses:
            current = text.lower()
            clauses[current] = []
        elif current is not None:
            clauses[current].append((kind, text))

    def first_word(name: str) -> str | None:
        return next((t for k, t in clauses.get(name, ()) if k == "word"), None)

    by = first_word("by")
    protocol = first_word("with")
    from_comments = [t for k, t in clauses.get("from", ()) if k == "comment"]
    client = next((m for c in from_comments if (m := _VERIFIED_CLIENT.match(c))), None)
    login = next((m.group(1) for c in from_comments if (m := _AUTHENTICATED_SENDER.match(c))), None)
    return Hop(
        by=by.lower().rstrip(".") if by else None,
        protocol=protocol.upper() if protocol else None,
        helo=first_word("from"),
        client_name=client.group(1).lower().rstrip(".") if client and client.group(1) else None,
        client_addr=client.group(2) if client else None,
        authenticated=login,
    )


def entry_hop(received: list[str], servers: Collection[str]) -> tuple[Hop | None, str]:
    """The hop where the mail entered the site's servers, or None and why not.

    ``received`` are the Received values top first.  Each hop from the top must be by one
    of ``servers``; LMTP hops and hops from one of ``servers`` (by its verified name)
    are inside the site, and the walk goes on below them.
    """
    for value in received[:_MAX_HOPS]:
        hop = parse_received(value)
        if hop.by is None or hop.by not in servers:
            return None, f"a Received header at the top was added by {hop.by or 'an unreadable host'}, not by a configured server"
        if hop.protocol in _INTERNAL_PROTOCOLS:
            continue
        if hop.client_name is not None and hop.client_name in servers:
            continue
        return hop, ""
    return None, "no Received header shows where the mail came in"


def dmarc_pass_domain(results: list[str], authserv_ids: Collection[str]) -> str | None:
    """The From domain a trusted ``Authentication-Results`` passes DMARC for, or None.

    Only the topmost header from a trusted authserv-id is read (RFC 8601 §5).
    """
    for value in results:
        parts = _split_results(value)
        if not parts or parts[0].split()[0].lower() not in authserv_ids:
            continue
        for resinfo in parts[1:]:
            fields = resinfo.split()
            if not fields or fields[0].lower() != "dmarc=pass":
                continue
            for prop in fields[1:]:
                name, _, domain = prop.partition("=")
                if name.lower() == "header.from" and domain:
                    return domain.strip('"').lower()
        return None
    return None


def _split_results(value: str) -> list[str]:
    """An Authentication-Results value without comments, split at its semicolons."""
    out, depth, buf = [], 0, []
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth:
            continue
        elif ch == ";":
            out.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf).strip())
    return [p for p in out if p]


def vouch(msg: Message, policy: SenderAuthPolicy, *, sender: str | None, logins: Collection[str]) -> Vouched:
    """Whether the site's mail server vouches that ``sender`` (the From address) sent ``msg``.

    ``logins``: the mail server logins that may write as ``sender`` (the address itself,
    the agent's configured mailbox login).  With ``policy.required`` off, everything is
    vouched for (the site said its server adds no evidence; the engine warned at start).
    """
    if not policy.required:
        return Vouched(True, "sender check switched off ([sender_auth] required = false)")
    if not sender:
        return Vouched(False, "the mail server does not vouch for the sender: no From address")
    sender = sender.lower()
    allowed = {login.lower() for login in logins if login} | {sender}
    why: list[str] = []
    if policy.servers:
        hop, problem = entry_hop(raw_header_values(msg, "Received"), policy.servers)
        if hop is None:
            why.append(problem)
        elif hop.authenticated is None or hop.protocol not in _AUTHENTICATED_PROTOCOLS:
            why.append(f"{hop.by} took it without authentication")
        elif hop.authenticated.lower() not in allowed:
            why.append(f"{hop.by} took it from {hop.authenticated}, who may not write as {sender}")
        else:
            return Vouched(True, f"{hop.by} took it from authenticated {hop.authenticated}")
    if policy.exchange:
        auth_as = raw_header_values(msg, "X-MS-Exchange-Organization-AuthAs")
        if auth_as and auth_as[0].strip().lower() == "internal":
            return Vouched(True, "Exchange: authenticated internal sender")
        why.append("Exchange did not mark it as from an authenticated internal sender")
    if policy.authserv_ids:
        domain = dmarc_pass_domain(raw_header_values(msg, "Authentication-Results"), policy.authserv_ids)
        if domain is not None and domain == sender.rpartition("@")[2]:
            return Vouched(True, f"DMARC pass for {domain}")
        why.append(f"no trusted DMARC pass for {sender.rpartition('@')[2]}")
    return Vouched(False, "the mail server does not vouch for the sender: " + "; ".join(why or ["no evidence configured"]))
