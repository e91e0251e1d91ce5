"""Figures 2, 3, 4 (Postroom's half) and 6: Postroom measured as a user runs it.

Every run gets fresh mailboxes, a config TOML and a database of its own; the engine is
``.venv/bin/postroom engine CONFIG`` in a separate process, and everything is observed
from outside: mail in the real IMAP mailboxes, and the tracking records in the database
(read-only SQL).

* latency: customer mail over SMTP (MX) → the forwarded copy visible in an agent's IMAP
  inbox (STATUS polled every 2 ms, as for the stack's own floor), agents Ready with
  auto-answer, mail sent at a steady moderate rate.
* throughput: N customer mails pushed in as fast as the MX takes them; simulated agents
  (``python -m postroom_sim.run``, replies like real mail clients, no delay) answer; the
  rate is N ÷ (first mail sent → N customer replies recorded sent).
* ingest: the incoming box pre-filled (IMAP APPEND), no agent Ready; engine start → N
  interactions recorded (without auto-responses) or N auto-responses recorded sent.
* resume: N QUEUED interactions bulk-inserted; engine start → the one Ready auto-answer
  agent has an interaction routed to it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

from bench.common import (
    BENCH,
    PY,
    CpuMeter,
    DbWatch,
    Process,
    Stack,
    agents_ready,
    dbtool,
    envelope_from,
    log,
    make_messages,
    make_site,
    marker_of,
    percentile,
    postroom_load,
    start_engine,
    status_counts,
    wait_until,
)

POLL = 0.005  # inbox watcher: each agent box is STATUS-polled every ~5-10 ms


def wait_engine_watching(site, db: DbWatch, engine: Process, timeout: float = 60) -> float:
    """The engine has opened the support box (its cursor knows the UIDVALIDITY)."""
    t = wait_until(
        lambda: db.scalar(
            "SELECT uidvalidity FROM store_mailbox WHERE address = ?", (site.support,)
        ) is not None,
        timeout,
        alive=engine,
    )
    if t is None:
        raise RuntimeError(f"engine never opened {site.support}:\n{engine.tail()}")
    return t


class InboxWatcher(threading.Thread):
    """Stamps every bench marker the moment its message becomes visible in one of the
    watched mailboxes (STATUS UIDNEXT polled every 2 ms, round robin over the boxes)."""

    def __init__(self, stack: Stack, boxes: list[str]) -> None:
        super().__init__(daemon=True, name="inbox-watcher")
        self.stack = stack
        self.boxes = boxes
        self.status = [stack.imap(b) for b in boxes]
        self.reader = [stack.imap(b) for b in boxes]
        for r in self.reader:
            r.select("INBOX", readonly=True)
        self.next_uid = [status_counts(c)[1] for c in self.status]
        self.seen: dict[str, float] = {}
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                for i, conn in enumerate(self.status):
                    _, uidnext = status_counts(conn)
                    if uidnext > self.next_uid[i]:
                        now = time.monotonic()
                        self._read(i, self.next_uid[i], uidnext - 1, now)
                        self.next_uid[i] = uidnext
                time.sleep(POLL)
        except BaseException as exc:  # reported by the phase
            self.error = exc

    def _read(self, i: int, lo: int, hi: int, stamp: float) -> None:
        reader = self.reader[i]
        reader.noop()
        typ, data = reader.uid("FETCH", f"{lo}:{hi}", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for item in data or []:
            if isinstance(item, tuple):
                hdr = BytesHeaderParser(policy=policy.default).parsebytes(item[1])
                marker = marker_of(str(hdr["Subject"] or ""))
                if marker:
                    self.seen.setdefault(marker, stamp)

    def close(self) -> None:
        self.stop_flag.set()
        self.join(5)
        for conn in self.status + self.reader:
            with contextlib.suppress(Exception):
                conn.logout()


def latency_run(stack: Stack, workdir: Path, rep: int, n: int, rate: float, agents: int = 2) -> dict:
    site = make_site(stack, workdir, f"lat{rep}", agents=agents, capacity=max(1, n))
    postroom_load(site)
    agents_ready(site)
    db = DbWatch(site.database_url)
    engine = start_engine(site)
    watcher = None
    try:
        wait_engine_watching(site, db, engine)
        time.sleep(1.0)  # let the watcher settle into IDLE
        watcher = InboxWatcher(stack, site.agents)
        watcher.start()
        msgs = make_messages(n, site.support, f"L{rep}")
        sent: dict[str, float] = {}
        smtp = stack.smtp()
        with CpuMeter() as cpu:
            t_start = next_at = time.monotonic()
            for marker, raw in msgs:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += 1.0 / rate
                smtp.sendmail(envelope_from(raw), [site.support], raw)
                sent[marker] = time.monotonic()
            with contextlib.suppress(Exception):
                smtp.quit()
            t_sent = time.monotonic()

            def settled() -> bool:
                if len(watcher.seen) >= n or watcher.error is not None:
                    return True
                # Some never reach an agent (vanished, quarantined): stop once the
                # database has nothing left on its way and every delivery was seen.
                pending = db.count("status IN ('queued', 'routed', 'answered')")
                made = db.count()
                delivered = db.count("delivered_at IS NOT NULL")
                return made >= n and pending == 0 and len(watcher.seen) >= delivered

            wait_until(settled, 120, 0.1, alive=engine)
        if watcher.error:
            raise RuntimeError(f"inbox watcher failed: {watcher.error!r}")
        lat = [watcher.seen[m] - t for m, t in sent.items() if m in watcher.seen]
        rss = engine.vm_hwm_mb()
        cpu_s = engine.cpu_seconds()
    finally:
        if watcher is not None:
            watcher.close()
        engine.stop()
        db.close()
    summary = dbtool(site, "summary")
    missing = n - len(lat)
    log(
        f"latency rep {rep + 1}: {len(lat)}/{n} delivered, sent at {n / (t_sent - t_start):.1f}/s, "
        f"p50 {percentile(lat, 50):.3f} p99 {percentile(lat, 99):.3f} max {max(lat, default=float('nan')):.3f} s, "
        f"cpu {cpu.busy_pct}%"
    )
    return {
        "p50": percentile(lat, 50),
        "p90": percentile(lat, 90),
        "p99": percentile(lat, 99),
        "max": max(lat) if lat else None,
        "missing": missing,
        "rate": rate,
        "n": n,
        "cpu_busy_pct": cpu.busy_pct,
        "engine_peak_rss_mb": rss,
        "engine_cpu_s": cpu_s,
        "db": summary,
    }


def throughput_run(stack: Stack, workdir: Path, rep: int, n: int, agents: int = 4, timeout: float = 900) -> dict:
    site = make_site(stack, workdir, f"thr{rep}", agents=agents, capacity=max(1, n))
    postroom_load(site)
    agents_ready(site)
    styles = ["thunderbird", "outlook", "gmail", "apple"]
    spec = {
        "host": "127.0.0.1",
        "imap_port": stack.imap_port,
        "submission_port": stack.submission_port,
        "cafile": stack.cafile,
        "agents": [[a, stack.users[a], styles[i % len(styles)]] for i, a in enumerate(site.agents)],
    }
    spec_file = site.workdir / "agents.json"
    spec_file.write_text(json.dumps(spec))
    sim = Process([PY, str(BENCH / "agents.py"), str(spec_file)], site.env(), site.workdir / "agents.log")
    db = DbWatch(site.database_url)
    engine = start_engine(site)
    rss = None
    try:
        wait_engine_watching(site, db, engine)
        time.sleep(1.0)
        msgs = make_messages(n, site.support, f"T{rep}")
        smtp = stack.smtp()
        progress: list[tuple[float, int]] = []
        with CpuMeter() as cpu:
            t0 = time.monotonic()
            for _marker, raw in msgs:
                smtp.sendmail(envelope_from(raw), [site.support], raw)
            with contextlib.suppress(Exception):
                smtp.quit()
            t_sent = time.monotonic()
            log(f"throughput rep {rep + 1}: {n} customer mails accepted in {t_sent - t0:.1f} s")

            def done() -> bool:
                c = db.count("replied_at IS NOT NULL")
                if not progress or progress[-1][1] != c:
                    progress.append((time.monotonic() - t0, c))
                return c >= n

            t1 = wait_until(done, timeout, 0.1, alive=engine)
        rss = engine.vm_hwm_mb()
        cpu_s = engine.cpu_seconds()
        finished = t1 is not None
        elapsed = (t1 if finished else time.monotonic()) - t0
        replied = progress[-1][1] if progress else 0
    finally:
        engine.stop()
        sim.stop()
        db.close()
    summary = dbtool(site, "summary")
    rate = replied / elapsed if elapsed > 0 else None
    log(
        f"throughput rep {rep + 1}: {replied}/{n} replied in {elapsed:.1f} s = {rate:.2f}/s, "
        f"engine peak RSS {rss:.0f} MB, engine CPU {cpu_s:.1f} s, machine cpu {cpu.busy_pct}%"
    )
    return {
        "interactions_per_s": rate,
        "completed": replied,
        "n": n,
        "finished": finished,
        "seconds": elapsed,
        "engine_peak_rss_mb": rss,
        "engine_cpu_s": cpu_s,
        "cpu_busy_pct": cpu.busy_pct,
        "progress": progress[:: max(1, len(progress) // 60)],
        "db": summary,
    }


def ingest_run(stack: Stack, workdir: Path, box: str, raws: list[bytes], ack: bool, rep: int, timeout: float = 600) -> dict:
    n = len(raws)
    stack.empty(box)
    fill = stack.append_all(box, raws)
    # One agent, never made Ready (the config needs someone with the box's skill).
    site = make_site(
        stack, workdir, f"ing{'a' if ack else 'n'}{rep}", agents=1, auto_response=ack, support=box
    )
    postroom_load(site)  # migrated beforehand, as the peer's database is
    db = DbWatch(site.database_url)
    where = "auto_response_sent_at IS NOT NULL" if ack else "1=1"
    with CpuMeter() as cpu:
        engine = start_engine(site)
        try:
            t1 = wait_until(lambda: db.count(where) >= n, timeout, 0.02, alive=engine)
            got = db.count(where)
            elapsed = (t1 or time.monotonic()) - engine.started
            rss = engine.vm_hwm_mb()
            cpu_s = engine.cpu_seconds()
        finally:
            engine.stop()
            db.close()
    summary = dbtool(site, "summary")
    rate = got / elapsed
    log(
        f"postroom ingest {'ack' if ack else 'noack'} rep {rep + 1}: {got}/{n} in {elapsed:.2f} s = "
        f"{rate:.1f}/s (refill {fill:.1f} s), engine CPU {cpu_s:.1f} s, machine cpu {cpu.busy_pct}%"
    )
    return {
        "per_s": rate,
        "seconds": elapsed,
        "done": got,
        "n": n,
        "finished": t1 is not None,
        "refill_s": fill,
        "cpu_busy_pct": cpu.busy_pct,
        "engine_peak_rss_mb": rss,
        "engine_cpu_s": cpu_s,
        "db": summary,
    }


def resume_prepare(stack: Stack, workdir: Path, name: str, n: int, database_url: str | None = None):
    site = make_site(stack, workdir, name, agents=1, capacity=1, database_url=database_url)
    site.log_level = "INFO"  # the engine logs how long building its routing index took
    postroom_load(site)
    res = dbtool(site, "bulk", str(n), "--mailbox", site.support)
    log(f"resume {name}: {res['inserted']} interactions bulk-inserted in {res['seconds']} s")
    agents_ready(site)
    return site


def resume_run(site, rep: int, timeout: float = 300) -> dict:
    if rep:
        dbtool(site, "requeue")
    db = DbWatch(site.database_url)
    agent = site.agents[0]
    agent_id = db.scalar("SELECT id FROM store_agent WHERE address = ?", (agent,))
    engine = start_engine(site, f"engine-{rep}")
    try:
        t1 = wait_until(
            lambda: db.scalar(
                "SELECT id FROM store_interaction WHERE agent_id = ? LIMIT 1", (agent_id,)
            ) is not None,
            timeout,
            0.02,
            alive=engine,
        )
        if t1 is None:
            raise RuntimeError(f"nothing routed to {agent} in {timeout} s:\n{engine.tail()}")
        elapsed = t1 - engine.started
        rss = engine.vm_hwm_mb()
    finally:
        engine.stop()
        db.close()
    index = None
    for line in engine.tail(200_000).splitlines():
        if "routing index built" in line:
            index = line.split("routing index built:", 1)[1].strip()
    log(f"resume rep {rep + 1}: routed again {elapsed:.2f} s after engine start (index: {index})")
    return {"seconds": elapsed, "engine_peak_rss_mb": rss, "index_build": index}
