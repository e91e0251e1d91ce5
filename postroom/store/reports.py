"""Reports (iceReporting, MailFlow's reports), computed from the journal.

Each figure is read with indexed queries (JournalEvent by kind and time, Interaction by
box, agent and arrival) over what the asker may see (`postroom.store.permissions`), then
reduced by `postroom.core.figures`. Every table is plain rows, so the page, the CSV and
the Excel file show the same numbers.

Definitions (docs/architecture.md, decision 0024):
- inbound: mail received (journal "received") per day; outbound: replies sent ("reply_sent");
- first response: arrival → the reply's "reply_sent"; handle time: the agent's "answered" →
  its reply accepted or held, or its hang-up;
- no-reply events and reroutes: "no_reply_expired", and every way an interaction went back
  to a queue ("offer_expired", "transferred", "delivery_failed", "rejected_to_queue");
- service level: of the interactions that arrived in the range and were answered or are
  past the box's service time, the share answered within it (hung-up and discarded mail
  does not count);
- messages per interaction: the customer's mail plus every mail Postroom sent for it;
- evaluation: the weighted scores supervisors gave, per agent and per box.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, FloatField, Func, Min, Q, QuerySet
from django.utils import timezone

from postroom.core import figures
from postroom.core.lifecycle import LIVE, State
from postroom.store.models import Agent, Evaluation, Interaction, JournalEvent, Mailbox, Outgoing
from postroom.store.permissions import Principal, visible_agents, visible_interactions

__all__ = ["REROUTES", "TABLES", "Report", "ReportQuery", "Table", "build"]

REROUTES = ("offer_expired", "transferred", "delivery_failed", "rejected_to_queue")
HANDLED = ("reply_accepted", "reply_held", "hung_up")
MAX_DAYS = 366
HISTORY_ROWS = 200


@dataclass(frozen=True)
class ReportQuery:
    since: date
    until: date
    box: int | None = None
    agent: int | None = None
    contact: str = ""
    # Overrides every box's own service time (seconds), if given.
    within: int | None = None


@dataclass
class Table:
    name: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def as_dicts(self) -> list[dict[str, Any]]:
        keys = [k for k, _ in self.columns]
        return [dict(zip(keys, row, strict=True)) for row in self.rows]


@dataclass
class Report:
    query: ReportQuery
    now: datetime
    tables: dict[str, Table]
    # (day, inbound, outbound) for the trend chart.
    trend: list[tuple[date, int, int]]


# The tables in page order: name -> title.
TABLES = {
    "daily": "Daily inbound and outbound",
    "boxes": "By box",
    "agents": "By agent",
    "reroutes": "No-reply events and reroutes",
    "open": "Open interactions by age",
    "messages": "Messages per interaction",
    "evaluations": "Evaluation scores",
    "history": "Interactions",
}


class Epoch(Func):
    """A timestamp as seconds since 1970 (a float), computed by the database.

    The report reads tens of thousands of times at 100,000 interactions; Django turning
    each into an aware datetime (a parse and a time-zone attach per value on SQLite) was
    a third of the page. Only differences and comparisons are taken from these values."""

    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra):  # type: ignore[no-untyped-def]
        # julianday() reads Django's stored text ("YYYY-MM-DD HH:MM:SS[.ffffff]", UTC);
        # 2440587.5 is 1970-01-01 00:00 UTC as a Julian day.
        return self.as_sql(compiler, connection, template="((julianday(%(expressions)s) - 2440587.5) * 86400.0)", **extra)

    def as_postgresql(self, compiler, connection, **extra):  # type: ignore[no-untyped-def]
        return self.as_sql(compiler, connection, template="EXTRACT(EPOCH FROM %(expressions)s)::float8", **extra)


def _seconds(difference: float) -> float:
    """A difference of two `Epoch` values, to the millisecond: SQLite's julianday() keeps
    milliseconds and its float arithmetic adds noise below them, which must not move a
    reply that took exactly the service time across it."""
    return round(difference, 3)


def _start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 2)


def _scope(who: Principal, q: ReportQuery) -> QuerySet[Interaction]:
    qs = visible_interactions(who, Interaction.objects.all())
    if q.box is not None:
        qs = qs.filter(mailbox_id=q.box)
    if q.agent is not None:
        qs = qs.filter(agent_id=q.agent)
    if q.contact:
        qs = qs.filter(customer=q.contact.strip().lower())
    return qs


def _events(scope: QuerySet[Interaction], kinds: tuple[str, ...], lo: datetime, hi: datetime, everything: bool):
    events = JournalEvent.objects.filter(kind__in=kinds, at__gte=lo, at__lt=hi)
    if not everything:
        events = events.filter(interaction__in=scope)
    return events


def _arrived_aged(now: datetime, at_least: float, under: float) -> Q:
    """Arrived `at_least` seconds ago or more and less than `under` (`figures.age_bucket`;
    the first bucket also takes an arrival stamped after `now`, as it does)."""
    aged = Q(arrival_time__lte=now - timedelta(seconds=at_least)) if at_least else Q()
    if under != math.inf:
        aged &= Q(arrival_time__gt=now - timedelta(seconds=under))
    return aged


def build(who: Principal, q: ReportQuery, now: datetime | None = None) -> Report:
    now = now or timezone.now()
    lo, hi = _start(q.since), _start(q.until + timedelta(days=1))
    now_s = now.timestamp()
    scope = _scope(who, q)
    # Without filters an administrator's scope is every interaction: no IN over them all.
    everything = who.sees_everything and q.box is None and q.agent is None and not q.contact
    boxes = {b.pk: b for b in Mailbox.objects.filter(kind=Mailbox.INCOMING)}
    shown_agents = {a.pk: a for a in visible_agents(who, Agent.objects.all())}

    # --- trend ------------------------------------------------------------------------
    # Days in the site's time zone: each day's bounds are computed here (DST included) and
    # the events counted per day in SQL, one conditional count per day over the (kind, at)
    # index. Reading every event's time into Python (a datetime conversion and a time-zone
    # shift per row) was most of the page at 100,000 interactions.
    days = [q.since + timedelta(days=i) for i in range((q.until - q.since).days + 1)]
    bounds = [_start(d) for d in days] + [hi]
    per_day: dict[str, dict[date, int]] = {}
    for kind in ("received", "reply_sent"):
        counted = _events(scope, (kind,), lo, hi, everything).aggregate(
            **{f"d{i}": Count("id", filter=Q(at__gte=bounds[i], at__lt=bounds[i + 1])) for i in range(len(days))}
        )
        per_day[kind] = {d: counted[f"d{i}"] for i, d in enumerate(days)}
    trend = [(d, per_day["received"][d], per_day["reply_sent"][d]) for d in days]
    daily = Table(
        "daily", TABLES["daily"], [("day", "Day"), ("inbound", "Inbound"), ("outbound", "Outbound")],
        [[d.isoformat(), i, o] for d, i, o in trend],
    )

    # --- per interaction arrived in the range ------------------------------------------
    arrived_qs = scope.filter(arrival_time__gte=lo, arrival_time__lt=hi)
    arrived = list(
        arrived_qs.values_list("pk", "mailbox_id", "agent_id", Epoch("arrival_time"), "outcome", "status")
    )
    ids = arrived_qs.values("pk")
    # Their events happen after they arrive: the (kind, at) index from `lo` on, then the
    # interactions of the range (a subquery, not a list of ids: one query whatever the size).
    # Times as epoch seconds (`Epoch`): only their differences are used.
    first_reply: dict[int, float] = dict(
        JournalEvent.objects.filter(kind="reply_sent", at__gte=lo, interaction__in=ids)
        .values("interaction_id")
        .annotate(first=Min(Epoch("at")))
        .values_list("interaction_id", "first")
    )
    answered: dict[int, float] = {}
    handled: dict[int, float] = {}
    for iid, kind, at in (
        JournalEvent.objects.filter(kind__in=("answered", *HANDLED), at__gte=lo, interaction__in=ids)
        .order_by("at", "id")
        .values_list("interaction_id", "kind", Epoch("at"))
    ):
        if kind == "answered":
            answered.setdefault(iid, at)
        elif iid in answered:
            handled.setdefault(iid, at)
    response: dict[int, float] = {}
    handle: dict[int, float] = {}
    for iid, _box, _agent, arrival, _outcome, _status in arrived:
        if iid in first_reply:
            response[iid] = _seconds(first_reply[iid] - arrival)
        if iid in handled:
            handle[iid] = _seconds(handled[iid] - answered[iid])

    by_box: dict[int, list] = defaultdict(list)
    by_agent: dict[int, list] = defaultdict(list)
    for row in arrived:
        by_box[row[1]].append(row)
        if row[2] is not None:
            by_agent[row[2]].append(row)

    def box_within(box_id: int) -> int:
        """Each box is judged against its own service time (unless the reader gives one)."""
        if q.within:
            return q.within
        box = boxes.get(box_id)
        return box.service_level_seconds if box else 4 * 3600

    box_rows = []
    for box_id, rows in sorted(by_box.items(), key=lambda kv: boxes[kv[0]].address if kv[0] in boxes else ""):
        box = boxes.get(box_id)
        within = box_within(box_id)
        times: list[float | None] = []
        for iid, _b, _a, arrival, outcome, status in rows:
            if iid in response:
                times.append(response[iid])
            elif outcome in ("wrapped_up", "discarded", "vanished", "claimed_elsewhere") or status == State.ENDED.value:
                continue
            elif _seconds(now_s - arrival) > within:
                times.append(None)
        level = figures.service_level(times, within)
        fr = figures.spread(response[r[0]] for r in rows if r[0] in response)
        ht = figures.spread(handle[r[0]] for r in rows if r[0] in handle)
        box_rows.append([
            box.address if box else str(box_id), len(rows), fr.count,
            _minutes(fr.median), _minutes(fr.p90), _minutes(ht.median), _minutes(ht.p90),
            _minutes(within), None if level is None else round(100 * level, 1),
        ])
    timing_columns = [
        ("received", "Received"), ("answered", "Answered"),
        ("first_response_median_min", "First response median (min)"),
        ("first_response_p90_min", "First response p90 (min)"),
        ("handle_median_min", "Handle time median (min)"),
        ("handle_p90_min", "Handle time p90 (min)"),
    ]
    by_box_table = Table(
        "boxes", TABLES["boxes"],
        [("box", "Box"), *timing_columns, ("service_time_min", "Service time (min)"),
         ("service_level_pct", "Service level (%)")],
        box_rows,
        "Of the mail that arrived in the range: answered (reply sent), first response from "
        "arrival to the reply sent, handle time from the agent's answer to its reply or hang-up.",
    )
    agent_rows = []
    for agent_id, rows in sorted(by_agent.items(), key=lambda kv: shown_agents[kv[0]].name if kv[0] in shown_agents else ""):
        agent = shown_agents.get(agent_id)
        if agent is None:
            continue
        fr = figures.spread(response[r[0]] for r in rows if r[0] in response)
        ht = figures.spread(handle[r[0]] for r in rows if r[0] in handle)
        agent_rows.append([
            agent.address, len(rows), fr.count, _minutes(fr.median), _minutes(fr.p90),
            _minutes(ht.median), _minutes(ht.p90),
        ])
    by_agent_table = Table(
        "agents", TABLES["agents"], [("agent", "Agent"), *timing_columns], agent_rows,
        "By the agent holding the interaction (the one who replied or ended it).",
    )

    # --- no-reply events and reroutes ---------------------------------------------------
    counts: dict[tuple[int | None, int | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in (
        _events(scope, ("no_reply_expired", *REROUTES), lo, hi, everything)
        .values("mailbox_id", "agent_id", "kind")
        .annotate(n=Count("id"))
        .order_by()
    ):
        counts[(row["mailbox_id"], row["agent_id"])][row["kind"]] += row["n"]
    kinds = ("no_reply_expired", *REROUTES)
    reroute_rows = []
    for (box_id, agent_id), found in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        if agent_id is not None and agent_id not in shown_agents:
            agent_label = "(another agent)"
        else:
            agent_label = shown_agents[agent_id].address if agent_id in shown_agents else ""
        box = boxes.get(box_id) if box_id is not None else None
        reroute_rows.append([box.address if box else "", agent_label, *[found.get(k, 0) for k in kinds]])
    reroutes = Table(
        "reroutes", TABLES["reroutes"],
        [("box", "Box"), ("agent", "Agent"), ("no_reply", "No reply in time"),
         ("offer_expired", "Offer expired"), ("transferred", "Transferred"),
         ("delivery_failed", "Delivery failed"), ("rejected_to_queue", "Rejected to queue")],
        reroute_rows,
        "Events in the range; the agent is the one the interaction was taken from.",
    )

    # --- open now, by age ---------------------------------------------------------------
    # Counted per box and age in SQL (one conditional count per bucket), not read row by row.
    edges = [0.0] + [bound for _, bound in figures.AGE_BUCKETS]
    buckets: dict[int, dict[str, int]] = {}
    for row in (
        scope.filter(status__in=[s.value for s in LIVE])
        .values("mailbox_id")
        .annotate(**{f"b{i}": Count("id", filter=_arrived_aged(now, edges[i], edges[i + 1]))
                     for i in range(len(figures.AGE_BUCKETS))})
        .order_by()
    ):
        found = {label: row[f"b{i}"] for i, (label, _) in enumerate(figures.AGE_BUCKETS)}
        buckets[row["mailbox_id"]] = {label: n for label, n in found.items() if n}
    labels = [label for label, _ in figures.AGE_BUCKETS]
    open_table = Table(
        "open", TABLES["open"],
        [("box", "Box"), *[(label, label) for label in labels], ("total", "Total")],
        [
            [boxes[b].address if b in boxes else str(b), *[found.get(label, 0) for label in labels],
             sum(found.values())]
            for b, found in sorted(buckets.items(), key=lambda kv: boxes[kv[0]].address if kv[0] in boxes else "")
        ],
        "Interactions not yet replied to or ended, now, whatever the date range.",
    )

    # --- messages per interaction -------------------------------------------------------
    # Counted per box and kind in SQL: only each box's sums are shown.
    sent: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in (
        Outgoing.objects.filter(interaction__in=ids)
        .values("interaction__mailbox_id", "kind")
        .annotate(n=Count("id"))
        .order_by()
    ):
        sent[row["interaction__mailbox_id"]][row["kind"]] += row["n"]
    message_rows = []
    for box_id, rows in sorted(by_box.items(), key=lambda kv: boxes[kv[0]].address if kv[0] in boxes else ""):
        kinds_sum = sent[box_id]
        total = len(rows) + sum(kinds_sum.values())  # the customer's mail plus what was sent
        message_rows.append([
            boxes[box_id].address if box_id in boxes else str(box_id), len(rows), total,
            round(total / len(rows), 2) if rows else None,
            kinds_sum.get(Outgoing.AUTO_RESPONSE, 0), kinds_sum.get(Outgoing.FORWARD, 0),
            kinds_sum.get(Outgoing.REPLY, 0), kinds_sum.get(Outgoing.NOTICE, 0),
        ])
    messages = Table(
        "messages", TABLES["messages"],
        [("box", "Box"), ("interactions", "Interactions"), ("messages", "Messages"),
         ("per_interaction", "Per interaction"), ("auto_responses", "Auto-responses"),
         ("forwards", "Forwards"), ("replies", "Replies"), ("notices", "Notices")],
        message_rows,
        "The customer's mail plus every mail Postroom built for it.",
    )

    # --- evaluations --------------------------------------------------------------------
    evaluations = Evaluation.objects.filter(created_at__gte=lo, created_at__lt=hi)
    if not everything:
        evaluations = evaluations.filter(interaction__in=scope)
    eval_rows = []
    scored: dict[tuple[str, str], list[float]] = defaultdict(list)
    for agent_id, box_id, score in evaluations.values_list("agent_id", "mailbox_id", "score"):
        agent = shown_agents.get(agent_id)
        box = boxes.get(box_id)
        scored[("agent", agent.address if agent else "(another agent)")].append(score)
        scored[("box", box.address if box else "")].append(score)
    for (kind, name), values in sorted(scored.items()):
        eval_rows.append([kind, name, len(values), round(sum(values) / len(values), 1),
                          round(min(values), 1), round(max(values), 1)])
    eval_table = Table(
        "evaluations", TABLES["evaluations"],
        [("by", "By"), ("name", "Agent or box"), ("evaluations", "Evaluations"),
         ("mean_score", "Mean score (0-100)"), ("lowest", "Lowest"), ("highest", "Highest")],
        eval_rows,
        "Evaluations recorded in the range.",
    )

    # --- history ------------------------------------------------------------------------
    latest = (
        scope.filter(arrival_time__gte=lo, arrival_time__lt=hi)
        .select_related("mailbox", "agent")
        .order_by("-arrival_time", "-id")[:HISTORY_ROWS]
    )
    history = Table(
        "history", TABLES["history"],
        [("arrival", "Arrived"), ("guid", "Interaction"), ("subject", "Subject"),
         ("customer", "Customer"), ("box", "Box"), ("agent", "Agent"), ("status", "Status"),
         ("first_response_min", "First response (min)")],
        [
            [ix.arrival_time.isoformat(timespec="seconds"), str(ix.guid), ix.subject, ix.customer,
             ix.mailbox.address, ix.agent.address if ix.agent_id else "", ix.status,
             _minutes(response.get(ix.pk))]
            for ix in latest
        ],
        f"The latest {HISTORY_ROWS} that arrived in the range (filter by contact, agent or box "
        "for the history of one).",
    )
    tables = {t.name: t for t in (daily, by_box_table, by_agent_table, reroutes, open_table,
                                  messages, eval_table, history)}
    return Report(query=q, now=now, tables=tables, trend=trend)
