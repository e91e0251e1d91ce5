"""Small OS helpers for the devstack: ports, greetings, pids, detached commands.

Nothing here knows about Postfix or Dovecot configuration; ``stack.py`` does.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (SO_REUSEADDR, as the servers use it, so
    lingering TIME_WAIT connections of a stopped stack do not count as "in use")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def ports_in_use(host: str, ports: Iterable[int]) -> list[int]:
    return [p for p in ports if not port_free(host, p)]


def greets(host: str, port: int, prefix: bytes, bye: bytes, timeout: float = 2.0) -> bool:
    """True when host:port answers with a greeting line starting with ``prefix``.

    Says ``bye`` afterwards so the server logs a clean disconnect.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            line = s.makefile("rb").readline()
            if not line.startswith(prefix):
                return False
            s.sendall(bye)
            return True
    except OSError:
        return False


def wait_until(cond: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not running, whatever kill(0) says.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def proc_cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def spawn_detached(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start a daemon's start command with stdin from /dev/null and output to ``log``.

    The daemonized Dovecot master and its children keep whatever stdout/stderr they were
    given: a pipe would make a caller that reads our output (capture_output=True) hang
    forever (pitfall 3). Hence never a pipe, always a file.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` by rename, so no reader ever sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def backdate(path: Path, seconds: int = 10) -> None:
    """Set the mtime of a just-written Postfix input file into the past.

    Postfix treats a main.cf or texthash file modified within the last ~2 s as "hot"
    (possibly still being written) and re-reads it every 300 ms until it cools down, so a
    start or smtpd launch right after writing it takes ~2 s longer. Our files are replaced
    by rename, never half-written, so claiming they are older is safe.
    """
    past = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(past, past))


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
