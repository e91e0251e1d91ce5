"""Chaos: customers and agents' mail clients on the real stack while the engine is killed
again and again; the verdict is read from the mailboxes.

One run (`run_chaos`) is:

* a contact center with two incoming boxes, the outbound and dead boxes and one agent per
  mail client style (Thunderbird, Outlook, Gmail, Apple Mail), each agent at a simulated
  client (`postroom_sim.AgentClient`: IDLE on the agent's inbox, a reply to every forward
  over authenticated submission), auto-answer;
* `plan.customers` customers, each with a mailbox of their own, each writing one mail (a
  bundled sample, `postroom_sim.customers`) to one of the two boxes, at a seeded pace;
* meanwhile the engine runs as in production (`postroom engine CONFIG` in a subprocess,
  its watcher threads and worker) and is killed `plan.kills` times at seeded moments and
  started again; the last one runs until everything has settled, then gets SIGTERM;
* the verdict, from the mailboxes: every customer holds exactly one auto-response and
  exactly one reply to their mail, no mailbox holds two copies of one message, the
  incoming and outbound boxes are empty; and, from the engine's database (read-only),
  every interaction is closed.

The moments (docs/decisions/0019-chaos-harness.md): half of the kills come after a seeded
random uptime, which spreads them over start-up, reception, delivery, sending and clean-up;
the other half are aimed at the named checkpoints of `postroom.engine.faults`
(`POSTROOM_CRASH_AT`: `os._exit` there, exactly what a SIGKILL at that instant does), in a
seeded order, because random instants almost never land in the millisecond windows that
matter most (between the SMTP server's 250 and the commit that records it). An aimed kill
whose checkpoint is not reached within `plan.aim_timeout_s` is a plain SIGKILL then.
Everything random comes from `plan.seed`, which the report prints first.

No Django here: bench/chaos.py runs the same thing outside pytest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path

from imapclient import IMAPClient

from postroom.devstack import DevStack
from postroom.mail.imap import tls_context
from postroom_sim.agents import STYLES, AgentClient, is_auto_submitted
from postroom_sim.customers import sample_paths, send_customer_mail
from tests.e2e.databases import Database

REPO = Path(__file__).resolve().parents[2]

# The named instants of postroom.engine.faults that the normal flow passes through
# (sent-notice is left out: without refusals there are no notices to reach it).
CHECKPOINTS = (
    "receiving",  # inside reception's batch transaction (decision 0039)
    "received",
    "forward-queued",
    "sent-auto_response",
    "sent-forward",
    "sent-reply",
    "reply-accepted",
    "reply-committed",
    "cleanup-reply-removed",
    "cleanup-original-removed",
)
# Outgoing states after which a row is never sent again; anything else may still be sent.
FINISHED_OUTGOING = ("sent", "dead", "cancelled")
KEPT_LOGS = REPO / "var" / "chaos-logs"

SERVER = """\
node_id = "chaos"
secret = "chaos-secret-of-enough-length-0123456789"

[server]
imap_host = "127.0.0.1"
imap_port = {imap_port}
imap_tls = "starttls"
smtp_host = "127.0.0.1"
smtp_port = {submission_port}
smtp_tls = "starttls"
cafile = "{cafile}"
idle = true
poll_interval = "1s"

[outbound]
address = "{outbound}"
password = "{outbound_pw}"

[dead_box]
address = "{dead}"
password = "{dead_pw}"
"""

INCOMING = """
[[incoming]]
address = "{address}"
name = "Example {skill}"
password = "{password}"
skills = ["{skill}"]
auto_response = {auto_response}
"""

AGENT = """
[[agents]]
name = "Agent {name}"
address = "{address}"
skills = {skills}
auto_answer = true
capacity = {capacity}
password = "{password}"
"""


@dataclass(frozen=True)
class Kill:
    index: int
    checkpoint: str | None  # aimed: die there (SIGKILL after aim_timeout_s if never reached)
    uptime_s: float | None  # not aimed: SIGKILL this long after the start
    downtime_s: float  # down this long before the next start

    def __str__(self) -> str:
        what = f"at {self.checkpoint}" if self.checkpoint else f"after {self.uptime_s:.2f} s"
        return f"kill {self.index:2d} {what}, down {self.downtime_s:.2f} s"


@dataclass(frozen=True)
class Plan:
    seed: int
    customers: int = 200
    kills: int = 20
    capacity: int = 25  # per agent; four agents
    mails_per_s: float = 4.0
    uptime_s: tuple[float, float] = (0.5, 5.0)
    downtime_s: tuple[float, float] = (0.0, 1.0)
    aim_timeout_s: float = 15.0
    settle_timeout_s: float = 300.0
    checkpoints: tuple[str, ...] = CHECKPOINTS

    def schedule(self) -> list[Kill]:
        rng = random.Random(f"kills/{self.seed}")
        aimed: list[str | None] = []
        while len(aimed) < self.kills // 2:
            batch = list(self.checkpoints)
            rng.shuffle(batch)
            aimed += batch
        points = aimed[: self.kills // 2] + [None] * (self.kills - self.kills // 2)
        rng.shuffle(points)
        return [
            Kill(
                index=i,
                checkpoint=point,
                uptime_s=None if point else round(rng.uniform(*self.uptime_s), 2),
                downtime_s=round(rng.uniform(*self.downtime_s), 2),
            )
            for i, point in enumerate(points)
        ]


class Duplicates(AssertionError):
    """Someone got a second copy of a mail, or a second auto-response or reply."""


@dataclass
class Verdict:
    plan: Plan
    database: str
    sent: dict[str, str] = field(default_factory=dict)  # customer -> their mail's Message-ID
    autos: dict[str, list[str]] = field(default_factory=dict)  # customer -> auto-responses' Message-IDs
    replies: dict[str, list[str]] = field(default_factory=dict)  # customer -> replies' Message-IDs
    strays: list[str] = field(default_factory=list)  # customer mail that is neither
    copies: dict[str, int] = field(default_factory=dict)  # "mailbox Message-ID" -> copies (> 1)
    not_closed: list[str] = field(default_factory=list)  # interactions, with their state
    leftovers: dict[str, int] = field(default_factory=dict)  # box -> messages left in it
    kills: list[str] = field(default_factory=list)
    surprises: list[str] = field(default_factory=list)  # engines that died on their own, ...
    settled: bool = False
    seconds: float = 0.0
    workdir: Path | None = None
    kept: Path | None = None

    @property
    def lost(self) -> int:
        """Auto-responses and replies a customer never got."""
        return sum(not self.autos.get(c) for c in self.sent) + sum(not self.replies.get(c) for c in self.sent)

    @property
    def duplicates(self) -> int:
        """Second (third ...) auto-responses and replies, and second copies of any message."""
        extra = sum(max(0, len(ids) - 1) for ids in [*self.autos.values(), *self.replies.values()])
        return extra + sum(n - 1 for n in self.copies.values())

    def report(self) -> str:
        lines = [
            f"chaos seed {self.plan.seed} on {self.database}: {len(self.sent)} customers, "
            f"{len(self.kills)} kills, {self.seconds:.0f} s, settled: {self.settled}",
            f"lost {self.lost}, duplicates {self.duplicates}, not closed {len(self.not_closed)}, "
            f"left in boxes {self.leftovers or 0}",
            *self.kills,
        ]
        for customer in sorted(self.sent):
            a, r = self.autos.get(customer, []), self.replies.get(customer, [])
            if (len(a), len(r)) != (1, 1):
                lines.append(
                    f"  {customer} wrote {self.sent[customer]}, got auto-responses {_ids(a)} and replies {_ids(r)}"
                )
        lines += [f"  stray: {s}" for s in self.strays]
        lines += [f"  {n} copies in {k}" for k, n in sorted(self.copies.items())]
        lines += [f"  not closed: {s}" for s in self.not_closed[:30]]
        lines += [f"  surprise: {s}" for s in self.surprises]
        if self.kept:
            lines.append(f"engine logs kept in {self.kept}")
        return "\n".join(lines)

    def keep_logs(self) -> None:
        if self.kept is not None or self.workdir is None:
            return
        for old in sorted(KEPT_LOGS.glob("*-seed*"))[:-9]:  # the ten latest runs are enough
            shutil.rmtree(old, ignore_errors=True)
        self.kept = KEPT_LOGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.database}-seed{self.plan.seed}"
        self.kept.mkdir(parents=True, exist_ok=True)
        for path in self.workdir.glob("*.log"):
            shutil.copy2(path, self.kept / path.name)
        (self.kept / "verdict.txt").write_text(self.report() + "\n")

    def assert_nothing_lost_or_stuck(self) -> None:
        if not (self.settled and self.lost == 0 and not self.not_closed and not self.leftovers
                and not self.strays and not self.surprises):
            self.keep_logs()
            raise AssertionError("chaos: mail lost or stuck\n" + self.report())

    def assert_exactly_once(self) -> None:
        if self.duplicates:
            self.keep_logs()
            raise Duplicates("chaos: mail doubled\n" + self.report())


# -- the people at the edges -----------------------------------------------------------


class Customers(threading.Thread):
    """Each customer writes one mail, at a seeded pace; remembers each mail's Message-ID."""

    def __init__(self, stack: DevStack, customers: list[str], boxes: list[str], plan: Plan) -> None:
        super().__init__(name="chaos-customers", daemon=True)
        self.stack = stack
        self.customers = customers
        self.boxes = boxes
        self.plan = plan
        self.sent: dict[str, str] = {}
        self.errors: list[str] = []
        self.halt = threading.Event()
        # A test may hold the customers after `hold_after` mails until `resume` is set
        # (so some mail is sure to arrive after a state it steers the nodes into).
        self.hold_after: int | None = None
        self.resume = threading.Event()

    def run(self) -> None:
        rng = random.Random(f"customers/{self.plan.seed}")
        samples = sample_paths()
        for i, customer in enumerate(self.customers):
            if i == self.hold_after:
                while not self.resume.wait(0.2):
                    if self.halt.is_set():
                        return
            if self.halt.wait(rng.uniform(0.5, 1.5) / self.plan.mails_per_s):
                return
            sample, box = rng.choice(samples), rng.choice(self.boxes)
            for _attempt in range(3):  # the MX may be busy; a person would try again
                try:
                    self.sent[customer] = send_customer_mail(
                        "127.0.0.1", self.stack.smtp_port, sample=sample, from_addr=customer, to_addr=box
                    )
                    break
                except OSError as exc:
                    self.errors.append(f"{customer}: {exc}")
                    time.sleep(0.5)


def start_agents(stack: DevStack, agents: list[tuple[str, str]], seed: int) -> list[AgentClient]:
    clients = [
        AgentClient(
            "127.0.0.1",
            stack.imap_port,
            stack.submission_port,
            address,
            password,
            cafile=str(stack.cafile),
            style=STYLES[i % len(STYLES)],  # type: ignore[arg-type]
            reply_after=(0.2, 2.0),
            seed=seed * 100 + i,
        )
        for i, (address, password) in enumerate(agents)
    ]
    for client in clients:
        client.start()
    return clients


# -- the deployment: processes, mailboxes ----------------------------------------------------


class Engine:
    """One `postroom engine CONFIG` subprocess; its output goes to `log`."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait_exit(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        return self.proc.poll()

    def stop(self, sig: int) -> int:
        """`sig` to this pid only, then wait; SIGKILL if it ignores a SIGTERM for 30 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Site:
    """The contact center of one run: mailboxes on the stack, a config file, a database."""

    stack: DevStack
    workdir: Path
    config: Path
    database: Database
    users: dict[str, tuple[str, str]]  # role or address -> (address, password)
    engines: list[Engine] = field(default_factory=list)

    def address(self, who: str) -> str:
        return self.users[who][0]

    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "POSTROOM_CRASH_AT"}
        env.update(
            DATABASE_URL=self.database.url,
            POSTROOM_STATE_DIR=str(self.workdir),
            DJANGO_SETTINGS_MODULE="postroom.settings",
            POSTROOM_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        if crash_at:
            env["POSTROOM_CRASH_AT"] = crash_at
        return env

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "postroom.cli", *args], cwd=self.workdir, env=self.env(),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postroom {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def start_engine(self, crash_at: str | None = None) -> Engine:
        log = self.workdir / f"engine-{len(self.engines):02d}{'-' + crash_at if crash_at else ''}.log"
        cmd = [sys.executable, "-m", "postroom.cli", "engine", str(self.config)]
        engine = Engine(cmd, self.env(crash_at), self.workdir, log)
        self.engines.append(engine)
        return engine

    def imap(self, who: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.stack.imap_port, ssl=False, timeout=30)
        client.starttls(tls_context(str(self.stack.cafile)))
        client.login(*self.users[who])
        return client

    def headers(self, who: str, fields: str = "MESSAGE-ID IN-REPLY-TO AUTO-SUBMITTED") -> list[EmailMessage]:
        """The header blocks of every message in who's INBOX (only `fields`)."""
        return self._fetch_headers(who, ["ALL"], fields)

    def unanswered_forwards(self, who: str) -> int:
        """Forwards in an agent's inbox the agent's client has not answered yet (it flags
        \\Answered once its reply is submitted; notices are automatic and never answered)."""
        found = self._fetch_headers(who, ["UNANSWERED", "UNDELETED"], "REPLY-TO AUTO-SUBMITTED")
        return sum(1 for h in found if h["Reply-To"] and not is_auto_submitted(h))

    def _fetch_headers(self, who: str, criteria: list[str], fields: str) -> list[EmailMessage]:
        client = self.imap(who)
        try:
            client.select_folder("INBOX", readonly=True)
            uids = client.search(criteria)
            item = f"BODY.PEEK[HEADER.FIELDS ({fields})]"
            key = item.replace(".PEEK", "").encode()
            found: dict[int, bytes] = {}
            for _ in range(3):
                # A flag another client sets meanwhile comes as an unsolicited FETCH of the
                # flags alone, filed under the same UID: ask again for what is missing.
                wanted = [u for u in uids if u not in found]
                if not wanted:
                    break
                for uid, data in client.fetch(wanted, [item]).items():
                    if key in data:
                        found[uid] = data[key]
            parser = BytesHeaderParser(policy=policy.default)
            return [parser.parsebytes(found[u]) for u in sorted(found)]  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def count(self, who: str) -> int:
        client = self.imap(who)
        try:
            return int(client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"])
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def mail_queue_empty(self) -> bool:
        return mail_queue_empty(self.stack, (address for address, _ in self.users.values()))


def mail_queue_empty(stack: DevStack, addresses: Iterable[str]) -> bool:
    """Postfix holds no mail from or to `addresses` that it has accepted and not yet
    delivered or bounced.

    Read from Postfix's own log, not its queue directories: the stack is shared by the
    tests of one worker, and a message another test left deferred must not hold this one.
    A queue file is this test's when its envelope sender (qmgr's `from=`) or one of its
    recipients (a delivery agent's `to=`) is one of `addresses`; it has left the queue when
    qmgr logs `removed`. A file qmgr has not yet picked up has no owner in the log yet, so a
    caller that must see a message arrive waits for it as well (this says only that nothing
    of this test's is still on its way)."""
    ours = {a.lower() for a in addresses}
    text = stack.postfix_log.read_text(errors="replace") if stack.postfix_log.exists() else ""
    owned: set[str] = set()
    removed: set[str] = set()
    for line in text.splitlines():
        _, _, rest = line.partition("]: ")
        queue_id, _, what = rest.partition(": ")
        if what == "removed":
            removed.add(queue_id)
        elif what.startswith(("from=<", "to=<")) and what.partition("<")[2].partition(">")[0].lower() in ours:
            owned.add(queue_id)
    return not (owned - removed)


def wait_for(what: str, done: Callable[[], bool], *, timeout: float, engine: Engine | None = None) -> None:
    """Poll `done()` until it holds; fail with the engine's log tail on timeout or if the
    engine exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not done():
        if engine is not None and engine.poll() is not None:
            raise AssertionError(f"engine exited {engine.poll()} while waiting for {what}\n{engine.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{engine.tail() if engine else ''}")
        time.sleep(0.25)


def _ids(ids: list[str]) -> str:
    """How many, and whether copies share one Message-ID (a re-send) or not."""
    if len(ids) < 2:
        return str(len(ids))
    return f"{len(ids)} ({'one Message-ID: re-sent' if len(set(ids)) == 1 else 'different Message-IDs'})"


def _msgid(value: object) -> str:
    found = re.search(r"<[^<>\s]+>", str(value or ""))
    return found.group(0) if found else ""


# -- one run -------------------------------------------------------------------------------


def build_site(
    stack: DevStack,
    new_user: Callable[..., tuple[str, str]],
    workdir: Path,
    database: Database,
    *,
    boxes: tuple[str, ...] = ("support", "sales"),
    agents: int = len(STYLES),
    capacity: int = 1,
    extra: str = "",
    imap_port: int | None = None,
    smtp_port: int | None = None,
    domain: str = "example.test",
    auto_response: bool = True,
) -> Site:
    """Fresh mailboxes on the stack (roles: the `boxes`, outbound, dead, agent0 ...), a
    configuration naming them, with `extra` TOML appended; nothing loaded yet. The engine
    talks to `imap_port`/`smtp_port` (a proxy in front of the stack) when given."""
    users = {role: new_user(role, domain) for role in (*boxes, "outbound", "dead")}
    users.update({f"agent{i}": new_user(f"agent{i}", domain) for i in range(agents)})
    text = SERVER.format(
        imap_port=imap_port or stack.imap_port,
        submission_port=smtp_port or stack.submission_port,
        cafile=stack.cafile,
        outbound=users["outbound"][0],
        outbound_pw=users["outbound"][1],
        dead=users["dead"][0],
        dead_pw=users["dead"][1],
    )
    text += "".join(
        INCOMING.format(address=users[b][0], password=users[b][1], skill=b, auto_response=str(auto_response).lower())
        for b in boxes
    )
    text += "".join(
        AGENT.format(
            name=STYLES[i % len(STYLES)].title(), address=users[f"agent{i}"][0], password=users[f"agent{i}"][1],
            skills=json.dumps(list(boxes)), capacity=capacity,
        )
        for i in range(agents)
    )
    # Tables that branches of issues 7 and 8 add, given where the configuration knows them:
    # a journal box that settles unknown SMTP outcomes (branch outbox), and the evidence of
    # authenticated submission the dev stack's Postfix adds (branch mailsec, required).
    if _knows("journal"):
        users["journal"] = new_user("journal", domain)
        text += f'\n[journal]\naddress = "{users["journal"][0]}"\npassword = "{users["journal"][1]}"\ngrace = "2s"\n'
    if _knows("sender_auth"):
        text += f'\n[sender_auth]\nservers = ["{stack.hostname}"]\n'
    config = workdir / "postroom.toml"
    config.write_text(text + extra)
    return Site(stack=stack, workdir=workdir, config=config, database=database, users=users)


def _knows(table: str) -> bool:
    """Does this version's configuration have a top-level `table`?"""
    from postroom import config

    # Pydantic models since branch config; dataclasses before.
    fields = getattr(config.Config, "model_fields", None) or {f.name: f for f in dataclasses.fields(config.Config)}
    return table in fields


class ChaosRun:
    def __init__(
        self,
        stack: DevStack,
        new_user: Callable[..., tuple[str, str]],
        workdir: Path,
        database: Database,
        plan: Plan,
        say: Callable[[str], None] = print,
    ) -> None:
        self.plan = plan
        self.say = say
        self.site = build_site(stack, new_user, workdir, database, capacity=plan.capacity)
        self.agents = [self.site.users[f"agent{i}"] for i in range(len(STYLES))]
        self.customers = new_customers(stack, plan.customers)
        self.site.users.update({a: (a, pw) for a, pw in [*self.agents, *self.customers]})
        self.verdict = Verdict(plan=plan, database=database.kind, workdir=workdir)

    # -- the run ---------------------------------------------------------------------
    def run(self) -> Verdict:
        started = time.monotonic()
        v, site = self.verdict, self.site
        self.say(f"chaos: seed {self.plan.seed}, {self.plan.customers} customers, {self.plan.kills} kills, {site.database.kind}")
        site.cli("load", str(site.config))
        for address, _ in self.agents:
            site.cli("agent", "ready", address)
        boxes = [site.address("support"), site.address("sales")]
        customers = Customers(site.stack, [c for c, _ in self.customers], boxes, self.plan)
        agents = start_agents(site.stack, self.agents, self.plan.seed)
        try:
            customers.start()
            for kill in self.plan.schedule():
                v.kills.append(self._kill(kill))
            customers.join()
            last = site.start_engine()
            v.settled = self._settle(last, customers)
            v.sent = dict(customers.sent)
            v.surprises += [f"a customer could not send: {e}" for e in customers.errors if e.split(":")[0] not in v.sent]
            # -SIGTERM: stopped while still starting, before its handler was in place.
            if last.poll() is None and (code := last.stop(signal.SIGTERM)) not in (0, -signal.SIGTERM):
                v.surprises.append(f"the last engine exited {code} on SIGTERM:\n{last.tail()}")
        finally:
            customers.halt.set()
            for agent in agents:
                agent.stop()
            for engine in site.engines:  # after an error mid-run: none may outlive the run
                if engine.poll() is None:
                    engine.stop(signal.SIGKILL)
        self._judge()
        v.seconds = time.monotonic() - started
        return v

    def _kill(self, kill: Kill) -> str:
        engine = self.site.start_engine(crash_at=kill.checkpoint)
        if kill.checkpoint:
            code = engine.wait_exit(self.plan.aim_timeout_s)
            what = "died at the checkpoint" if code == 137 else None
            if code is None:
                what = f"not reached in {self.plan.aim_timeout_s:.0f} s: SIGKILL"
        else:
            assert kill.uptime_s is not None
            code = engine.wait_exit(kill.uptime_s)  # the engine's life: a chosen duration
            what = "SIGKILL" if code is None else None
        if what is None:
            self.verdict.surprises.append(f"engine {kill.index} exited {code} on its own:\n{engine.tail()}")
            what = f"exited {code} on its own"
        engine.stop(signal.SIGKILL)
        time.sleep(kill.downtime_s)  # a deliberate outage, not a wait for a condition
        return f"{kill}: {what}"

    def _progress(self, customers: Customers) -> dict[str, int]:
        site, db = self.site, self.site.database
        wanted = set(customers.sent.values())
        ids = {r["message_id"]: r["status"] for r in db.rows("SELECT message_id, status FROM store_interaction")}
        finished = "','".join(FINISHED_OUTGOING)
        return {
            "mails": len(wanted),
            "taken": len(wanted & set(ids)),
            "open": sum(s != "closed" for s in ids.values()),
            "unsent": int(db.scalar(f"SELECT COUNT(*) FROM store_outgoing WHERE state NOT IN ('{finished}')") or 0),
            "unanswered": sum(site.unanswered_forwards(a) for a, _ in self.agents),
            "queued_in_postfix": int(not site.mail_queue_empty()),
            **{f"in_{box}": site.count(box) for box in ("support", "sales", "outbound")},
        }

    def _settle(self, engine: Engine, customers: Customers) -> bool:
        """Wait until the last engine has finished everything; False on timeout."""
        deadline = time.monotonic() + self.plan.settle_timeout_s
        said = time.monotonic()
        while True:
            progress = self._progress(customers)
            if progress["taken"] == progress["mails"] and not any(
                n for k, n in progress.items() if k not in ("mails", "taken")
            ):
                return True
            if engine.poll() is not None:
                self.verdict.surprises.append(f"the last engine exited {engine.poll()} on its own:\n{engine.tail()}")
                return False
            if time.monotonic() > deadline:
                self.verdict.surprises.append(f"not settled after {self.plan.settle_timeout_s:.0f} s: {progress}")
                return False
            if time.monotonic() - said > 10:
                self.say(f"chaos: settling {progress}")
                said = time.monotonic()
            time.sleep(0.5)

    def _judge(self) -> None:
        v, site = self.verdict, self.site
        for customer in v.sent:
            for hdr in site.headers(customer):
                if hdr["Auto-Submitted"] == "auto-replied":
                    v.autos.setdefault(customer, []).append(_msgid(hdr["Message-ID"]))
                elif _msgid(hdr["In-Reply-To"]) == v.sent[customer]:
                    v.replies.setdefault(customer, []).append(_msgid(hdr["Message-ID"]))
                else:
                    v.strays.append(f"{customer}: {hdr['Message-ID']} in reply to {hdr['In-Reply-To']}")
        # A customer's second copy shows in the counts above; the agents' here.
        for address, _ in self.agents:
            mids = Counter(_msgid(h["Message-ID"]) for h in site.headers(address))
            v.copies.update({f"{address} {m}": n for m, n in mids.items() if n > 1})
        for box in ("support", "sales", "outbound"):
            if n := site.count(box):
                v.leftovers[box] = n
        for row in site.database.rows("SELECT guid, status, customer FROM store_interaction WHERE status != 'closed'"):
            v.not_closed.append(f"{row['guid']} {row['status']} ({row['customer']})")


def new_customers(stack: DevStack, n: int) -> list[tuple[str, str]]:
    """`n` customer mailboxes, added with one reload of the MX rather than one each."""
    pairs = [(f"customer{i:04d}-{secrets.token_hex(4)}@customer.test", secrets.token_urlsafe(12)) for i in range(n)]
    addresses = stack.add_users(pairs)
    return [(a, pw) for a, (_, pw) in zip(addresses, pairs, strict=True)]
