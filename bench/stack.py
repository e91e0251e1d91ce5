"""Figure 1: the mail stack's own floor and ceiling, with minimal clients.

* ``stack_latency``: SMTP 250 → the message counted by STATUS, polled every 2 ms.
* ``stack_idle``: SMTP 250 → ``* N EXISTS`` on an IDLEing connection. Dovecot holds an IDLE
  notice ~0.5 s (NOTIFY_DELAY_MSECS), so sequential samples would cost 0.5 s each; instead
  ``IDLE_BOXES`` mailboxes, each IDLEd on by its own connection, take turns: one message
  every ``IDLE_SPACING`` s overall, so each box sees one message per IDLE_BOXES*IDLE_SPACING
  s and every notice is for exactly one message (the load is ~13 msg/s, far from the
  ceiling).
* ``floor``: the latency figure's floor, the combined path any engine must take, at the
  latency run's arrival rate: customer mail to the MX; a minimal forwarder (IMAPClient,
  the IMAP library Postroom uses) waits for IDLE's notice, fetches the new mail and
  submits it to another box over a kept, authenticated STARTTLS session (with the journal
  box as one more recipient, as Postroom's forward has); SMTP 250 → visible in that box.
* ``pattern``: the ceiling for the work of complete interactions, without Postroom: the
  five mails of each (customer mail to the MX; auto-response, forward and reply submitted
  as the contact center, each with its journal copy; the agent's reply submitted as the
  agent), prebuilt with Postroom's own composers, through the same ports, STARTTLS and
  authentication, over as many connections as Postroom's run uses (one to the MX, the
  outbox's connections, one per agent), back to back; the rate is interactions ÷ (first
  byte → every mail visible in its box). The CPU Dovecot and Postfix spent on it (their
  process trees, /proc) and the client's own are recorded.

Same message set (the bundled customer samples, re-addressed) as the Postroom phases.
"""

from __future__ import annotations

import contextlib
import queue
import smtplib
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes

from imapclient import IMAPClient

from bench.common import (
    CUSTOMERS,
    HOST,
    CpuMeter,
    InboxWatcher,
    Stack,
    envelope_from,
    log,
    make_messages,
    percentile,
    status_counts,
)
from postroom.core.compose import auto_response, forward_to_agent, reply_to_customer
from postroom.core.correlation import forward_message_id, mint_token, reply_address, subject_tag
from postroom.core.headers import POLICY
from postroom_sim import compose_reply

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



# -- the floor of the latency figure: the combined path at the latency run's rate ----------


class NullForwarder(threading.Thread):
    """The least an engine can do between a customer's mail and the agent's copy: wait for
    IDLE's notice (with the same strategy as Postroom's watcher: a short IDLE after each
    pass, because Dovecot does not announce mail that arrived between the last SEARCH and
    the IDLE), fetch what is new, submit it to the agent's box over one kept, authenticated
    STARTTLS session, with the journal box as a second recipient."""

    def __init__(self, stack: Stack, box: str, target: str, journal: str) -> None:
        super().__init__(daemon=True, name="null-forwarder")
        self.box, self.target, self.journal = box, target, journal
        self.imap = IMAPClient(HOST, port=stack.imap_port, ssl=False, timeout=60)
        self.imap.starttls(stack.tls())
        self.imap.login(box, stack.users[box])
        info = self.imap.select_folder("INBOX")
        self.next_uid = int(info[b"UIDNEXT"])
        self.smtp = stack.submission(box)
        self.stop_flag = threading.Event()
        self.forwarded = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                uids = [u for u in self.imap.search(["UID", f"{self.next_uid}:*"]) if u >= self.next_uid]
                if uids:
                    data = self.imap.fetch(uids, ["BODY.PEEK[]"])
                    for uid in sorted(data):
                        self.smtp.sendmail(self.box, [self.target, self.journal], data[uid][b"BODY[]"])
                        self.forwarded += 1
                    self.next_uid = max(uids) + 1
                    continue
                self.imap.idle()
                try:
                    self.imap.idle_check(timeout=1.0)
                finally:
                    self.imap.idle_done()
        except BaseException as exc:  # reported by the phase
            self.error = exc

    def close(self) -> None:
        self.stop_flag.set()
        self.join(5)
        for close in (self.imap.logout, self.smtp.quit):
            with contextlib.suppress(Exception):
                close()


def floor_run(stack: Stack, rep: int, n: int, rate: float) -> dict:
    box, target, journal = (f"floor{rep}-{name}@example.test" for name in ("support", "agent", "journal"))
    stack.add((b, "pw-floor") for b in (box, target, journal) if b not in stack.users)
    forwarder = NullForwarder(stack, box, target, journal)
    watcher = InboxWatcher(stack, [target])
    forwarder.start()
    watcher.start()
    time.sleep(1.0)  # let the forwarder settle into IDLE, as the latency run lets the engine
    msgs = make_messages(n, box, f"F{rep}")
    sent: dict[str, float] = {}
    smtp = stack.smtp()
    try:
        with CpuMeter() as cpu:
            next_at = time.monotonic()
            for marker, raw in msgs:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += 1.0 / rate
                smtp.sendmail(envelope_from(raw), [box], raw)
                sent[marker] = time.monotonic()
            deadline = time.monotonic() + 30
            while len(watcher.seen) < n and time.monotonic() < deadline and not (watcher.error or forwarder.error):
                time.sleep(0.05)
    finally:
        with contextlib.suppress(Exception):
            smtp.quit()
        forwarder.close()
        watcher.close()
    if forwarder.error or watcher.error:
        raise RuntimeError(f"floor: {forwarder.error or watcher.error!r}")
    lat = [watcher.seen[m] - t for m, t in sent.items() if m in watcher.seen]
    log(f"floor rep {rep + 1}: {len(lat)}/{n} at {rate}/s, p50 {percentile(lat, 50):.3f} p99 "
        f"{percentile(lat, 99):.3f} s, cpu {cpu.busy_pct}%")
    return {"p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99), "max_s": max(lat, default=None),
            "n": n, "seen": len(lat), "rate": rate, "cpu_busy_pct": cpu.busy_pct}


# -- the ceiling for the same work: the mail of complete interactions, no engine ------------


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: tuple[str, ...]
    raw: bytes


@dataclass
class Pattern:
    """Every mail of ``n`` interactions, prebuilt, by the connection that sends it."""

    customer: list[Mail]  # to the MX, one connection
    center: list[Mail]  # auto-response, forward, reply of each interaction, in that order
    agents: dict[str, list[Mail]]  # each agent's replies
    boxes: dict[str, int]  # box → how many mails it must receive


def build_pattern(n: int, *, support: str, outbound: str, journal: str, agents: Sequence[str], run: str) -> Pattern:
    """The five mails of each interaction as Postroom's own composers build them (the
    same sizes and headers), the journal box a recipient of the three Postroom sends."""
    customer, center = [], []
    by_agent: dict[str, list[Mail]] = {a: [] for a in agents}
    boxes: dict[str, int] = {support: n, outbound: n, journal: 3 * n}
    for marker, raw in make_messages(n, support, run):
        i = int(marker.rsplit("-", 1)[1])
        original = message_from_bytes(raw, policy=POLICY)
        who = envelope_from(raw)
        agent = agents[i % len(agents)]
        token = mint_token(b"bench-pattern-key", uuid.uuid4(), agent)
        ar = auto_response(original, box_address=support, box_name="Bench Support", customer=who,
                           text="Thank you for your message.", message_id=f"<ar-{marker}@postroom.example.test>",
                           reference=marker)
        forward = forward_to_agent(original, agent=agent, agent_name="Agent", reply_to=reply_address(outbound, token),
                                   message_id=forward_message_id(token, 1, "postroom.example.test"),
                                   tag=subject_tag(token), guid=uuid.uuid4(), box_address=support,
                                   box_name="Bench Support")
        answer = compose_reply(forward, agent_addr=agent, agent_name="Agent", style="thunderbird",
                               text="Your parcel left our warehouse this morning.")
        reply = reply_to_customer(answer, box_address=support, box_name="Bench Support", customer=who,
                                  original_message_id=str(original["Message-ID"]), original_references=[],
                                  message_id=f"<re-{marker}@postroom.example.test>", subject=str(original["Subject"]))
        customer.append(Mail(who, (support,), raw))
        center += [Mail("", (who, journal), ar.as_bytes()), Mail(outbound, (agent, journal), forward.as_bytes()),
                   Mail(support, (who, journal), reply.as_bytes())]
        by_agent[agent].append(Mail(agent, (reply_address(outbound, token),), answer.as_bytes()))
        boxes[agent] = boxes.get(agent, 0) + 1
        box = who.split("+", 1)[0] + "@" + who.split("@", 1)[1]
        boxes[box] = boxes.get(box, 0) + 2
    return Pattern(customer, center, by_agent, boxes)


def pattern_run(stack: Stack, rep: int, n: int, center_connections: int, agents: int) -> dict:
    prefix = f"pat{rep}"
    support, outbound, journal = (f"{prefix}-{name}@example.test" for name in ("support", "outbound", "journal"))
    agent_boxes = [f"{prefix}-agent{i}@example.test" for i in range(1, agents + 1)]
    stack.add((b, f"pw-{b.split('@')[0]}") for b in (support, outbound, journal, *agent_boxes, *CUSTOMERS)
              if b not in stack.users)
    pattern = build_pattern(n, support=support, outbound=outbound, journal=journal, agents=agent_boxes, run=f"P{rep}")
    # Every session open before the clock starts: Postroom's are kept open too.
    lanes: list[tuple[smtplib.SMTP, queue.SimpleQueue | list[Mail]]] = []
    work: queue.SimpleQueue[Mail] = queue.SimpleQueue()
    for mail in pattern.center:
        work.put(mail)
    lanes += [(stack.submission(outbound), work) for _ in range(center_connections)]
    lanes += [(stack.submission(a), pattern.agents[a]) for a in agent_boxes]
    lanes.append((stack.smtp(), pattern.customer))
    watch = {box: stack.imap(box) for box in pattern.boxes}
    start_counts = {box: status_counts(conn)[0] for box, conn in watch.items()}
    errors: list[BaseException] = []
    go = threading.Barrier(len(lanes) + 1)

    def send(smtp: smtplib.SMTP, mails: queue.SimpleQueue | list[Mail]) -> None:
        try:
            go.wait()
            items = iter(mails) if isinstance(mails, list) else iter(lambda: _take(mails), None)
            for mail in items:
                smtp.sendmail(mail.sender, list(mail.recipients), mail.raw)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=lane, daemon=True) for lane in lanes]
    for t in threads:
        t.start()
    stack_cpu0, client_cpu0 = stack.cpu_seconds(), time.process_time()
    with CpuMeter() as cpu:
        go.wait()
        t0 = time.monotonic()
        waiting = dict(pattern.boxes)
        while waiting and not errors:
            for box in list(waiting):
                if status_counts(watch[box])[0] - start_counts[box] >= pattern.boxes[box]:
                    del waiting[box]
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"pattern: not delivered after 300 s: {waiting}")
            time.sleep(0.01)
        t1 = time.monotonic()
    stack_cpu, client_cpu = stack.cpu_seconds() - stack_cpu0, time.process_time() - client_cpu0
    for t in threads:
        t.join(5)
    for smtp, _ in lanes:
        with contextlib.suppress(Exception):
            smtp.quit()
    for conn in watch.values():
        with contextlib.suppress(Exception):
            conn.logout()
    if errors:
        raise RuntimeError(f"pattern: {errors[0]!r}")
    rate = n / (t1 - t0)
    mails = len(pattern.customer) + len(pattern.center) + sum(len(v) for v in pattern.agents.values())
    log(f"pattern rep {rep + 1}: {n} interactions ({mails} SMTP transactions, {sum(pattern.boxes.values())} "
        f"deliveries) in {t1 - t0:.1f} s = {rate:.1f}/s; stack CPU {1000 * stack_cpu / n:.1f} ms, client "
        f"{1000 * client_cpu / n:.1f} ms per interaction; machine cpu {cpu.busy_pct}%")
    return {"interactions_per_s": rate, "seconds": t1 - t0, "n": n, "transactions": mails,
            "deliveries": sum(pattern.boxes.values()), "connections": len(lanes),
            "stack_cpu_s": stack_cpu, "client_cpu_s": client_cpu, "cpu_busy_pct": cpu.busy_pct}


def _take(q: queue.SimpleQueue) -> Mail | None:
    try:
        return q.get_nowait()
    except queue.Empty:
        return None


def measure(stack: Stack, *, reps: int, latency_n: int, idle_n: int) -> dict:
    """The stack's own latency and IDLE notice delay, round-robin over ``reps``."""
    boxes_needed = []
    for r in range(reps):
        boxes_needed += [f"ceil-lat{r}@example.test"]
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
        log(
            f"stack rep {r + 1}/{reps}: latency p50/p99 {rep['latency_p50_s'] * 1000:.1f}/"
            f"{rep['latency_p99_s'] * 1000:.1f} ms, idle p50/p99 {rep['idle_p50_s'] * 1000:.0f}/"
            f"{rep['idle_p99_s'] * 1000:.0f} ms"
        )
        reps_out.append(rep)
    return {"reps": reps_out, "latency_n": latency_n, "idle_n": idle_n}


# -- the ceiling for ingest: the same mails read and answered, no engine --------------------


def ingest_ceiling_run(stack: Stack, box: str, raws: list[bytes], rep: int, connections: int, batch: int = 50) -> dict:
    """The stack's rate for ingest's mails: a minimal client reads the box in FETCH
    batches (as Postroom does) and submits one auto-response per mail (prebuilt with
    Postroom's composer, journal copy included) over ``connections`` kept sessions; first
    FETCH → last 250."""
    journal = f"ingceil{rep}-journal@example.test"
    stack.add([(journal, "pw-journal")] if journal not in stack.users else [])
    stack.empty(box)
    stack.append_all(box, raws)
    answers = []
    for raw in raws:
        original = message_from_bytes(raw, policy=POLICY)
        who = envelope_from(raw)
        ar = auto_response(original, box_address=box, box_name="Bench Support", customer=who,
                           text="Thank you for your message.", message_id=f"<ar-{len(answers)}@postroom.example.test>",
                           reference=str(len(answers)))
        answers.append(Mail("", (who, journal), ar.as_bytes()))
    imap = IMAPClient(HOST, port=stack.imap_port, ssl=False, timeout=60)
    imap.starttls(stack.tls())
    imap.login(box, stack.users[box])
    imap.select_folder("INBOX")
    senders = [stack.submission(box) for _ in range(connections)]
    work: queue.SimpleQueue[Mail | None] = queue.SimpleQueue()
    errors: list[BaseException] = []
    last_250 = [0.0]

    def send(smtp: smtplib.SMTP) -> None:
        try:
            while (mail := work.get()) is not None:
                smtp.sendmail(mail.sender, list(mail.recipients), mail.raw)
                last_250[0] = max(last_250[0], time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in senders]
    for t in threads:
        t.start()
    stack_cpu0 = stack.cpu_seconds()
    with CpuMeter() as cpu:
        uids = sorted(imap.search(["ALL"]))
        t0 = time.monotonic()
        k = 0
        for start in range(0, len(uids), batch):
            data = imap.fetch(uids[start : start + batch], ["BODY.PEEK[]"])
            for _uid in sorted(data):
                work.put(answers[k])
                k += 1
        for _ in threads:
            work.put(None)
        for t in threads:
            t.join(300)
    stack_cpu = stack.cpu_seconds() - stack_cpu0
    for closing in (imap.logout, *(s.quit for s in senders)):
        with contextlib.suppress(Exception):
            closing()
    if errors or k != len(raws):
        raise RuntimeError(f"ingest ceiling: {k}/{len(raws)} read; {errors[:1]!r}")
    elapsed = last_250[0] - t0
    log(f"ingest ceiling rep {rep + 1}: {k} read and answered in {elapsed:.2f} s = {k / elapsed:.0f}/s over "
        f"{connections} connections; stack CPU {1000 * stack_cpu / k:.1f} ms per mail, machine cpu {cpu.busy_pct}%")
    return {"per_s": k / elapsed, "seconds": elapsed, "n": k, "connections": connections,
            "stack_cpu_s": stack_cpu, "cpu_busy_pct": cpu.busy_pct}
