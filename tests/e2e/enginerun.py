"""The engine as the operator runs it: `postroom load`, `postroom agent ready` and
`postroom engine` in subprocesses, on a database of their own (a SQLite file, or a fresh
PostgreSQL database when DATABASE_URL names a PostgreSQL server: `databases.py`), against
the test's mailboxes on the session's Dovecot + Postfix.

The test process never opens that database through Django (no pytest-django DB): it reads
it with plain SQL, so whatever it sees is what the engine committed.
Mailboxes are read with the e2e `Center` helper, which needs only the stack and the users.
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
from tests.e2e.databases import Database, Row, fresh_database

REPO = Path(__file__).resolve().parents[2]
ROLES = {
    "support": "example.test",
    "outbound": "example.test",
    "dead": "example.test",
    "alice": "example.test",
    "bob": "example.test",
    "sam": "example.test",
    "carol": "customer.test",
}


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
    database: Database
    engines: list[EngineProcess] = field(default_factory=list)

    # -- processes ------------------------------------------------------------------
    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "POSTROOM_CRASH_AT"}
        env.update(
            DATABASE_URL=self.database.url,
            POSTROOM_STATE_DIR=str(self.tmp),
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

    def start_engine(self, crash_at: str | None = None) -> EngineProcess:
        log = self.tmp / f"engine-{len(self.engines)}{'-' + crash_at if crash_at else ''}.log"
        out = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "postroom.cli", "engine", str(self.config)],
            cwd=self.tmp,
            env=self.env(crash_at),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        engine = EngineProcess(proc, log, out)
        self.engines.append(engine)
        return engine

    def cleanup(self) -> None:
        """Stop any engine still running (only the ones this deployment started)."""
        for engine in self.engines:
            if engine.poll() is None:
                with contextlib.suppress(Exception):
                    engine.stop(signal.SIGKILL, timeout=10)
            engine.close()
        self.database.drop()

    # -- the database, read-only ----------------------------------------------------
    def rows(self, sql: str, params: tuple = ()) -> list[Row]:
        return self.database.rows(sql, params)

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        return self.database.scalar(sql, params)

    def interactions(self) -> list[Row]:
        return self.rows("SELECT * FROM store_interaction ORDER BY id")

    def statuses(self) -> list[str]:
        return [r["status"] for r in self.interactions()]

    def outgoing(self) -> list[Row]:
        return self.rows("SELECT id, key, kind, state, attempts, message_id FROM store_outgoing ORDER BY id")

    def journal_kinds(self) -> list[str]:
        return [r["kind"] for r in self.rows("SELECT kind FROM store_journalevent ORDER BY id")]


def make_deployment(
    stack: DevStack,
    new_user: Callable[..., tuple[str, str]],
    tmp: Path,
    *,
    alice_auto: bool = True,
    extra: Callable[[dict[str, Any]], str] = lambda values: "",
) -> Deployment:
    """Fresh mailboxes, a configuration from the e2e template (+ `extra(values)` TOML)."""
    users = {role: new_user(role, domain) for role, domain in ROLES.items()}
    values: dict[str, Any] = {
        "imap_port": stack.imap_port,
        "submission_port": stack.submission_port,
        "cafile": stack.cafile,
        "alice_skills": '["support"]',
        "bob_skills": '["support"]',
        "alice_auto": str(alice_auto).lower(),
        "bob_auto": "false",
        **{k: v[0] for k, v in users.items()},
        **{f"{k}_pw": v[1] for k, v in users.items()},
    }
    config = tmp / "postroom.toml"
    config.write_text(CONFIG.format(**values) + extra(values))
    # Center wants a Config and an in-process Engine; the mailbox helpers use neither.
    center = Center(stack=stack, config=None, engine=None, users=users, path=config)  # type: ignore[arg-type]
    return Deployment(center=center, tmp=tmp, config=config, database=fresh_database(tmp))


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
