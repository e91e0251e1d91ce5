"""Reception's CPU per mail, in process (decision 0061): the bench's ingest mails taken
by ``reception.take_batch`` in FETCH batches of 50, read ahead, with their auto-responses
queued, on a fresh SQLite (or ``DATABASE_URL``) database; no IMAP, no SMTP. The figure is
``time.process_time()`` per mail over the batches after the first (warm-up), which a
loaded machine disturbs far less than a wall-clock rate.

    .venv/bin/python bench/recv_cpu.py --batches 40 [--profile out.prof]
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: an A/B puts the other postroom first

CONFIG = """\
node_id = "bench-node"
secret = "a-bench-secret-of-enough-length-32b+"

[server]
imap_host = "127.0.0.1"
imap_port = 1
imap_tls = "none"
smtp_host = "127.0.0.1"
smtp_port = 1
smtp_tls = "none"

[[incoming]]
address = "support@example.test"
name = "Example Support"
password = "pw"
skills = ["support"]
auto_response_text = "We got your mail. Reference {reference}. {box}"

[sender_auth]
servers = ["mail.example.test"]

[outbound]
address = "outbound@example.test"
password = "pw"

[dead_box]
address = "dead@example.test"
password = "pw"

[[agents]]
name = "Alice Agent"
address = "alice@example.test"
skills = ["support"]
password = "pw"
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--profile", default="")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="recv-cpu-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    atexit.register(shutil.rmtree, work, True)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{work}/db.sqlite3")
    os.environ.setdefault("POSTROOM_SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "postroom.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from bench.common import make_messages
    from postroom.config import load_config
    from postroom.engine import reception
    from postroom.engine.site import site_from_config
    from postroom.mail.imap import FetchedMessage
    from postroom.store.loader import apply_config
    from postroom.store.models import Interaction, Mailbox, Outgoing

    path = work / "postroom.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    apply_config(config)
    site = site_from_config(config)
    box = Mailbox.objects.get(address="support@example.test")
    session = SimpleNamespace(uidvalidity=1)
    raws = [raw for _m, raw in make_messages(50 * args.batches, box.address, "R")]
    when = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def now() -> datetime:
        return datetime.now(UTC)

    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU time, as the figure
    cpu = 0.0
    measured = 0
    per_batch: list[float] = []
    for b in range(args.batches):
        uids = list(range(b * 50 + 1, b * 50 + 51))
        fetched = {
            uid: FetchedMessage(uid=uid, internaldate=when, size=len(raws[uid - 1]), raw=raws[uid - 1]) for uid in uids
        }
        if b and profiler is not None:
            profiler.enable()
        t0 = time.process_time()
        reception.take_batch(box, session, uids, fetched, site, now, reception.take_incoming, read_ahead=True)
        spent = time.process_time() - t0
        if b and profiler is not None:
            profiler.disable()
        if b:  # the first batch warms caches up
            cpu += spent
            measured += len(uids)
            per_batch.append(1000 * spent / len(uids))
    n_ix = Interaction.objects.count()
    n_ar = Outgoing.objects.filter(kind=Outgoing.AUTO_RESPONSE).count()
    per_batch.sort()
    print(f"{measured} mails: {1000 * cpu / measured:.3f} ms CPU per mail "
          f"(batches: fastest {per_batch[0]:.3f}, lower quartile {per_batch[len(per_batch) // 4]:.3f}, "
          f"median {per_batch[len(per_batch) // 2]:.3f}; "
          f"{n_ix} interactions, {n_ar} auto-responses; module {reception.__file__})")
    if profiler is not None:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
