"""Server time of the workspace's pages with a big contact center (issue 11).

    python bench/pages.py --interactions 100000 --open 10000 [--reps 30] [--json out.json]

Seeds a database of its own (DATABASE_URL, else a temp SQLite file) with --interactions
interactions over 90 days, --open of them still open (queued or with agents), and their
journal, search text, outgoing mail and some evaluations, in bulk; then asks each page
--reps times through Django's test client in this process (middleware, view, queries and
template: the server's time, no network, no browser) and reports p50 / p95 per page in
milliseconds, as `page_p95_ms_<page>`. The live feeds are timed twice: answering afresh,
and answering 304 to a poll that brings back its ETag (what an open page costs while
nothing changes). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Subjects and texts are drawn from these words.
WORDS = [
    "order", "parcel", "invoice", "refund", "kettle", "delivery", "address", "payment", "card",
    "account", "password", "warranty", "broken", "lid", "late", "tracking", "courier", "return",
    "label", "discount", "subscription", "cancel", "upgrade", "question", "thanks", "please",
    "urgent", "again", "customer", "service", "number", "week", "month",
]


def setup(database_url: str | None) -> None:
    state = tempfile.mkdtemp(prefix="prpages-")
    os.environ.setdefault("POSTROOM_STATE_DIR", state)
    os.environ.setdefault("POSTROOM_SECRET_KEY", "bench-only-secret-key-" + "b" * 40)
    os.environ["POSTROOM_HTTPS"] = "false"
    os.environ["POSTROOM_ALLOWED_HOSTS"] = "testserver"
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{state}/pages.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "postroom.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def seed(n: int, open_n: int, agents_n: int, seed_value: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from postroom.core.lifecycle import State
    from postroom.store.models import (
        Agent,
        AgentGroup,
        Evaluation,
        EvaluationCriterion,
        Interaction,
        InteractionText,
        JournalEvent,
        Mailbox,
        Outgoing,
    )

    rnd = random.Random(seed_value)
    now = timezone.now()
    users = get_user_model().objects
    boxes = [Mailbox.objects.create(address=f"{name}@bench.test", login=name, skills=[name])
             for name in ("support", "sales", "billing")]
    Mailbox.objects.create(address="outbound@bench.test", login="outbound", kind=Mailbox.OUTBOUND)
    sup = Agent.objects.create(name="Sue Supervisor", address="sue@bench.test", is_supervisor=True,
                               user=users.create_user("sue@bench.test"))
    agents = [
        Agent.objects.create(name=f"Agent {i}", address=f"agent{i}@bench.test", skills=["support"],
                             capacity=5, ready=True, user=users.create_user(f"agent{i}@bench.test"))
        for i in range(agents_n)
    ]
    reader = Agent.objects.create(name="Rita Reader", address="rita@bench.test",
                                  user=users.create_user("rita@bench.test"))
    group = AgentGroup.objects.create(name="Support readers")
    group.members.add(reader)
    group.boxes.add(boxes[0])
    users.create_superuser("root", "root@bench.test", None)
    EvaluationCriterion.objects.create(code="accuracy", label="Accuracy", weight=3)
    EvaluationCriterion.objects.create(code="tone", label="Tone", weight=1)

    started = time.monotonic()
    rows, texts, events, outgoing = [], [], [], []
    span = 90 * 86400
    with_agents = min(open_n // 2, agents_n * 5)
    for i in range(n):
        box = boxes[i % 3]
        arrival = now - timedelta(seconds=rnd.randint(60, span)) if i >= open_n else now - timedelta(seconds=rnd.randint(60, 3 * 86400))
        if i < with_agents:
            status, agent = State.DELIVERED.value, agents[i % agents_n]
        elif i < open_n:
            status, agent = State.QUEUED.value, None
        else:
            status, agent = State.CLOSED.value, agents[i % agents_n]
        rows.append(Interaction(
            node_id="bench", mailbox=box, uidvalidity=1, uid=i + 1, message_id=f"<b{i}@customer.test>",
            to_addr=box.address, customer=f"c{i % (n // 3 + 1)}@customer.test", customer_name=f"Customer {i}",
            subject=" ".join(rnd.choices(WORDS, k=5)), arrival_time=arrival, priority=rnd.randint(0, 50),
            queue="support", status=status, agent=agent,
            answered_at=arrival + timedelta(minutes=5) if agent else None,
            replied_at=arrival + timedelta(minutes=rnd.randint(10, 600)) if status == State.CLOSED.value else None,
            no_reply_due_at=now + timedelta(minutes=rnd.randint(-30, 240)) if status == State.DELIVERED.value else None,
            outcome="replied" if status == State.CLOSED.value else "",
        ))
    with transaction.atomic():
        Interaction.objects.bulk_create(rows, batch_size=2000)
    made = list(Interaction.objects.values_list("pk", "mailbox_id", "agent_id", "arrival_time", "status", "replied_at"))
    for pk, box_id, agent_id, arrival, _status, replied in made:
        texts.append(InteractionText(interaction_id=pk, subject="", customer_text=" ".join(rnd.choices(WORDS, k=60))))
        events.append(JournalEvent(at=arrival, kind="received", interaction_id=pk, mailbox_id=box_id))
        if agent_id:
            events.append(JournalEvent(at=arrival + timedelta(minutes=5), kind="answered", interaction_id=pk,
                                       mailbox_id=box_id, agent_id=agent_id))
        if replied:
            events.append(JournalEvent(at=replied - timedelta(minutes=1), kind="reply_accepted", interaction_id=pk,
                                       mailbox_id=box_id, agent_id=agent_id))
            events.append(JournalEvent(at=replied, kind="reply_sent", interaction_id=pk, mailbox_id=box_id, agent_id=agent_id))
            outgoing.append(Outgoing(key=f"reply:{pk}", kind=Outgoing.REPLY, interaction_id=pk, envelope_from="s",
                                     recipients=["c"], message_id=f"<r{pk}@x>", raw=b"Subject: Re\r\n\r\nThanks",
                                     next_attempt_at=replied, state=Outgoing.SENT, sent_at=replied))
        outgoing.append(Outgoing(key=f"auto_response:{pk}", kind=Outgoing.AUTO_RESPONSE, interaction_id=pk,
                                 envelope_from="", recipients=["c"], message_id=f"<a{pk}@x>",
                                 raw=b"Subject: Re\r\n\r\nWe got it", next_attempt_at=arrival,
                                 state=Outgoing.SENT, sent_at=arrival))
    with transaction.atomic():
        InteractionText.objects.bulk_create(texts, batch_size=2000)
        JournalEvent.objects.bulk_create(events, batch_size=5000)
        Outgoing.objects.bulk_create(outgoing, batch_size=2000)
        closed = [m for m in made if m[4] == State.CLOSED.value][:2000]
        Evaluation.objects.bulk_create([
            Evaluation(interaction_id=pk, agent_id=agent_id, mailbox_id=box_id, evaluator="sue@bench.test",
                       scores=[], score=rnd.randint(40, 100), created_at=replied, updated_at=replied)
            for pk, box_id, agent_id, _a, _s, replied in closed
        ], batch_size=2000)
    return {
        "seconds": round(time.monotonic() - started, 1), "interactions": n, "open": open_n,
        "journal_events": len(events), "agents": agents_n,
        "holder": agents[0].address, "supervisor": sup.address, "reader": reader.address,
        "sample": str(Interaction.objects.filter(agent=agents[0], status=State.DELIVERED.value).values_list("guid", flat=True).first()),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def time_pages(info: dict, reps: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    users = get_user_model().objects

    def client(username: str) -> Client:
        c = Client()
        c.force_login(users.get(username=username))
        return c

    agent, sup, root, reader = (client(info["holder"]), client(info["supervisor"]),
                                client("root"), client(info["reader"]))
    guid = info["sample"]
    pages = {
        "agent_bar": (agent, "/agent/", {}),
        "agent_feed": (agent, "/api/me", {}),
        "agent_feed_304": (agent, "/api/me", {"etag": True}),
        "console": (sup, "/supervisor/", {}),
        "console_feed": (sup, "/api/console", {}),
        "console_feed_304": (sup, "/api/console", {"etag": True}),
        "live": (sup, "/", {}),
        "journal": (root, "/journal/", {}),
        "journal_search": (root, "/journal/?q=kettle+refund", {}),
        "journal_reader_search": (reader, "/journal/?q=parcel", {}),
        "journal_customer": (root, "/journal/?customer=c77%40customer.test", {}),
        "transcript": (agent, f"/interactions/{guid}/transcript/", {}),
        "reports_7_days": (root, "/reports/", {}),
        "reports_reader": (reader, "/reports/", {}),
    }
    out: dict = {}
    for name, (c, url, opts) in pages.items():
        headers = {}
        if opts.get("etag"):
            tag = c.get(url).headers.get("ETag")
            headers = {"HTTP_IF_NONE_MATCH": tag}
        samples = []
        status = None
        c.get(url, **headers)  # warm: imports, first chart, caches
        for _ in range(reps):
            t0 = time.perf_counter()
            response = c.get(url, **headers)
            samples.append((time.perf_counter() - t0) * 1000)
            status = response.status_code
            if opts.get("etag") and response.status_code == 200:
                # As the page does: a fresh answer (the tag's time step passed) gives the tag.
                headers = {"HTTP_IF_NONE_MATCH": response.headers.get("ETag")}
        out[name] = {"p50_ms": round(percentile(samples, 50), 1), "p95_ms": round(percentile(samples, 95), 1),
                     "status": status, "url": url}
        if opts.get("etag"):
            out[name]["note"] = "polls that bring back the last ETag (a 10 s time step may renew it)"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--open", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    setup(args.database_url)
    info = seed(args.interactions, args.open, args.agents, args.seed)
    from django.db import connection

    result = {"seed": info, "database": connection.vendor, "pages": time_pages(info, args.reps)}
    for name, figures in result["pages"].items():
        print(f"{name:24} p50 {figures['p50_ms']:8.1f} ms   p95 {figures['p95_ms']:8.1f} ms   ({figures['status']})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
