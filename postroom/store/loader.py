"""Apply a validated site configuration to the database: mailboxes, agents, agent logins,
routing rules, contacts, wrap-up codes, groups and box rights, evaluation criteria.

Owns `postroom load`'s effect on the database and nothing more. Server settings and the
correlation secret are not stored: the engine reads them from the same TOML file at start.

Loading is idempotent and additive. Rows are matched by address (rules by name, contacts
by address or domain, wrap-up codes by code); a row whose configured
fields already match is not written at all (so ``Mailbox.updated_at``, which the engine
watches to re-read a box's settings, moves only on a real change). Rows in the database
but not in the file are reported and left alone: they may have been made in the admin.
Run-time state is never touched: a mailbox's ingest cursor (``uidvalidity``, ``last_uid``)
and an agent's ``ready`` flag, ``routed_count`` and ``state_changed_at``.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from postroom.config import AgentConfig, Box, Config, ContactConfig, IncomingBox
from postroom.core.contactkeys import address_key, domain_key
from postroom.store import audit
from postroom.store.models import (
    Agent,
    AgentGroup,
    Contact,
    EvaluationCriterion,
    Mailbox,
    Rule,
    WrapUpCode,
)

__all__ = ["ALL_KINDS", "MAIL_KINDS", "KindReport", "LoadReport", "apply_config"]

# What `counts()` reports unless asked for more: the kinds it has always reported.
MAIL_KINDS = ("mailboxes", "agents", "users")
ALL_KINDS = (*MAIL_KINDS, "rules", "contacts", "wrapup_codes", "groups", "evaluation_criteria")


@dataclass
class KindReport:
    """What happened to one kind of object, by address."""

    created: list[str] = field(default_factory=list)
    # address -> the names of the fields that changed.
    updated: dict[str, list[str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    # In the database, absent from the file, left alone.
    not_in_file: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "not_in_file": len(self.not_in_file),
        }

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


@dataclass
class LoadReport:
    mailboxes: KindReport = field(default_factory=KindReport)
    agents: KindReport = field(default_factory=KindReport)
    # Django users of agents; not_in_file stays empty (users are not only agents).
    users: KindReport = field(default_factory=KindReport)
    # Rules by name, contacts by address or domain, wrap-up codes by code.
    rules: KindReport = field(default_factory=KindReport)
    contacts: KindReport = field(default_factory=KindReport)
    wrapup_codes: KindReport = field(default_factory=KindReport)
    # Groups by name (with their members and boxes), evaluation criteria by code.
    groups: KindReport = field(default_factory=KindReport)
    evaluation_criteria: KindReport = field(default_factory=KindReport)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(getattr(self, kind).changed for kind in ALL_KINDS)

    def counts(self, kinds: tuple[str, ...] = MAIL_KINDS) -> dict[str, dict[str, int]]:
        """Counts per kind; pass ``ALL_KINDS`` for rules, contacts and wrap-up codes too."""
        return {kind: getattr(self, kind).counts() for kind in kinds}

    def summary(self) -> str:
        """A few human-readable lines for `postroom load`."""
        lines = []
        for kind in ALL_KINDS:
            r: KindReport = getattr(self, kind)
            c = r.counts()
            if kind not in MAIL_KINDS and not any(c.values()):
                continue
            lines.append(
                f"{kind}: {c['created']} created, {c['updated']} updated, "
                f"{c['unchanged']} unchanged"
            )
            lines += [f"  created {a}" for a in r.created]
            lines += [f"  updated {a}: {', '.join(f)}" for a, f in r.updated.items()]
            lines += [f"  not in the file, left alone: {a}" for a in r.not_in_file]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    # `postroom load` prints the report as is.
    __str__ = summary


def apply_config(config: Config, *, now: datetime | None = None) -> LoadReport:
    """Create or update the mailboxes and agents of ``config``, all in one transaction.

    ``now`` stamps ``state_changed_at`` of newly created agents (default: the clock).
    """
    now = now or timezone.now()
    report = LoadReport()
    with transaction.atomic():
        _apply_mailboxes(config, report.mailboxes)
        _apply_agents(config, report, now)
        _apply_supervisors(config, report.agents)
        _apply_agent_boxes(config, report.agents)
        _apply_groups(config, report.groups)
        _apply_criteria(config, report.evaluation_criteria)
        _apply_rules(config, report.rules)
        _apply_contacts(config, report.contacts)
        _apply_wrapup_codes(config, report.wrapup_codes)
        if report.changed:
            audit.record(
                "config_load",
                actor=f"cli ({getpass.getuser()})",
                target=str(config.source or ""),
                at=now,
                **report.counts(ALL_KINDS),
            )
    return report


def _mailbox_fields(box: Box, kind: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "address": box.address,
        "kind": kind,
        "display_name": box.name,
        "login": box.login,
        "folder": box.folder,
        "archive_folder": box.archive_folder,
    }
    if isinstance(box, IncomingBox):
        values |= {
            "auto_response": box.auto_response,
            "auto_response_subject": box.auto_response_subject,
            "auto_response_text": box.auto_response_text,
            "auto_response_customer_text": box.auto_response_customer_text,
            "no_reply_seconds": box.no_reply_seconds,
            "skills": list(box.skills),
            "default_priority": box.default_priority,
            "no_reply_bands": [[floor, seconds] for floor, seconds in box.no_reply_bands],
            "trash_folder": box.trash_folder,
            "service_level_seconds": box.service_level_seconds,
        }
    else:
        # Only incoming boxes are routed or auto-answered; make that explicit in the row
        # so that no query that forgets to filter on kind can auto-answer the outbound box.
        values |= {"auto_response": False, "skills": []}
    return values


def _apply_mailboxes(config: Config, report: KindReport) -> None:
    wanted = [(box, Mailbox.INCOMING) for box in config.incoming]
    wanted += [(config.outbound, Mailbox.OUTBOUND), (config.dead_box, Mailbox.DEAD)]
    for box, kind in wanted:
        values = _mailbox_fields(box, kind)
        row = Mailbox.objects.filter(address__iexact=box.address).first()
        if row is None:
            Mailbox.objects.create(**values)
            report.created.append(box.address)
            continue
        changed = _assign(row, values)
        if changed:
            # update_fields, not a full save: the engine may have moved the cursor since
            # this row was read, and a full save would write the stale cursor back.
            fields = [*changed, "updated_at"]
            if {"folder", "login"} & set(changed):
                # UIDs belong to one folder of one account: a cursor from another one
                # could skip mail. Start over; Message-ID dedupe stops doubles.
                row.uidvalidity, row.last_uid = None, 0
                fields += ["uidvalidity", "last_uid"]
            row.save(update_fields=fields)
            report.updated[box.address] = changed
        else:
            report.unchanged.append(box.address)
    known = {box.address for box, _ in wanted}
    report.not_in_file += [
        a for a in Mailbox.objects.values_list("address", flat=True) if a.lower() not in known
    ]


def _agent_fields(agent: AgentConfig) -> dict[str, Any]:
    # A table of levels in the file is stored as {skill: level}; a list stays a list.
    levels = agent.skill_levels
    return {
        "address": agent.address,
        "name": agent.name,
        "skills": dict(levels) if levels is not None else list(agent.skills),
        "is_supervisor": agent.supervisor,
        "auto_answer": agent.auto_answer,
        "capacity": agent.capacity,
        "probationary": agent.probationary,
        "notify_offers": agent.notify_offers,
        # With the agent's own mailbox password in the file, the engine can withdraw a
        # forwarded copy when the interaction is taken away (fig. 8 462); the password
        # itself stays in the file (Site.password_for). Blank: never withdrawn.
        "mailbox_login": agent.address if agent.password else "",
    }


def _apply_agents(config: Config, report: LoadReport, now: datetime) -> None:
    for cfg in config.agents:
        values = _agent_fields(cfg)
        row = Agent.objects.filter(address__iexact=cfg.address).first()
        if row is None:
            # A new agent starts not ready; becoming ready is the agent's own act.
            row = Agent.objects.create(**values, ready=False, state_changed_at=now)
            report.agents.created.append(cfg.address)
        else:
            changed = _assign(row, values)
            if changed:
                # update_fields keeps `ready` and the counters as the engine last wrote them.
                row.save(update_fields=changed)
                report.agents.updated[cfg.address] = changed
            else:
                report.agents.unchanged.append(cfg.address)
        _ensure_user(row, cfg, report)
    known = {cfg.address for cfg in config.agents}
    report.agents.not_in_file += [
        a for a in Agent.objects.values_list("address", flat=True) if a.lower() not in known
    ]


def _ensure_user(agent: Agent, cfg: AgentConfig, report: LoadReport) -> None:
    """Give the agent a web login named after its address, once.

    Its password is the file's ``web_password``, never the mailbox ``password`` (decision
    0017); without one the user has no usable password until ``postroom user
    set-password`` (or the admin) gives it one. The file's password is taken only while
    the user has no usable one: after that it belongs to the person, and reloading the
    file must not reset it.
    """
    User = get_user_model()
    if agent.user_id is not None:
        # Linked already, perhaps by an administrator to another username: respected.
        user = agent.user
        if cfg.web_password is not None and not user.has_usable_password():
            user.set_password(cfg.web_password)
            user.save(update_fields=["password"])
            report.users.updated[cfg.address] = ["password"]
        else:
            report.users.unchanged.append(cfg.address)
        return
    user = User.objects.filter(username=cfg.address).first()
    if user is None:
        user = User(username=cfg.address, email=cfg.address)
        if cfg.web_password is not None:
            user.set_password(cfg.web_password)
        else:
            user.set_unusable_password()
        user.save()
        report.users.created.append(cfg.address)
    else:
        other = Agent.objects.filter(user=user).exclude(pk=agent.pk).first()
        if other is not None:
            report.warnings.append(
                f"user {cfg.address!r} already belongs to agent {other.address!r}; "
                f"agent {cfg.address!r} was left without a login"
            )
            return
        changed = ["agent"]
        if cfg.web_password is not None and not user.has_usable_password():
            user.set_password(cfg.web_password)
            user.save(update_fields=["password"])
            changed.append("password")
        report.users.updated[cfg.address] = changed
    agent.user = user
    agent.save(update_fields=["user"])


def _assign(row: Any, values: dict[str, Any]) -> list[str]:
    """Set the attributes that differ; return their names, in ``values`` order."""
    changed = []
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    return changed


def _apply_supervisors(config: Config, report: KindReport) -> None:
    """Each agent's supervisors are exactly those the file names (after every agent exists)."""
    for cfg in config.agents:
        row = Agent.objects.get(address__iexact=cfg.address)
        have = {a.lower() for a in row.supervisors.values_list("address", flat=True)}
        if have == set(cfg.supervisors):
            continue
        row.supervisors.set(Agent.objects.filter(address__in=cfg.supervisors))
        if cfg.address in report.created:
            continue
        report.updated.setdefault(cfg.address, []).append("supervisors")
        if cfg.address in report.unchanged:
            report.unchanged.remove(cfg.address)


def _upsert(row: Any, model: Any, values: dict[str, Any], key: str, report: KindReport) -> None:
    """Create ``model(**values)`` or write the fields of ``row`` that differ."""
    if row is None:
        model.objects.create(**values)
        report.created.append(key)
        return
    changed = _assign(row, values)
    if not changed:
        report.unchanged.append(key)
        return
    fields = changed + (["updated_at"] if hasattr(row, "updated_at") else [])
    row.save(update_fields=fields)
    report.updated[key] = changed


def _apply_rules(config: Config, report: KindReport) -> None:
    """Rules by name, positioned 10, 20, 30... in file order (gaps for the admin's own)."""
    for i, spec in enumerate(config.rules):
        values = {
            "name": spec.name,
            "position": (i + 1) * 10,
            "enabled": spec.enabled,
            "match": spec.match,
            "conditions": [c.to_dict() for c in spec.conditions],
            "actions": [a.to_dict() for a in spec.actions],
            "continue_after": spec.continue_after,
        }
        row = Rule.objects.filter(name__iexact=spec.name).first()
        _upsert(row, Rule, values, spec.name, report)
    known = {spec.name.casefold() for spec in config.rules}
    report.not_in_file += [
        name for name in Rule.objects.values_list("name", flat=True) if name.casefold() not in known
    ]


def _contact_fields(contact: ContactConfig) -> dict[str, Any]:
    return {
        "address": contact.address,
        "domain": contact.domain,
        "name": contact.name,
        "level": contact.level,
        "priority": contact.priority,
        "requires_approval": contact.requires_approval,
    }


def _apply_contacts(config: Config, report: KindReport) -> None:
    """Contacts by address or domain; ``notes`` belong to the admin and are never touched."""
    for contact in config.contacts:
        # By key, as the lookup matches (decision 0068).
        if contact.address:
            row = Contact.objects.filter(address_key=address_key(contact.address)).first()
        else:
            row = Contact.objects.filter(domain_key=domain_key(contact.domain)).first()
        _upsert(row, Contact, _contact_fields(contact), contact.key, report)
    known = {c.key for c in config.contacts}
    for address, domain in Contact.objects.values_list("address", "domain"):
        key = (address or domain or "").lower()
        if key not in known:
            report.not_in_file.append(key)


def _apply_wrapup_codes(config: Config, report: KindReport) -> None:
    for code in config.wrapup_codes:
        row = WrapUpCode.objects.filter(code=code.code).first()
        _upsert(row, WrapUpCode, {"code": code.code, "label": code.label}, code.code, report)
    known = {code.code for code in config.wrapup_codes}
    report.not_in_file += [
        c for c in WrapUpCode.objects.values_list("code", flat=True) if c not in known
    ]


def _apply_agent_boxes(config: Config, report: KindReport) -> None:
    """Each agent's directly granted boxes are exactly those the file names (decision 0022)."""
    for cfg in config.agents:
        row = Agent.objects.get(address__iexact=cfg.address)
        have = {a.lower() for a in row.boxes.values_list("address", flat=True)}
        if have == set(cfg.boxes):
            continue
        row.boxes.set(Mailbox.objects.filter(address__in=cfg.boxes, kind=Mailbox.INCOMING))
        if cfg.address in report.created:
            continue
        report.updated.setdefault(cfg.address, []).append("boxes")
        if cfg.address in report.unchanged:
            report.unchanged.remove(cfg.address)


def _apply_groups(config: Config, report: KindReport) -> None:
    """Groups by name; their members and boxes are exactly those the file names."""
    for cfg in config.groups:
        row = AgentGroup.objects.filter(name__iexact=cfg.name).first()
        created = row is None
        if row is None:
            row = AgentGroup.objects.create(name=cfg.name)
        changed = []
        if row.name != cfg.name:
            row.name = cfg.name
            row.save(update_fields=["name"])
            changed.append("name")
        members = {a.lower() for a in row.members.values_list("address", flat=True)}
        if members != set(cfg.members):
            row.members.set(Agent.objects.filter(address__in=cfg.members))
            changed.append("members")
        boxes = {a.lower() for a in row.boxes.values_list("address", flat=True)}
        if boxes != set(cfg.boxes):
            row.boxes.set(Mailbox.objects.filter(address__in=cfg.boxes, kind=Mailbox.INCOMING))
            changed.append("boxes")
        if created:
            report.created.append(cfg.name)
        elif changed:
            report.updated[cfg.name] = changed
        else:
            report.unchanged.append(cfg.name)
    known = {cfg.name.casefold() for cfg in config.groups}
    report.not_in_file += [
        n for n in AgentGroup.objects.values_list("name", flat=True) if n.casefold() not in known
    ]


def _apply_criteria(config: Config, report: KindReport) -> None:
    """Evaluation criteria by code, positioned 10, 20, 30... in file order."""
    for i, cfg in enumerate(config.evaluation_criteria):
        values = {
            "code": cfg.code,
            "label": cfg.label,
            "description": cfg.description,
            "weight": cfg.weight,
            "max_score": cfg.max_score,
            "position": (i + 1) * 10,
            "active": True,
        }
        row = EvaluationCriterion.objects.filter(code=cfg.code).first()
        _upsert(row, EvaluationCriterion, values, cfg.code, report)
    known = {cfg.code for cfg in config.evaluation_criteria}
    report.not_in_file += [
        c for c in EvaluationCriterion.objects.values_list("code", flat=True) if c not in known
    ]
