"""Shared pieces of the benchmark: the mail stack, the message set, configs, processes, stats.

Nothing here imports Django: the orchestrator never configures a database itself. Work that
needs the ORM runs in a child process (``bench/dbtool.py``) with its own DATABASE_URL, and
progress is watched with plain read-only SQL (``DbWatch``), so every phase gets a database
of its own exactly as ``postroom engine`` would see it.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import json
import math
import os
import pwd
import random
import signal
import smtplib
import sqlite3
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = ROOT / ".venv"
PY = str(VENV / "bin" / "python")
POSTROOM = str(VENV / "bin" / "postroom")
HOST = "127.0.0.1"
BASE_PORT = 21500

sys.path.insert(0, str(ROOT))

from postroom.devstack import DevStack  # noqa: E402  (plain module, no Django)
from postroom_sim.customers import prepare_customer_mail, sample_paths  # noqa: E402


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# -- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else None


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, for the CPU-busy share of a phase."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_times() -> dict[int, tuple[int, int]]:
    """pid → (ppid, utime + stime + cutime + cstime in clock ticks) of every process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone in between
        out[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return out


def tree_cpu_seconds(roots: Iterable[int | None]) -> float:
    """User + system CPU of the processes under ``roots`` (roots included), children
    they reaped included: a child that exited between two readings is counted in its
    parent's cutime/cstime, so the difference of two readings is the trees' CPU between
    them."""
    table = _proc_times()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [r for r in roots if r]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
            todo += children.get(pid, [])
    return total / CLK_TCK


class CpuMeter:
    """Machine CPU busy % between start() and stop() (the notes' contention check)."""

    def __enter__(self) -> CpuMeter:
        self._b0, self._t0 = cpu_times()
        self.busy_pct: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        b1, t1 = cpu_times()
        self.busy_pct = round(100.0 * (b1 - self._b0) / max(1, t1 - self._t0), 1)


# -- the mail stack -------------------------------------------------------------------------


@dataclass
class Stack:
    """The benchmark's own DevStack and the users it made."""

    dev: DevStack
    users: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, state_dir: Path, base_port: int = BASE_PORT) -> Stack:
        return cls(DevStack(state_dir, base_port=base_port))

    @property
    def imap_port(self) -> int:
        return self.dev.imap_port

    @property
    def smtp_port(self) -> int:
        return self.dev.smtp_port

    @property
    def submission_port(self) -> int:
        return self.dev.submission_port

    @property
    def cafile(self) -> str:
        return str(self.dev.cafile)

    def start(self) -> None:
        self.dev.start()

    def stop(self) -> None:
        self.dev.stop()

    def cpu_seconds(self) -> float:
        """CPU used so far by Dovecot and Postfix (their masters and every process under
        them: smtpd, cleanup, qmgr, lmtp, dovecot-lmtp, imap, auth, ...)."""
        return tree_cpu_seconds(self.dev.status()["pids"].values())

    def add(self, pairs: Iterable[tuple[str, str]]) -> None:
        pairs = list(pairs)
        self.dev.add_users(pairs)
        self.users.update(dict(pairs))

    def user(self, address: str, password: str | None = None) -> tuple[str, str]:
        if address not in self.users:
            self.add([(address, password or f"pw-{address.split('@')[0]}")])
        return address, self.users[address]

    # plain stdlib clients -----------------------------------------------------------------
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)

    def imap(self, address: str) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(HOST, self.imap_port, timeout=60)
        conn.starttls(self.tls())
        conn.login(address, self.users[address])
        return conn

    def smtp(self) -> smtplib.SMTP:
        """A plain SMTP session to the MX (no auth), as the outside world sends."""
        smtp = smtplib.SMTP(HOST, self.smtp_port, local_hostname="localhost", timeout=60)
        smtp.ehlo()
        return smtp

    def submission(self, login: str) -> smtplib.SMTP:
        """An authenticated STARTTLS session on the submission port, as Postroom and the
        agents' mail clients send."""
        smtp = smtplib.SMTP(HOST, self.submission_port, local_hostname="localhost", timeout=60)
        smtp.ehlo()
        smtp.starttls(context=self.tls())
        smtp.ehlo()
        smtp.login(login, self.users[login])
        return smtp

    def fill_maildir(self, address: str, raws: Iterable[bytes]) -> int:
        """Write messages straight into a box's Maildir (cur/, seen by Dovecot at its next
        look), as a box restored from a backup holds them: far faster than APPEND for a
        backlog of 100,000. Returns how many were written."""
        local, _, domain = address.partition("@")
        maildir = self.dev.state_dir / "mail" / domain / local / "Maildir"
        uid, gid = pwd.getpwnam("mail").pw_uid, grp.getgrnam("mail").gr_gid
        for sub in ("", "cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        for path in (maildir.parent, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
            os.chown(path, uid, gid)
        stamp = int(time.time())
        count = 0
        for count, raw in enumerate(raws, 1):
            path = maildir / "cur" / f"{stamp}.M{count}P{os.getpid()}.bench,S={len(raw)}:2,"
            path.write_bytes(raw)
            os.chown(path, uid, gid)
        return count

    def empty(self, address: str) -> None:
        conn = self.imap(address)
        try:
            conn.select("INBOX")
            typ, data = conn.search(None, "ALL")
            if data and data[0]:
                conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                conn.expunge()
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def count(self, address: str, folder: str = "INBOX") -> int:
        conn = self.imap(address)
        try:
            typ, data = conn.status(folder, "(MESSAGES)")
            return int(data[0].split(b"MESSAGES")[1].strip(b" ()"))
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def append_all(self, address: str, raws: Sequence[bytes], folder: str = "INBOX") -> float:
        """IMAP APPEND of every message (the fastest refill); returns seconds taken."""
        t0 = time.monotonic()
        conn = self.imap(address)
        try:
            for raw in raws:
                conn.append(folder, None, None, raw)
        finally:
            with contextlib.suppress(Exception):
                conn.logout()
        return time.monotonic() - t0


def status_counts(conn: imaplib.IMAP4, folder: str = "INBOX") -> tuple[int, int]:
    """(MESSAGES, UIDNEXT) of a folder by STATUS."""
    typ, data = conn.status(folder, "(MESSAGES UIDNEXT)")
    text = data[0].decode()
    inner = text[text.index("(") + 1 : text.rindex(")")].split()
    values = dict(zip(inner[::2], inner[1::2], strict=False))
    return int(values["MESSAGES"]), int(values["UIDNEXT"])


WATCH_POLL = 0.005  # an InboxWatcher STATUS-polls each of its boxes every ~5-10 ms


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
                time.sleep(WATCH_POLL)
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



# -- the message set ------------------------------------------------------------------------

CUSTOMERS = [f"customer{i}@customer.test" for i in range(1, 6)]


def customer_address(i: int, marker: str) -> str:
    """A sender of its own for every mail, delivered to one of the five customer boxes
    (plus-addressing): a contact center hears from many people, and Postroom's per-address
    auto-response limit (3 a day by default) stays on without ever being what a figure
    measures."""
    box = CUSTOMERS[i % len(CUSTOMERS)]
    local, _, domain = box.partition("@")
    return f"{local}+{marker.lower()}@{domain}"


def sample_subjects() -> list[tuple[Path, str]]:
    out = []
    for path in sample_paths():
        hdr = BytesHeaderParser(policy=policy.default).parsebytes(path.read_bytes())
        out.append((path, " ".join(str(hdr["Subject"] or "").split())))
    return out


def make_messages(n: int, to_addr: str, run: str, seed: int = 4) -> list[tuple[str, bytes]]:
    """``n`` customer mails to ``to_addr`` from the bundled samples (cycled), each with a
    marker ``[bench RUN-NNNNN]`` in the Subject and a unique Message-ID; (marker, raw)."""
    rng = random.Random(seed)
    samples = sample_subjects()
    out = []
    for i in range(n):
        path, subject = samples[i % len(samples)]
        marker = f"{run}-{i:05d}"
        raw, _mid = prepare_customer_mail(
            path,
            from_addr=customer_address(rng.randrange(len(CUSTOMERS)), marker),
            to_addr=to_addr,
            subject=f"{subject} [bench {marker}]",
            message_id=f"<bench-{marker}-{rng.getrandbits(48):x}@customer.test>",
        )
        out.append((marker, raw))
    return out


def envelope_from(raw: bytes) -> str:
    hdr = BytesHeaderParser(policy=policy.default).parsebytes(raw)
    return hdr["From"].addresses[0].addr_spec


def marker_of(subject: bytes | str) -> str | None:
    text = subject.decode("utf-8", "replace") if isinstance(subject, bytes) else subject
    i = text.find("[bench ")
    if i < 0:
        return None
    j = text.find("]", i)
    return text[i + 7 : j] if j > 0 else None


# -- Postroom configuration and processes ---------------------------------------------------

CONFIG = """\
node_id = "bench-1"
secret = "bench-secret-of-enough-length-0123456789"

[server]
imap_host = "127.0.0.1"
imap_port = {imap_port}
imap_tls = "starttls"
smtp_host = "127.0.0.1"
smtp_port = {submission_port}
smtp_tls = "starttls"
cafile = "{cafile}"
idle = true

[[incoming]]
address = "{support}"
name = "Bench Support"
password = "{support_pw}"
skills = ["support"]
auto_response = {auto_response}

[sender_auth]
servers = ["mail.example.test"]

[outbound]
address = "{outbound}"
password = "{outbound_pw}"

[dead_box]
address = "{dead}"
password = "{dead_pw}"

# Every mail Postroom sends also goes to the journal box (decision 0007): part of the work
# measured, as it is in every real deployment that wants exactly-once sending.
[journal]
address = "{journal}"
password = "{journal_pw}"
{extra}{agents}
"""

AGENT = """
[[agents]]
name = "{name}"
address = "{address}"
skills = ["support"]
auto_answer = true
capacity = {capacity}
password = "{password}"
"""


@dataclass
class Site:
    """One phase's contact center: its mailboxes on the stack, config file and database."""

    stack: Stack
    workdir: Path
    support: str
    outbound: str
    dead: str
    journal: str
    agents: list[str]
    config: Path
    database_url: str
    log_level: str = field(default_factory=lambda: os.environ.get("BENCH_ENGINE_LOG_LEVEL", "WARNING"))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            POSTROOM_STATE_DIR=str(self.workdir / "state"),
            POSTROOM_LOG_LEVEL=self.log_level,
        )
        return env


def make_site(
    stack: Stack,
    workdir: Path,
    prefix: str,
    *,
    agents: int = 0,
    capacity: int = 1,
    auto_response: bool = True,
    support: str | None = None,
    database_url: str | None = None,
    extra: str = "",
) -> Site:
    """Mailboxes named after ``prefix`` (fresh for each phase), a config TOML, a DB URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    support = support or f"{prefix}-support@example.test"
    outbound = f"{prefix}-outbound@example.test"
    dead = f"{prefix}-dead@example.test"
    journal = f"{prefix}-journal@example.test"
    agent_addrs = [f"{prefix}-agent{i}@example.test" for i in range(1, agents + 1)]
    stack.add(
        (a, f"pw-{a.split('@')[0]}")
        for a in [support, outbound, dead, journal, *agent_addrs, *CUSTOMERS]
        if a not in stack.users
    )
    agent_text = "".join(
        AGENT.format(
            name=f"Agent {i}", address=a, capacity=capacity, password=stack.users[a]
        )
        for i, a in enumerate(agent_addrs, 1)
    )
    text = CONFIG.format(
        imap_port=stack.imap_port,
        submission_port=stack.submission_port,
        cafile=stack.cafile,
        support=support,
        support_pw=stack.users[support],
        outbound=outbound,
        outbound_pw=stack.users[outbound],
        dead=dead,
        dead_pw=stack.users[dead],
        journal=journal,
        journal_pw=stack.users[journal],
        auto_response="true" if auto_response else "false",
        extra=extra,
        agents=agent_text,
    )
    config = workdir / "postroom.toml"
    config.write_text(text)
    (workdir / "state").mkdir(exist_ok=True)
    url = database_url or f"sqlite://{(workdir / 'postroom.sqlite3').absolute()}"
    return Site(stack, workdir, support, outbound, dead, journal, agent_addrs, config, url)


def run_checked(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        list(cmd), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def postroom_load(site: Site) -> None:
    """Migrate the phase's database and apply its config: `postroom load`, as a user does."""
    run_checked([POSTROOM, "load", str(site.config)], env=site.env())


def agents_ready(site: Site, agents: Sequence[str] | None = None) -> None:
    for address in agents if agents is not None else site.agents:
        run_checked([POSTROOM, "agent", "ready", address], env=site.env())


class Process:
    """A child process we started; stopped by its pid only."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], logfile: Path) -> None:
        self.cmd = list(cmd)
        self.logfile = logfile
        self._fh = open(logfile, "ab")  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def vm_hwm_mb(self) -> float | None:
        """Peak resident set size (VmHWM) in MB, read from /proc while it runs."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    profiler: Process | None = None

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (0 once it is gone), its reaped children's included (from
        /proc/PID/stat, as for the stack)."""
        return tree_cpu_seconds([self.pid])

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        if self.profiler is not None:
            self.profiler.stop(timeout=30, sig=signal.SIGINT)
            self.profiler = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode

    def tail(self, n: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def start_engine(site: Site, name: str = "engine", env: dict[str, str] | None = None) -> Process:
    """`postroom engine CONFIG`, exactly as a user runs it, as a separate process.

    With BENCH_PROFILE set, py-spy (if installed in the venv) samples it into
    ``WORKDIR/NAME.pyspy.txt`` (collapsed stacks, --idle excluded), for finding what
    dominates the engine's time; BENCH_PROFILE=gil samples only the thread holding the
    GIL, i.e. where the engine's CPU goes."""
    engine = Process([POSTROOM, "engine", str(site.config)], env or site.env(), site.workdir / f"{name}.log")
    pyspy = VENV / "bin" / "py-spy"
    if os.environ.get("BENCH_PROFILE") and pyspy.exists():
        engine.profiler = Process(
            [str(pyspy), "record", "--pid", str(engine.pid), "--rate", "200", "--format", "raw",
             "--threads", *(["--gil"] if os.environ["BENCH_PROFILE"] == "gil" else []),
             "-o", str(site.workdir / f"{name}.pyspy.txt")],
            dict(os.environ),
            site.workdir / f"{name}.pyspy.log",
        )
    return engine


# -- watching the database ------------------------------------------------------------------


class DbWatch:
    """Read-only SQL polls of a phase's database while the engine writes it."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite://"):
            self.kind = "sqlite"
            self.path = url[len("sqlite://") :]
            self.conn = None
        else:
            self.kind = "postgres"
            import psycopg

            self.conn = psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True)

    def scalar(self, sql: str, params: Sequence[object] = ()) -> object:
        if self.kind == "sqlite":
            if not Path(self.path).exists():
                return None
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            try:
                row = conn.execute(sql, params).fetchone()
            except sqlite3.OperationalError:  # not migrated yet
                return None
            finally:
                conn.close()
        else:
            assert self.conn is not None
            row = self.conn.execute(sql.replace("?", "%s"), params).fetchone()
        return row[0] if row else None

    def count(self, where: str = "1=1", table: str = "store_interaction") -> int:
        return int(self.scalar(f"SELECT COUNT(*) FROM {table} WHERE {where}") or 0)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def wait_until(predicate, timeout: float, interval: float = 0.02, alive: Process | None = None) -> float | None:
    """Poll until predicate() is true; the monotonic time it first was, or None on timeout
    (or when ``alive`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        if alive is not None and not alive.alive():
            return None
        time.sleep(interval)
    return None


def dbtool(site_or_env, *args: str, timeout: float = 900) -> dict:
    """Run ``bench/dbtool.py ARGS`` with the phase's DATABASE_URL; its JSON answer."""
    env = site_or_env.env() if isinstance(site_or_env, Site) else site_or_env
    out = run_checked([PY, str(BENCH / "dbtool.py"), *args], env=env, timeout=timeout)
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
