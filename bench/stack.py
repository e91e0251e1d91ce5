"""Figure 1: the mail stack's own ceiling, with a minimal client (stdlib smtplib + imaplib).

* ``stack_latency``: SMTP 250 → the message counted by STATUS, polled every 2 ms.
* ``stack_idle``: SMTP 250 → ``* N EXISTS`` on an IDLEing connection. Dovecot holds an IDLE
  notice ~0.5 s (NOTIFY_DELAY_MSECS), so sequential samples would cost 0.5 s each; instead
  ``IDLE_BOXES`` mailboxes, each IDLEd on by its own connection, take turns: one message
  every ``IDLE_SPACING`` s overall, so each box sees one message per IDLE_BOXES*IDLE_SPACING
  s and every notice is for exactly one message (the load is ~13 msg/s, far from the
  ceiling).
* ``stack_ceiling``: one SMTP connection submits N messages back to back; the rate is N ÷
  (time until STATUS shows all N in the mailbox).

Same message set (the bundled customer samples, re-addressed) as the Postroom phases.
"""

from __future__ import annotations

import contextlib
import threading
import time

from bench.common import (
    CpuMeter,
    Stack,
    envelope_from,
    log,
    make_messages,
    percentile,
    status_counts,
)

POLL = 0.002
IDLE_BOXES = 8
IDLE_SPACING = 0.075


def latency_run(stack: Stack, box: str, n: int, run: str) -> list[float]:
    msgs = make_messages(n, box, run)
    watcher = stack.imap(box)
    smtp = stack.smtp()
    out = []
    try:
        have, _ = status_counts(watcher)
        for _marker, raw in msgs:
            smtp.sendmail(envelope_from(raw), [box], raw)
            t250 = time.monotonic()
            deadline = t250 + 30
            while True:
                count, _ = status_counts(watcher)
                if count > have:
                    out.append(time.monotonic() - t250)
                    have = count
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{box}: message not visible after 30 s")
                time.sleep(POLL)
    finally:
        with contextlib.suppress(Exception):
            smtp.quit()
        with contextlib.suppress(Exception):
            watcher.logout()
    return out


class _Idler(threading.Thread):
    """One IDLEing connection; stamps every ``* N EXISTS`` with the time it was read."""

    def __init__(self, stack: Stack, box: str) -> None:
        super().__init__(daemon=True, name=f"idle-{box}")
        self.conn = stack.imap(box)
        typ, data = self.conn.select("INBOX")
        self.start_count = int(data[0])
        self.stamps: dict[int, float] = {}
        self.tag = self.conn._new_tag()
        self.conn.send(self.tag + b" IDLE\r\n")
        line = self.conn.readline()
        if not line.startswith(b"+"):
            raise RuntimeError(f"IDLE refused: {line!r}")
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                line = self.conn.readline()
            except OSError:
                return
            if not line:
                return
            now = time.monotonic()
            parts = line.split()
            if len(parts) >= 3 and parts[0] == b"*" and parts[2].upper() == b"EXISTS":
                self.stamps.setdefault(int(parts[1]), now)
            elif parts and parts[0] == self.tag:
                return

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(b"DONE\r\n")
        self.join(5)
        with contextlib.suppress(Exception):
            self.conn.logout()


def idle_run(stack: Stack, boxes: list[str], n: int, run: str) -> list[float]:
    idlers = [_Idler(stack, b) for b in boxes]
    for idler in idlers:
        idler.start()
    msgs = make_messages(n, boxes[0], run)
    smtp = stack.smtp()
    sent: list[tuple[int, int, float]] = []  # (box index, expected EXISTS, t250)
    counts = [i.start_count for i in idlers]
    try:
        next_at = time.monotonic()
        for k, (_marker, raw) in enumerate(msgs):
            b = k % len(boxes)
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += IDLE_SPACING
            smtp.sendmail(envelope_from(raw), [boxes[b]], raw)
            counts[b] += 1
            sent.append((b, counts[b], time.monotonic()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            counts[b] not in idlers[b].stamps for b in range(len(boxes))
        ):
            time.sleep(0.05)
    finally:
        with contextlib.suppress(Exception):
            smtp.quit()
        for idler in idlers:
            idler.finish()
    out = []
    for b, expected, t250 in sent:
        # A notice may cover two messages (EXISTS jumps by 2): the later count stamps both.
        stamps = [t for c, t in idlers[b].stamps.items() if c >= expected]
        if stamps:
            out.append(min(stamps) - t250)
    if len(out) < len(sent):
        log(f"stack idle: {len(sent) - len(out)} of {len(sent)} notices never came")
    return out


def ceiling_run(stack: Stack, box: str, n: int, run: str) -> float:
    msgs = make_messages(n, box, run)
    watcher = stack.imap(box)
    have, _ = status_counts(watcher)
    smtp = stack.smtp()
    try:
        t0 = time.monotonic()
        for _marker, raw in msgs:
            smtp.sendmail(envelope_from(raw), [box], raw)
        t_sent = time.monotonic()
        while True:
            count, _ = status_counts(watcher)
            if count >= have + n:
                break
            if time.monotonic() - t_sent > 120:
                raise RuntimeError(f"{box}: only {count - have} of {n} visible after 120 s")
            time.sleep(POLL * 5)
        t1 = time.monotonic()
    finally:
        with contextlib.suppress(Exception):
            smtp.quit()
        with contextlib.suppress(Exception):
            watcher.logout()
    log(f"stack ceiling: {n} msgs, 250s at {n / (t_sent - t0):.0f}/s, visible at {n / (t1 - t0):.0f}/s")
    return n / (t1 - t0)


def measure(stack: Stack, *, reps: int, latency_n: int, idle_n: int, ceiling_n: int) -> dict:
    """All three, round-robin over ``reps`` repetitions; raw per-repetition figures."""
    boxes_needed = []
    for r in range(reps):
        boxes_needed += [f"ceil-lat{r}@example.test", f"ceil-sus{r}@example.test"]
        boxes_needed += [f"ceil-idle{r}-{b}@example.test" for b in range(IDLE_BOXES)]
    stack.add((b, "pw-ceiling") for b in boxes_needed if b not in stack.users)
    reps_out = []
    for r in range(reps):
        rep: dict = {}
        with CpuMeter() as cpu:
            lat = latency_run(stack, f"ceil-lat{r}@example.test", latency_n, f"cl{r}")
        rep["latency_p50_s"] = percentile(lat, 50)
        rep["latency_p99_s"] = percentile(lat, 99)
        rep["latency_cpu_busy_pct"] = cpu.busy_pct
        with CpuMeter() as cpu:
            idle = idle_run(
                stack, [f"ceil-idle{r}-{b}@example.test" for b in range(IDLE_BOXES)], idle_n, f"ci{r}"
            )
        rep["idle_p50_s"] = percentile(idle, 50)
        rep["idle_p99_s"] = percentile(idle, 99)
        rep["idle_samples"] = len(idle)
        rep["idle_cpu_busy_pct"] = cpu.busy_pct
        with CpuMeter() as cpu:
            rep["ceiling_msgs_per_s"] = ceiling_run(stack, f"ceil-sus{r}@example.test", ceiling_n, f"cs{r}")
        rep["ceiling_cpu_busy_pct"] = cpu.busy_pct
        log(
            f"stack rep {r + 1}/{reps}: latency p50/p99 {rep['latency_p50_s'] * 1000:.1f}/"
            f"{rep['latency_p99_s'] * 1000:.1f} ms, idle p50/p99 {rep['idle_p50_s'] * 1000:.0f}/"
            f"{rep['idle_p99_s'] * 1000:.0f} ms, ceiling {rep['ceiling_msgs_per_s']:.0f} msg/s"
        )
        reps_out.append(rep)
    return {"reps": reps_out, "latency_n": latency_n, "idle_n": idle_n, "ceiling_n": ceiling_n}
