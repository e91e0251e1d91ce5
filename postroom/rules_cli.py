"""`postroom rules test MESSAGE_FILE [--box ADDRESS]`: what the rules would do with a mail.

Reads one RFC 5322 file, runs the rules stored in the database over it, looks the sender
up among the contacts and computes the priority, then prints every rule's outcome (hit,
miss, disabled, not evaluated — and which condition decided) and the result. Nothing is
sent, stored or changed: it is the supervisor's "why would it go there" before a rule
goes live. Django must be set up by the caller (``postroom.cli`` does it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from postroom.config import ApprovalConfig, Config, load_config
from postroom.core import rules as core_rules
from postroom.core.approval import at_reception
from postroom.core.priority import PriorityInput, PriorityResult, default_policy, importance
from postroom.mail.facts import facts_from_mail
from postroom.mail.message import ParsedMail, UnreadableMessage, parse
from postroom.store.contacts import lookup
from postroom.store.models import Contact, Mailbox, Rule
from postroom.store.rulebook import as_dict

__all__ = ["db_rules", "main", "run_rules_test"]

UNASSIGNED = "unassigned"


def db_rules() -> tuple[list[core_rules.RuleSpec], list[tuple[str, str]]]:
    """The stored rules in order, and (name, problem) for each row too broken to run.

    The same reading as the engine's (``store.rulebook.active_rules``), which skips a
    broken row (edited outside the admin) too, but here the row is named, not only logged.
    """
    specs: list[core_rules.RuleSpec] = []
    broken: list[tuple[str, str]] = []
    for row in Rule.objects.order_by("position", "id"):
        try:
            specs.append(core_rules.rule_from_dict(as_dict(row)))
        except core_rules.RuleInvalid as e:
            broken.append((row.name, str(e)))
    return specs, broken


def run_rules_test(
    path: str | Path, box_address: str | None = None, *, config: Config | None = None
) -> str:
    """A human-readable report of what the stored rules would do with the mail at ``path``.

    ``box_address`` is the incoming box the mail is taken to have arrived in (default: the
    first incoming box among its Delivered-To, To and Cc). ``config`` supplies the priority
    policy, the approval settings and the unassigned queue; without it the defaults apply.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    try:
        mail = parse(raw)
    except UnreadableMessage as e:
        return f"{path}: not a readable mail ({e.reason}); it would be quarantined"

    out: list[str] = [f"Message: {path.name}"]
    out.append(f"  From:    {mail.from_addr or '-'}")
    out.append(f"  To:      {', '.join(mail.to) or '-'}")
    if mail.cc:
        out.append(f"  Cc:      {', '.join(mail.cc)}")
    out.append(f"  Subject: {mail.subject or '-'}")

    box, box_note = _box(mail, box_address)
    out.append("")
    out.append(f"Box: {box_note}")
    customer = mail.from_addr or (mail.reply_to[0] if mail.reply_to else None)
    contact = lookup(customer)
    out.append(f"Contact: {_contact_note(contact, customer)}")

    specs, broken = db_rules()
    facts = facts_from_mail(mail)
    verdict = core_rules.evaluate(specs, facts)
    out.append("")
    out.append(_rules_section(verdict, broken))

    policy = config.priority.policy if config else default_policy
    priority = policy(
        PriorityInput(
            box_default=box.default_priority if box else 0,
            contact_level=contact.level if contact else None,
            contact_priority=contact.priority if contact else 0,
            importance_header=importance(facts.headers),
            rules_set=verdict.priority_set,
            rules_add=verdict.priority_add,
        )
    )
    approval = config.approval if config else ApprovalConfig()
    unassigned = config.routing.unassigned_queue if config else UNASSIGNED
    out.append("")
    out.append("Result:")
    out += _result(
        verdict, box, priority, _approval(verdict, contact, box, priority, approval), unassigned
    )
    out.append("")
    out.append("Nothing was sent or stored: this was a test.")
    return "\n".join(out) + "\n"


def _box(mail: ParsedMail, box_address: str | None) -> tuple[Mailbox | None, str]:
    incoming = Mailbox.objects.filter(kind=Mailbox.INCOMING)
    if box_address:
        box = incoming.filter(address__iexact=box_address.strip()).first()
        if box is None:
            return None, f"{box_address} is not an incoming box; taken as none"
        return box, _box_text(box, "as given")
    for address in (*mail.delivered_to, *mail.to, *mail.cc):
        box = incoming.filter(address__iexact=address).first()
        if box is not None:
            return box, _box_text(box, "from the mail's recipients")
    return None, "none of the recipients is an incoming box (use --box ADDRESS)"


def _box_text(box: Mailbox, how: str) -> str:
    skills = ", ".join(box.skills) if box.skills else "none"
    return f"{box.address} ({how}; skills: {skills}; default priority {box.default_priority})"


def _contact_note(contact: Contact | None, customer: str | None) -> str:
    if not customer:
        return "the mail has no sender address"
    if contact is None:
        return f"none for {customer}"
    matched = f"address {contact.address}" if contact.address else f"domain {contact.domain}"
    name = f"{contact.name}, " if contact.name else ""
    return (
        f"{name}level {contact.level}, priority {contact.priority:+d}"
        f"{', requires approval' if contact.requires_approval else ''} (by {matched})"
    )


def _rules_section(verdict: core_rules.Verdict, broken: list[tuple[str, str]]) -> str:
    if not verdict.trace and not broken:
        return "Rules: none in the database."
    lines = [f"Rules ({len(verdict.trace)} in order):"]
    for i, (name, matched, why) in enumerate(verdict.trace, 1):
        if matched:
            mark = "hit "
        elif name in verdict.misses:
            mark = "miss"
        else:
            mark = "skip"
        lines.append(f"  {i:>2}. [{mark}] {name}: {why}")
    for name, problem in broken:
        lines.append(f"      [bad ] {name}: invalid, never run: {problem}")
    for rule, action, value in verdict.overridden:
        lines.append(f"      ignored: {rule}: {action} {value!r} (already set by an earlier rule)")
    return "\n".join(lines)


def _approval(
    verdict: core_rules.Verdict,
    contact: Contact | None,
    box: Mailbox | None,
    priority: PriorityResult,
    approval: ApprovalConfig,
) -> str | None:
    """The engine's own decision (``core.approval.at_reception``): the first reason, or None."""
    return at_reception(
        approval.as_policy(),
        box=box.address if box else "",
        priority=priority.value,
        contact_level=contact.level if contact else None,
        contact_requires=bool(contact and contact.requires_approval),
        rule_requires=verdict.require_approval,
    )


def _result(
    verdict: core_rules.Verdict,
    box: Mailbox | None,
    priority: PriorityResult,
    approval: str | None,
    unassigned: str,
) -> list[str]:
    def by(action: str) -> str:
        return f' (rule "{verdict.set_by(action)}")'

    if verdict.queue:
        queue = verdict.queue + by("queue")
    elif box is not None and box.skills:
        queue = f"{', '.join(box.skills)} (the box's skills; no rule names a queue)"
    else:
        queue = f"{unassigned} (no rule names a queue and the box has no skill)"
    lines = [f"  queue:          {queue}"]
    lines.append(f"  agent:          {verdict.agent + by('agent') if verdict.agent else 'any'}")
    lines.append(f"  priority:       {priority.value}")
    for label, amount in priority.reasons:
        lines.append(f"      {amount:+6d}  {label}")
    if approval and verdict.require_approval:
        approval += f' (rule "{verdict.set_by("require_approval")}")'
    lines.append(f"  approval:       {'required: ' + approval if approval else 'not required'}")
    if verdict.auto_response == core_rules.AUTO_RESPONSE_OFF:
        auto = "off" + by("auto_response")
    elif verdict.auto_response:
        first = verdict.auto_response.strip().splitlines()[0]
        auto = f'custom text{by("auto_response")}: "{first}..."'
    elif box is not None:
        auto = f"the box's setting ({'on' if box.auto_response else 'off'})"
    else:
        auto = "the box's setting"
    lines.append(f"  auto-response:  {auto}")
    copies = ", ".join(verdict.forward_copies) or "none"
    lines.append(f"  forward copies: {copies}")
    delete = f'yes: "{verdict.delete}"{by("delete")}' if verdict.delete else "no"
    lines.append(f"  delete:         {delete}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``rules test MESSAGE_FILE [--box ADDRESS] [--config CONFIG]``; argv after "rules"."""
    parser = argparse.ArgumentParser(prog="postroom rules")
    sub = parser.add_subparsers(dest="command", required=True)
    test = sub.add_parser("test", help="show what the stored rules would do with a mail file")
    test.add_argument("message", help="an RFC 5322 message file (.eml)")
    test.add_argument("--box", help="the incoming box it arrived in (default: from its To)")
    test.add_argument("--config", help="site file for the priority policy and approval settings")
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else None
    report = run_rules_test(args.message, args.box, config=config)
    sys.stdout.write(report)
    return 0 if report.startswith("Message:") else 2
