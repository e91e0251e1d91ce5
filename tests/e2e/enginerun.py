"""The engine as the operator runs it: `postroom load`, `postroom agent ready` and
`postroom engine` in subprocesses, on a database of their own, against the test's
mailboxes on the session's Dovecot + Postfix.

The database is a SQLite file of the deployment's own, or, when DATABASE_URL names a
PostgreSQL server (the second pass of `make test`), a fresh database created on that
server for the deployment and dropped afterwards (`databases.py`). The test process never opens it through
Django (no pytest-django DB): it reads it with the stdlib `sqlite3` (read-only) or a plain
psycopg connection, so whatever it sees is what the engine committed. Mailboxes are read
with the e2e `Center` helper, which needs only the stack and the users.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postroom.devstack import DevStack
from tests.e2e.conftest import CONFIG, Center
from tests.e2e.databases import Database, fresh_database

REPO = Path(__file__).resolve().parents[2]
ROLES = {
    "support": "example.test",
    "outbound": "example.test",
    "dead": "example.test",
    "journal": "example.test",
    "alice": "example.test",
    "bob": "example.test",
    "sam": "example.test",
    "carol": "customer.test",
}


# A short SMTP budget; the claims' lease is the default (5 minutes): a row left `sending`
# by a killed engine is settled in seconds because the restarted engine ends the dead
# process's claims (engine/lease.py), not because the lease is short (decision 0007).
OUTBOX = '\n[outbox]\nsend_timeout = "4s"\n'


class EngineFailed(AssertionError):
    pass


@dataclass
class EngineProcess:
    """One `postroom engine CONFIG` subprocess; its output goes to `log`."""

    proc: subprocess.Popen[bytes]
    log: Path
    _out: Any = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return "(no log)"

    def log_has(self, needle: str) -> bool:
        with contextlib.suppress(OSError):
            return needle in self.log.read_text(errors="replace")
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` (to this pid only) and wait for the exit code; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise EngineFailed(f"engine pid {self.pid} ignored signal {sig}\n{self.tail()}") from None
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


@dataclass
class Deployment:
    """A contact center configured in a TOML file and run by the `postroom` CLI."""

    center: Center  # mailboxes: messages(), wait_for(), send(), submit()
    tmp: Path
    config: Path
    db: Database
    engines: list[EngineProcess] = field(default_factory=list)

    # -- processes ------------------------------------------------------------------
    def env(self, crash_at: str | None = None, *, database_url: str | None = None, state: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("POSTROOM_CRASH_AT", "POSTROOM_PAUSE_AT")}
        env.update(
            DATABASE_URL=database_url or self.db.url,
            POSTROOM_STATE_DIR=str(state or self.tmp),
            DJANGO_SETTINGS_MODULE="postroom.settings",
            POSTROOM_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        if crash_at:
            env["POSTROOM_CRASH_AT"] = crash_at
        return env

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "postroom.cli", *args],
            cwd=self.tmp,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise EngineFailed(f"postroom {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def load(self) -> None:
        self.cli("load", str(self.config))

    def ready(self, who: str) -> None:
        self.cli("agent", "ready", self.center.address(who))

    def start_engine(
        self,
        crash_at: str | None = None,
        *,
        node_id: str | None = None,
        role: str | None = None,
        database_url: str | None = None,
        pause_at: str | None = None,
    ) -> EngineProcess:
        """`postroom engine`; `node_id`/`role` as `--node-id`/`--role` (several nodes on one
        PostgreSQL, each with a state directory of its own); `database_url` to reach the
        database another way (a proxy); `pause_at` a checkpoint where it SIGSTOPs itself."""
        name = "-".join(x for x in (f"engine-{len(self.engines)}", node_id, crash_at, pause_at) if x)
        log = self.tmp / f"{name}.log"
        out = log.open("wb")
        args = ["--node-id", node_id] if node_id else []
        args += ["--role", role] if role else []
        state = self.tmp / f"state-{node_id}" if node_id else None
        if state is not None:
            state.mkdir(exist_ok=True)
        env = self.env(crash_at, database_url=database_url, state=state)
        if pause_at:
            env["POSTROOM_PAUSE_AT"] = pause_at
        proc = subprocess.Popen(
            [sys.executable, "-m", "postroom.cli", "engine", str(self.config), *args],
            cwd=self.tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        engine = EngineProcess(proc, log, out)
        self.engines.append(engine)
        return engine

    def cleanup(self) -> None:
        """Stop any engine still running (only the ones this deployment started), then
        drop the deployment's PostgreSQL database, if it has one."""
        for engine in self.engines:
            if engine.poll() is None:
                with contextlib.suppress(Exception):
                    engine.stop(signal.SIGKILL, timeout=10)
            engine.close()
        self.db.drop()

    # -- the database, read-only ----------------------------------------------------
    def rows(self, sql: str, params: tuple = ()) -> list[Any]:
        return self.db.rows(sql, params)

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        return self.db.scalar(sql, params)

    def interactions(self) -> list[Any]:
        return self.rows("SELECT * FROM store_interaction ORDER BY id")

    def statuses(self) -> list[str]:
        return [r["status"] for r in self.interactions()]

    def outgoing(self) -> list[Any]:
        return self.rows("SELECT id, key, kind, state, attempts, message_id, claimed_by, lease_until, next_attempt_at, last_error FROM store_outgoing ORDER BY id")

    def journal_kinds(self) -> list[str]:
        return [r["kind"] for r in self.rows("SELECT kind FROM store_journalevent ORDER BY id")]


def make_deployment(
    stack: DevStack,
    new_user: Callable[..., tuple[str, str]],
    tmp: Path,
    *,
    alice_auto: bool = True,
    extra: Callable[[dict[str, Any]], str] = lambda values: "",
    smtp_port: int | None = None,
) -> Deployment:
    """Fresh mailboxes, a configuration from the e2e template (+ `extra(values)` TOML,
    + short outbox leases); `smtp_port` to send through something other than Postfix."""
    users = {role: new_user(role, domain) for role, domain in ROLES.items()}
    values: dict[str, Any] = {
        "imap_port": stack.imap_port,
        "submission_port": smtp_port or stack.submission_port,
        "cafile": stack.cafile,
        "alice_skills": '["support"]',
        "bob_skills": '["support"]',
        "alice_auto": str(alice_auto).lower(),
        "bob_auto": "false",
        **{k: v[0] for k, v in users.items()},
        **{f"{k}_pw": v[1] for k, v in users.items()},
    }
    config = tmp / "postroom.toml"
    config.write_text(CONFIG.format(**values) + OUTBOX + extra(values))
    # Center wants a Config and an in-process Engine; the mailbox helpers use neither.
    center = Center(stack=stack, config=None, engine=None, users=users, path=config)  # type: ignore[arg-type]
    return Deployment(center=center, tmp=tmp, config=config, db=fresh_database(tmp))


def accepted_by_postfix(stack: DevStack, message_id: str) -> int:
    """How many SMTP transactions carrying `message_id` Postfix accepted (queued), read from
    its own log: a queue file whose header had that Message-ID (cleanup) and that went
    into the queue (qmgr "queue active"; an aborted DATA never gets there). This is how
    many copies can arrive, so a test can wait for exactly that many and then count."""
    text = stack.postfix_log.read_text(errors="replace") if stack.postfix_log.exists() else ""
    with_id, queued = set(), set()
    for line in text.splitlines():
        _, _, rest = line.partition("]: ")
        queue_id, _, what = rest.partition(": ")
        if what == f"message-id={message_id}":
            with_id.add(queue_id)
        elif what.endswith("(queue active)"):
            queued.add(queue_id)
    return len(with_id & queued)


def wait_until(
    what: str,
    done: Callable[[], bool],
    *,
    timeout: float,
    engine: EngineProcess | None = None,
    step: Callable[[], None] = lambda: None,
    interval: float = 0.2,
) -> None:
    """Poll `done()` (running `step()` before each look) until it holds; fail with the
    engine's log tail on timeout, or if the engine exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        step()
        if done():
            return
        if engine is not None and engine.poll() is not None:
            raise EngineFailed(f"engine exited {engine.poll()} while waiting for {what}\n{engine.tail()}")
        if time.monotonic() > deadline:
            tail = engine.tail() if engine is not None else ""
            raise EngineFailed(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(interval)
