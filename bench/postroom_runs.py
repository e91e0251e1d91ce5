"""Postroom measured as a user runs it: latency, steady state, throughput, ingest, backlog,
resume.

Every run gets fresh mailboxes, a config TOML and a database of its own; the engine is
``.venv/bin/postroom engine CONFIG`` in a separate process, and everything is observed
from outside: mail in the real IMAP mailboxes, the tracking records in the database
(read-only SQL), the CPU of the engine's and the mail stack's processes (/proc).

* latency: customer mail over SMTP (MX) at a steady rate → the forwarded copy visible in
  an agent's IMAP inbox (STATUS polled every ~5 ms), agents Ready with auto-answer.
* sustained: the same, open loop, at rising fixed arrival rates with agents replying; a
  rate holds when the forward latency p99 stays within 2× the floor and every interaction
  of the step is complete (auto-response and reply sent) soon after the step.
* throughput: N customer mails pushed in as fast as the MX takes them; simulated agents
  (bench/agents.py) answer at once; the rate is N ÷ (first mail sent → every auto-response
  and reply delivered in the customers' boxes and every journal copy in the journal box).
* ingest: the incoming box pre-filled (IMAP APPEND), no agent Ready; first IMAP FETCH →
  the last interaction recorded (without auto-responses) or the last auto-response
  recorded sent (bench/hooks/sitecustomize.py stamps the FETCH).
* backlog: a box holding 100,000 mails when the engine starts: first FETCH → all taken,
  peak RSS, progress as the engine logs it.
* resume: N QUEUED interactions bulk-inserted; engine start → the one Ready auto-answer
  agent has an interaction routed to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from bench.common import (
    BENCH,
    CUSTOMERS,
    PY,
    CpuMeter,
    DbWatch,
    InboxWatcher,
    Process,
    Site,
    Stack,
    agents_ready,
    dbtool,
    envelope_from,
    log,
    make_messages,
    make_site,
    percentile,
    postroom_load,
    start_engine,
    status_counts,
    wait_until,
)

HOOKS = BENCH / "hooks"


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


def start_agents(stack: Stack, site) -> Process:
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
    return Process([PY, str(BENCH / "agents.py"), str(spec_file)], site.env(), site.workdir / "agents.log")


class Counts:
    """How many messages a set of mailboxes gained since it was made (STATUS)."""

    def __init__(self, stack: Stack, boxes: list[str]) -> None:
        self.conns = {box: stack.imap(box) for box in boxes}
        self.start = {box: status_counts(c)[0] for box, c in self.conns.items()}

    def gained(self, box: str) -> int:
        return status_counts(self.conns[box])[0] - self.start[box]

    def close(self) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(Exception):
                conn.logout()


def send_open_loop(stack: Stack, to: str, msgs: list[tuple[str, bytes]], rate: float) -> dict[str, float]:
    """Send at a fixed rate whatever happens to earlier mail (open loop); marker → 250 time."""
    sent: dict[str, float] = {}
    smtp = stack.smtp()
    try:
        next_at = time.monotonic()
        for marker, raw in msgs:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += 1.0 / rate
            smtp.sendmail(envelope_from(raw), [to], raw)
            sent[marker] = time.monotonic()
    finally:
        with contextlib.suppress(Exception):
            smtp.quit()
    return sent


def running_site(stack: Stack, workdir: Path, prefix: str, *, agents: int, capacity: int) -> tuple[Site, DbWatch, Process]:
    """A fresh site with its database loaded, its agents Ready and one engine started."""
    site = make_site(stack, workdir, prefix, agents=agents, capacity=capacity)
    postroom_load(site)
    agents_ready(site)
    return site, DbWatch(site.database_url), start_engine(site)


def latency_run(stack: Stack, workdir: Path, rep: int, n: int, rate: float, agents: int = 2) -> dict:
    site, db, engine = running_site(stack, workdir, f"lat{rep}", agents=agents, capacity=max(1, n))
    watcher = None
    try:
        wait_engine_watching(site, db, engine)
        time.sleep(1.0)  # let the watcher settle into IDLE
        watcher = InboxWatcher(stack, site.agents)
        watcher.start()
        msgs = make_messages(n, site.support, f"L{rep}")
        with CpuMeter() as cpu:
            t_start = time.monotonic()
            sent = send_open_loop(stack, site.support, msgs, rate)
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


def complete(db: DbWatch, marker_prefix: str | None = None) -> int:
    """Interactions (of one step, by the marker in their subject) whose auto-response and
    reply are both recorded sent."""
    where = "auto_response_sent_at IS NOT NULL AND replied_at IS NOT NULL"
    if marker_prefix:
        where += f" AND subject LIKE '%[bench {marker_prefix}-%'"
    return db.count(where)


def sustained_run(
    stack: Stack, workdir: Path, rates: list[float], step_s: float, drain_s: float, limit_s: float | None,
    agents: int = 4,
) -> dict:
    """Open-loop steps at rising arrival rates on one engine; stops after the first rate
    that does not hold. ``limit_s``: the forward latency p99 a rate may have (2× the
    floor), or None when the floor was not measured (then only completeness judges)."""
    site, db, engine = running_site(stack, workdir, "sus", agents=agents, capacity=1_000_000)
    sim = start_agents(stack, site)
    watcher = None
    steps = []
    try:
        wait_engine_watching(site, db, engine)
        time.sleep(1.0)
        watcher = InboxWatcher(stack, site.agents)
        watcher.start()
        for k, rate in enumerate(rates):
            n = max(1, round(rate * step_s))
            prefix = f"S{k}"
            msgs = make_messages(n, site.support, prefix, seed=100 + k)
            with CpuMeter() as cpu:
                sent = send_open_loop(stack, site.support, msgs, rate)
                t_end = time.monotonic()
                done = wait_until(lambda p=prefix, n=n: complete(db, p) >= n, drain_s, 0.1, alive=engine)
            lat = [watcher.seen[m] - t for m, t in sent.items() if m in watcher.seen]
            p99 = percentile(lat, 99) if len(lat) == n else None
            held = done is not None and p99 is not None and (limit_s is None or p99 <= limit_s)
            step = {
                "rate": rate, "n": n, "p50": percentile(lat, 50), "p99": p99, "forwards_seen": len(lat),
                "complete": complete(db, prefix), "completed_after_s": None if done is None else done - t_end,
                "held": held, "cpu_busy_pct": cpu.busy_pct,
            }
            steps.append(step)
            log(f"sustained {rate:g}/s: {step['complete']}/{n} complete "
                f"{'' if done is None else f'{done - t_end:.1f} s after the step'}, forward p99 "
                f"{'—' if p99 is None else f'{p99:.3f}'} s (limit {limit_s or '—'}) → {'held' if held else 'NOT held'}")
            if not held:
                break
        rss = engine.vm_hwm_mb()
    finally:
        if watcher is not None:
            watcher.close()
        engine.stop()
        sim.stop()
        db.close()
    held = [s for s in steps if s["held"]]
    return {"steps": steps, "step_s": step_s, "drain_s": drain_s, "limit_s": limit_s,
            "sustained": held[-1]["rate"] if held else None, "p99_at_sustained": held[-1]["p99"] if held else None,
            "engine_peak_rss_mb": rss}


def throughput_run(stack: Stack, workdir: Path, rep: int, n: int, agents: int = 4, timeout: float = 900) -> dict:
    site, db, engine = running_site(stack, workdir, f"thr{rep}", agents=agents, capacity=max(1, n))
    sim = start_agents(stack, site)
    counts = None
    try:
        wait_engine_watching(site, db, engine)
        time.sleep(1.0)
        counts = Counts(stack, [*CUSTOMERS, site.journal])
        msgs = make_messages(n, site.support, f"T{rep}")
        progress: list[tuple[float, int]] = []
        engine_cpu0, stack_cpu0, agents_cpu0 = engine.cpu_seconds(), stack.cpu_seconds(), sim.cpu_seconds()
        smtp = stack.smtp()
        with CpuMeter() as cpu:
            t0 = time.monotonic()
            for _marker, raw in msgs:
                smtp.sendmail(envelope_from(raw), [site.support], raw)
            with contextlib.suppress(Exception):
                smtp.quit()
            t_sent = time.monotonic()
            log(f"throughput rep {rep + 1}: {n} customer mails accepted in {t_sent - t0:.1f} s")

            def delivered() -> bool:
                c = complete(db)
                if not progress or progress[-1][1] != c:
                    progress.append((time.monotonic() - t0, c))
                if c < n:
                    return False
                # Recorded sent; now every copy in its box: the customers' auto-responses
                # and replies, and the journal's copy of all three mails Postroom sent.
                return sum(counts.gained(b) for b in CUSTOMERS) >= 2 * n and counts.gained(site.journal) >= 3 * n

            t1 = wait_until(delivered, timeout, 0.1, alive=engine)
            # The interactions' own work goes on after the last reply (archiving, closing):
            # CPU is counted until every one is closed.
            t2 = wait_until(lambda: db.count("status = 'closed'") >= n, 120, 0.1, alive=engine)
        engine_cpu = engine.cpu_seconds() - engine_cpu0
        stack_cpu = stack.cpu_seconds() - stack_cpu0
        agents_cpu = sim.cpu_seconds() - agents_cpu0
        rss = engine.vm_hwm_mb()
        finished = t1 is not None
        elapsed = (t1 if finished else time.monotonic()) - t0
        done = complete(db)
    finally:
        if counts is not None:
            counts.close()
        engine.stop()
        sim.stop()
        db.close()
    summary = dbtool(site, "summary")
    rate = done / elapsed if elapsed > 0 else None
    log(
        f"throughput rep {rep + 1}: {done}/{n} complete in {elapsed:.1f} s = {rate:.2f}/s (all closed "
        f"{'' if t2 is None else f'{t2 - t0:.1f} s'}); per interaction: engine CPU {1000 * engine_cpu / n:.1f} ms, "
        f"stack {1000 * stack_cpu / n:.1f} ms, agents {1000 * agents_cpu / n:.1f} ms; engine peak RSS {rss:.0f} MB, "
        f"machine cpu {cpu.busy_pct}%"
    )
    return {
        "interactions_per_s": rate,
        "completed": done,
        "n": n,
        "finished": finished,
        "seconds": elapsed,
        "closed_after_s": None if t2 is None else t2 - t0,
        "engine_peak_rss_mb": rss,
        "engine_cpu_s": engine_cpu,
        "stack_cpu_s": stack_cpu,
        "agents_cpu_s": agents_cpu,
        "cpu_busy_pct": cpu.busy_pct,
        "progress": progress[:: max(1, len(progress) // 60)],
        "db": summary,
    }


def stamped_env(env: dict[str, str], stamps: Path) -> dict[str, str]:
    """``env`` with the IMAP stamp hook (bench/hooks/sitecustomize.py) switched on."""
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOKS), env.get("PYTHONPATH", "")) if p)
    env["BENCH_IMAP_STAMPS"] = str(stamps)
    stamps.unlink(missing_ok=True)
    return env


def read_stamps(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
    stamps = site.workdir / "imap-stamps.json"
    with CpuMeter() as cpu:
        engine = start_engine(site, env=stamped_env(site.env(), stamps))
        try:
            t1 = wait_until(lambda: db.count(where) >= n, timeout, 0.02, alive=engine)
            wall_end = time.time() - (time.monotonic() - (t1 or time.monotonic()))
            got = db.count(where)
            from_launch = (t1 or time.monotonic()) - engine.started
            rss = engine.vm_hwm_mb()
            cpu_s = engine.cpu_seconds()
        finally:
            engine.stop()
            db.close()
    stamped = read_stamps(stamps)
    first_fetch = stamped.get("first_fetch")
    if first_fetch is None:
        raise RuntimeError(f"postroom ingest: no FETCH stamp in {stamps}:\n{engine.tail()}")
    elapsed = wall_end - first_fetch
    # From the first FETCH, like the time: start-up (config, Django, migrations) is not
    # ingest (issue 9, decision 0043).
    cpu_from_launch = cpu_s
    cpu_s -= stamped.get("first_fetch_cpu", 0.0)
    summary = dbtool(site, "summary")
    rate = got / elapsed
    log(
        f"postroom ingest {'ack' if ack else 'noack'} rep {rep + 1}: {got}/{n} in {elapsed:.2f} s from the first "
        f"FETCH = {rate:.1f}/s ({from_launch:.2f} s from launch; refill {fill:.1f} s), engine CPU {cpu_s:.1f} s from the "
        f"first FETCH ({cpu_from_launch:.1f} s from launch), "
        f"machine cpu {cpu.busy_pct}%"
    )
    return {
        "per_s": rate,
        "seconds": elapsed,
        "seconds_from_launch": from_launch,
        "done": got,
        "n": n,
        "finished": t1 is not None,
        "refill_s": fill,
        "cpu_busy_pct": cpu.busy_pct,
        "engine_peak_rss_mb": rss,
        "engine_cpu_s": cpu_s,
        "engine_cpu_s_from_launch": cpu_from_launch,
        "db": summary,
    }


def backlog_run(stack: Stack, workdir: Path, raws: list[bytes], n: int, timeout: float = 1500) -> dict:
    """A box that holds ``n`` mails when the engine starts (written straight into its
    Maildir, as a restored or long-unwatched box would be): first FETCH → all taken."""
    site = make_site(stack, workdir, "backlog", agents=1, auto_response=False)
    site.log_level = "INFO"  # the engine's own progress lines
    t0 = time.monotonic()
    # The samples cycled, each copy a mail of its own: a Message-ID of its own, or the
    # engine would rightly take the copies as duplicates (core/dedupe.py).
    copies = (raws[i % len(raws)].replace(b"<bench-", f"<bench-c{i}-".encode(), 1) for i in range(n))
    stack.fill_maildir(site.support, copies)
    log(f"backlog: {n:,} mails written into {site.support}'s Maildir in {time.monotonic() - t0:.1f} s")
    postroom_load(site)
    db = DbWatch(site.database_url)
    stamps = site.workdir / "imap-stamps.json"
    engine = start_engine(site, env=stamped_env(site.env(), stamps))
    progress: list[tuple[float, int]] = []
    try:
        last_log = 0.0

        def taken() -> bool:
            nonlocal last_log
            c = db.count()
            now = time.monotonic()
            if now - last_log >= 10:
                progress.append((round(now - engine.started, 1), c))
                log(f"backlog: {c:,} of {n:,} taken, engine RSS peak {engine.vm_hwm_mb() or 0:.0f} MB")
                last_log = now
            return c >= n

        t1 = wait_until(taken, timeout, 0.5, alive=engine)
        wall_end = time.time() - (time.monotonic() - (t1 or time.monotonic()))
        got = db.count()
        rss = engine.vm_hwm_mb()
        cpu_s = engine.cpu_seconds()
    finally:
        engine.stop()
        db.close()
    first_fetch = read_stamps(stamps).get("first_fetch")
    elapsed = wall_end - first_fetch if first_fetch else None
    shown = [line for line in engine.tail(400_000).splitlines() if "backlog" in line]
    log(f"backlog: {got:,}/{n:,} taken in {elapsed or float('nan'):.1f} s from the first FETCH, peak RSS {rss:.0f} MB, "
        f"engine CPU {cpu_s:.0f} s")
    return {"n": n, "taken": got, "seconds": elapsed, "per_s": got / elapsed if elapsed else None,
            "finished": t1 is not None, "engine_peak_rss_mb": rss, "engine_cpu_s": cpu_s,
            "progress": progress, "engine_progress_lines": shown[:3] + shown[-3:]}


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
