"""When a reply needs a supervisor's approval (fig. 10 564), decided from plain facts.

At reception the customer, the priority and the box can require it (stored on the
interaction, fig. 3 APPROVAL); at reply time the agent can (probation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from postroom.core.quotes import own_text


@dataclass(frozen=True)
class ApprovalPolicy:
    probation: frozenset[str] = field(default_factory=frozenset)  # agent addresses
    levels: frozenset[str] = field(default_factory=frozenset)  # contact levels, e.g. "vip"
    min_priority: int | None = None
    boxes: frozenset[str] = field(default_factory=frozenset)  # incoming box addresses
    # A rejected reply gives the interaction to someone else instead of the same agent.
    reroute_on_reject: bool = False


def at_reception(
    policy: ApprovalPolicy,
    *,
    box: str,
    priority: int,
    contact_level: str | None,
    contact_requires: bool,
    rule_requires: bool,
) -> str | None:
    """The reason this interaction's reply will need approval, or None."""
    if rule_requires:
        return "a routing rule requires approval"
    if contact_requires:
        return "the customer's record requires approval"
    if contact_level and contact_level.lower() in policy.levels:
        return f"customer level {contact_level}"
    if policy.min_priority is not None and priority >= policy.min_priority:
        return f"priority {priority} ≥ {policy.min_priority}"
    if box.lower() in policy.boxes:
        return f"box {box}"
    return None


def at_reply(policy: ApprovalPolicy, *, required_at_reception: bool, agent: str, probationary: bool) -> str | None:
    if required_at_reception:
        return "required since reception"
    if probationary or agent.lower() in policy.probation:
        return f"{agent} is on probation"
    return None


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    EDIT = "edit"


# What an approval request mail tells the approver, and what a "not understood" notice
# repeats: the only answers acted on.
ACCEPTED_FORMS = (
    "Answer with one of these on the first line of your mail:\n"
    "  APPROVE            to send the reply as it is,\n"
    "  REJECT <reason>    to send it back to the agent, with your reason,\n"
    "  EDIT               followed by your own text on the next lines, to send your\n"
    "                     text instead (the agent's attachments are kept).\n"
    "Your signature and the quoted request below your answer are left out. Anything else\n"
    "is not acted on: nothing is sent and you are told.\n"
)


@dataclass(frozen=True)
class MailDecision:
    """An approver's answer by mail: a decision, or ``problem`` saying why there is none."""

    decision: Decision | None
    text: str = ""  # the rejection reason, or the edited reply
    problem: str = ""


def read_mail_decision(body: str) -> MailDecision:
    """The decision in an approver's answer: its first line (fig. 10 by mail).

    ``APPROVE`` alone; ``REJECT`` and a reason (the rest of the line and the lines below);
    ``EDIT`` alone, the replacement text on the lines below.  Quotes and signatures are cut
    first (``core.quotes``).  Anything else is not understood, whatever it seems to mean:
    "Approved, thanks" or "ok" is not a decision, so that no answer is ever guessed at and
    no approver's words reach a customer by accident.
    """
    own = own_text(body).strip("\n")
    lines = own.split("\n")
    first_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first_at is None:
        return MailDecision(None, problem="the answer is empty (above the quoted request)")
    first = lines[first_at].strip()
    rest = "\n".join(lines[first_at + 1 :]).strip("\n")
    word, _, tail = first.partition(" ")
    command = word.rstrip(".!:").upper()
    if command == "APPROVE" and not tail.strip() and word.upper() in ("APPROVE", "APPROVE.", "APPROVE!"):
        return MailDecision(Decision.APPROVE)
    if command == "REJECT" and word.upper() in ("REJECT", "REJECT:"):
        reason = (tail.strip() + "\n" + rest).strip()
        if not reason:
            return MailDecision(None, problem="REJECT needs a reason, on the same line or below")
        return MailDecision(Decision.REJECT, reason)
    if command == "EDIT" and not tail.strip() and word.upper() in ("EDIT", "EDIT:"):
        if not rest.strip():
            return MailDecision(None, problem="EDIT needs the new reply text on the lines below it")
        return MailDecision(Decision.EDIT, rest.rstrip() + "\n")
    shown = first if len(first) <= 60 else first[:57] + "..."
    return MailDecision(None, problem=f'the first line is "{shown}", not APPROVE, REJECT <reason> or EDIT')
