"""When a reply needs a supervisor's approval (fig. 10 564), decided from plain facts.

At reception the customer, the priority and the box can require it (stored on the
interaction, fig. 3 APPROVAL); at reply time the agent can (probation).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


# The words an approver may answer an approval request mail with (fig. 10 by mail).
APPROVE_WORDS = ("approve", "approved", "ok", "yes")
REJECT_WORDS = ("reject", "rejected", "no")


@dataclass(frozen=True)
class MailDecision:
    decision: str  # "approve" | "reject" | "edit"
    text: str = ""


def read_mail_decision(body: str) -> MailDecision | None:
    """An approver's answer by mail: the first non-empty line says APPROVE, or REJECT and
    a reason (rest of the line and following lines); anything else above the quoted
    request is taken as the edited reply text. None when there is nothing to act on."""
    own: list[str] = []
    for line in body.replace("\r\n", "\n").split("\n"):
        if line.startswith(">") or _is_quote_header(line):
            break
        own.append(line)
    text = "\n".join(own).strip()
    if not text:
        return None
    first, _, rest = text.partition("\n")
    word, _, tail = first.strip().partition(" ")
    lowered = word.lower().strip(".:!,")
    if lowered in APPROVE_WORDS and not tail.strip() and not rest.strip():
        return MailDecision("approve")
    if lowered in REJECT_WORDS:
        reason = (tail.strip(" :-") + "\n" + rest).strip()
        return MailDecision("reject", reason or "rejected by mail")
    return MailDecision("edit", text)


def _is_quote_header(line: str) -> bool:
    stripped = line.strip()
    return (stripped.startswith("On ") and stripped.endswith("wrote:")) or stripped.startswith(
        ("-----Original Message-----", "From: ", "________________________________")
    )
