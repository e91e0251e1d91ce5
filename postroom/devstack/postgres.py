"""A throwaway PostgreSQL cluster on 127.0.0.1, for the tests that run on PostgreSQL.

Debian's postgresql package ships the server binaries under /usr/lib/postgresql/N/bin;
we run initdb and pg_ctl from there as the `postgres` user on a state directory of our
own, with trust authentication on loopback only, and stop it by its pid file.

    python -m postroom.devstack.postgres start|stop|url [--state DIR] [--port N]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_STATE = Path("/tmp/postroom-pg")
DEFAULT_PORT = 21095


class PostgresError(RuntimeError):
    pass


def bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise PostgresError("PostgreSQL server binaries not found: apt-get install postgresql")
    return found[-1].parent


class PgCluster:
    def __init__(self, state_dir: Path = DEFAULT_STATE, port: int = DEFAULT_PORT) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.data = self.state_dir / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postroom"

    def _as_postgres(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # Detached output: pg_ctl's server keeps inherited pipes open (like Dovecot).
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False, text=True, **kwargs)

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and self._as_postgres(
            str(bindir() / "pg_ctl"), "-D", str(self.data), "status", capture_output=True
        ).returncode == 0

    def start(self) -> None:
        if self.is_running():
            return
        pg = pwd.getpwnam("postgres")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)
        os.chown(self.state_dir, pg.pw_uid, pg.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            result = self._as_postgres(
                str(bindir() / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", capture_output=True,
            )
            if result.returncode != 0:
                raise PostgresError(f"initdb failed: {result.stderr[-2000:]}")
        log = self.state_dir / "server.log"
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.state_dir} "
            # Durability buys nothing for throwaway test data and costs seconds per run.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        result = self._as_postgres(
            str(bindir() / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-o", options,
            "-w", "-t", "60", "start", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise PostgresError(f"pg_ctl start failed: {result.stderr}\n{tail}")
        self._create_database()

    def _create_database(self) -> None:
        psql = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc"]
        deadline = time.monotonic() + 30
        while True:
            exists = self._as_postgres(*psql, "SELECT 1 FROM pg_database WHERE datname='postroom'", capture_output=True)
            if exists.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL does not answer: {exists.stderr}")
            time.sleep(0.2)
        if exists.stdout.strip() != "1":
            self._as_postgres(*psql, "CREATE DATABASE postroom", capture_output=True)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(
                str(bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop",
                capture_output=True,
            )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m postroom.devstack.postgres")
    p.add_argument("action", choices=["start", "stop", "destroy", "url"])
    p.add_argument("--state", type=Path, default=DEFAULT_STATE)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = p.parse_args(argv)
    cluster = PgCluster(args.state, args.port)
    try:
        if args.action == "start":
            cluster.start()
            print(cluster.url)
        elif args.action == "stop":
            cluster.stop()
        elif args.action == "destroy":
            cluster.destroy()
        else:
            print(cluster.url)
    except PostgresError as exc:
        print(f"postgres: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
