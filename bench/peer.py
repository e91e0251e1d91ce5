"""Figure 4, the peer's half: django-helpdesk 2.6.1 ingesting the same mailbox.

django-helpdesk lives in a venv of its own (``bench/.peer-venv``, made here on first use
from PyPI) with the minimal Django project in ``bench/peer/``. Each run starts from a
freshly migrated SQLite database (a copy of one migrated template), its one queue reading
the benchmark's IMAP mailbox, the mailbox refilled with the same raw messages by IMAP
APPEND (helpdesk deletes what it ingests), and runs ``manage.py get_email`` as cron
would. Timed as Postroom is, from its first IMAP FETCH to its last commit: helpdesk marks
each message deleted (STORE +FLAGS Deleted) right after that message's last commit, so the start of its last
STORE ends the figure, and the time its earlier STOREs (its deleting) took is left out
(bench/hooks/sitecustomize.py stamps them). Its process start and its final EXPUNGE are
outside the figure, as Postroom's start-up is.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.common import BENCH, ROOT, CpuMeter, Stack, log
from bench.postroom_runs import read_stamps, stamped_env

PEER_VERSION = "2.6.1"
PEER_VENV = BENCH / ".peer-venv"
PEER_PY = PEER_VENV / "bin" / "python"
PEER_DIR = BENCH / "peer"


def installed_version() -> str | None:
    if not PEER_PY.exists():
        return None
    result = subprocess.run(
        [str(PEER_PY), "-c", "import importlib.metadata as m; print(m.version('django-helpdesk'))"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_venv() -> str:
    """The peer's own venv with django-helpdesk==2.6.1 from PyPI; its version."""
    version = installed_version()
    if version == PEER_VERSION:
        return version
    log(f"peer: installing django-helpdesk=={PEER_VERSION} into {PEER_VENV}")
    base = getattr(sys, "_base_executable", None) or sys.executable
    if not PEER_PY.exists():
        subprocess.run([base, "-m", "venv", str(PEER_VENV)], check=True, stdin=subprocess.DEVNULL)
    subprocess.run(
        [str(PEER_PY), "-m", "pip", "install", "-q", f"django-helpdesk=={PEER_VERSION}"],
        check=True, stdin=subprocess.DEVNULL,
    )
    version = installed_version()
    if version != PEER_VERSION:
        raise RuntimeError(f"peer venv has django-helpdesk {version}, not {PEER_VERSION}")
    return version


class Peer:
    def __init__(self, stack: Stack, workdir: Path, box: str) -> None:
        self.stack = stack
        self.workdir = workdir
        self.box = box
        workdir.mkdir(parents=True, exist_ok=True)
        self.template = workdir / "template.sqlite3"

    def env(self, db: Path, sqlite: str = "stock") -> dict[str, str]:
        env = dict(os.environ)
        for var in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH"):
            env.pop(var, None)
        env.update(
            PEER_DB=str(db),
            PEER_SMTP_PORT=str(self.stack.smtp_port),
            PEER_MEDIA=str(self.workdir / "media"),
            PEER_SQLITE=sqlite,
        )
        if sqlite == "tuned":
            # Sending as Postroom sends: submission, STARTTLS, authenticated.
            env.update(
                PEER_SMTP_PORT=str(self.stack.submission_port),
                PEER_SMTP_USER=self.box,
                PEER_SMTP_PASSWORD=self.stack.users[self.box],
                SSL_CERT_FILE=self.stack.cafile,
            )
        return env

    def _run(
        self, args: list[str], db: Path, sqlite: str = "stock", timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(PEER_PY), *args], env=env or self.env(db, sqlite), cwd=PEER_DIR, capture_output=True,
            text=True, stdin=subprocess.DEVNULL, timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"peer {args} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    def prepare(self) -> None:
        """Migrate one template database (copied for every run)."""
        if self.template.exists():
            self.template.unlink()
        t0 = time.monotonic()
        self._run(["manage.py", "migrate", "-v0"], self.template)
        # One file, no -wal/-shm beside it, so a plain copy is a complete database.
        conn = sqlite3.connect(self.template)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        log(f"peer: template database migrated in {time.monotonic() - t0:.1f} s")

    def ingest_run(self, raws: list[bytes], ack: bool, rep: int, sqlite: str = "stock") -> dict:
        """One `get_email` over the refilled mailbox. ``sqlite``: "stock" (Django's default
        SQLite settings and plain SMTP to the MX, as a minimal project has) or "tuned"
        (Postroom's SQLite settings, and its way of sending)."""
        n = len(raws)
        name = f"{sqlite}-{'ack' if ack else 'noack'}-{rep}"
        db = self.workdir / f"run-{name}.sqlite3"
        shutil.copyfile(self.template, db)
        setup = ["setup_queue.py", "--box", self.box, "--password", self.stack.users[self.box],
                 "--imap-port", str(self.stack.imap_port)]
        self._run(setup + ([] if ack else ["--no-ack"]), db, sqlite)
        self.stack.empty(self.box)
        fill = self.stack.append_all(self.box, raws)
        stamps_file = self.workdir / f"imap-stamps-{name}.json"
        env = stamped_env(self.env(db, sqlite), stamps_file)
        with CpuMeter() as cpu:
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            result = self._run(["manage.py", "get_email", "--quiet"], db, sqlite, env=env)
            from_launch = time.monotonic() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        stamps = read_stamps(stamps_file)
        if not stamps.get("first_fetch") or not stamps.get("changes"):
            raise RuntimeError(f"helpdesk: no IMAP stamps in {stamps_file}: {result.stderr[-2000:]}")
        # Its STOREs (one per message, after that message's last commit), then one EXPUNGE.
        stores = sorted(stamps["changes"])[:-1] if len(stamps["changes"]) > 1 else stamps["changes"]
        last = stores[-1][0]
        deleting = sum(end - start for start, end in stores[:-1])
        elapsed = last - stamps["first_fetch"] - deleting
        conn = sqlite3.connect(db)
        try:
            tickets = conn.execute("SELECT COUNT(*) FROM helpdesk_ticket").fetchone()[0]
            acked = conn.execute(
                "SELECT COUNT(*) FROM helpdesk_followup WHERE email_recipients NOT IN ('[]', '') "
                "AND email_recipients IS NOT NULL"
            ).fetchone()[0]
        finally:
            conn.close()
        left = self.stack.count(self.box)
        rate = tickets / elapsed
        log(
            f"helpdesk ({sqlite}) ingest {'ack' if ack else 'noack'} rep {rep + 1}: {tickets}/{n} tickets, "
            f"{acked} acknowledged, in {elapsed:.2f} s from the first FETCH = {rate:.1f}/s ({from_launch:.2f} s "
            f"from launch to exit, {deleting:.2f} s of it deleting; refill {fill:.1f} s, "
            f"{left} left in the box), its CPU {cpu_s:.1f} s, machine cpu {cpu.busy_pct}%"
        )
        if result.stderr.strip():
            (self.workdir / f"get_email-{name}.log").write_text(result.stderr)
        return {
            "per_s": rate,
            "seconds": elapsed,
            "seconds_from_launch": from_launch,
            "deleting_s": deleting,
            "tickets": tickets,
            "acknowledged": acked,
            "left_in_box": left,
            "n": n,
            "refill_s": fill,
            "cpu_busy_pct": cpu.busy_pct,
            "cpu_s": cpu_s,
            "sqlite": sqlite,
        }


__all__ = ["PEER_VERSION", "Peer", "ROOT", "ensure_venv"]
