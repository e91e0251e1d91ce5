"""The benchmark's database helper, run as a child process with the phase's DATABASE_URL.

    python bench/dbtool.py bulk N --mailbox ADDR     N QUEUED interactions by bulk_create
    python bench/dbtool.py requeue                   put every interaction back in QUEUED
    python bench/dbtool.py summary                   counts by status, outbox, quarantine

Prints one JSON object on its last line. Uses the ORM of the Postroom it benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "postroom.settings")
    import django

    django.setup()


def bulk(n: int, mailbox: str, batch: int = 5000) -> dict:
    from django.utils import timezone

    from postroom.core.lifecycle import State
    from postroom.store.models import Interaction, Mailbox

    box = Mailbox.objects.get(address=mailbox)
    queue = (box.skills or ["unassigned"])[0]
    start = timezone.now() - timedelta(days=2)
    t0 = time.monotonic()
    made = 0
    while made < n:
        rows = []
        for i in range(made, min(n, made + batch)):
            rows.append(
                Interaction(
                    guid=uuid.uuid4(),
                    node_id="bench-1",
                    mailbox=box,
                    uidvalidity=1,  # not the box's: the originals are not on the server
                    uid=i + 1,
                    message_id=f"<resume-{i}@customer.test>",
                    customer=f"customer{i % 500}@customer.test",
                    customer_name=f"Customer {i % 500}",
                    subject=f"Backlog mail {i}",
                    arrival_time=start + timedelta(seconds=i),
                    priority=0,
                    queue=queue,
                    status=State.QUEUED.value,
                )
            )
        Interaction.objects.bulk_create(rows, batch_size=batch)
        made += len(rows)
    return {"inserted": made, "seconds": round(time.monotonic() - t0, 2)}


def requeue() -> dict:
    from django.db.models import F

    from postroom.core.lifecycle import State
    from postroom.store.models import Interaction, Outgoing

    Outgoing.objects.all().delete()
    changed = Interaction.objects.exclude(status=State.QUEUED.value).update(
        status=State.QUEUED.value,
        agent=None,
        routed_at=None,
        answered_at=None,
        delivered_at=None,
        closed_at=None,
        offer_due_at=None,
        no_reply_due_at=None,
        outcome="",
        deliveries=0,
        excluded_agents=[],
        version=F("version") + 1,
    )
    return {"requeued": changed}


def summary() -> dict:
    from django.db.models import Count

    from postroom.store.models import Interaction, JournalEvent, Outgoing, Quarantined

    out: dict = {
        "interactions": Interaction.objects.count(),
        "by_status": dict(Interaction.objects.values_list("status").annotate(n=Count("id"))),
        "auto_response_sent": Interaction.objects.filter(auto_response_sent_at__isnull=False).count(),
        "delivered": Interaction.objects.filter(delivered_at__isnull=False).count(),
        "replied": Interaction.objects.filter(replied_at__isnull=False).count(),
        "quarantined": Quarantined.objects.count(),
        "outgoing": {
            f"{k}:{s}": n
            for k, s, n in Outgoing.objects.values_list("kind", "state").annotate(n=Count("id"))
        },
        "journal": dict(JournalEvent.objects.values_list("kind").annotate(n=Count("id"))),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bulk")
    b.add_argument("n", type=int)
    b.add_argument("--mailbox", required=True)
    sub.add_parser("requeue")
    sub.add_parser("summary")
    args = p.parse_args(argv)
    setup()
    if args.cmd == "bulk":
        result = bulk(args.n, args.mailbox)
    elif args.cmd == "requeue":
        result = requeue()
    else:
        result = summary()
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
