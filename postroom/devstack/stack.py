"""DevStack: one throwaway Postfix + Dovecot instance living in a state directory.

Owns the lifecycle (start, stop, status) and the user list of one instance. Config text
comes from ``config.py``, the user files from ``users.py``, OS plumbing from ``system.py``.
Every listener is on 127.0.0.1; nothing outside the state directory is written, and only
processes whose pids are recorded in it are ever signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import grp
import json
import os
import pwd
import select
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import config, system, tls, users
from .config import HOST, Layout

MAX_STATE_DIR_LEN = 60  # AF_UNIX socket paths must stay under 108 bytes (pitfall 4)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class DevStackError(RuntimeError):
    """The stack cannot be started, stopped or changed; the message says why."""


class DevStack:
    """A real Dovecot + Postfix pair on 127.0.0.1 ports ``base_port`` .. ``base_port + 6``.

    Port layout: imap (STARTTLS offered) +0, imaps +1, pop3 +2, pop3s +3, smtp (the MX:
    no AUTH, accepts mail for the virtual domains) +4, submission (STARTTLS + AUTH
    required) +5, submissions (implicit TLS + AUTH) +6.
    """

    host = HOST

    def __init__(
        self,
        state_dir: Path | str,
        base_port: int = 21000,
        domains: tuple[str, ...] = ("example.test", "customer.test"),
        hostname: str = "mail.example.test",
        oauth2_introspection_url: str | None = None,
    ) -> None:
        state = Path(state_dir).absolute()
        if len(str(state)) > MAX_STATE_DIR_LEN:
            raise DevStackError(
                f"state dir {state} is {len(str(state))} characters long; at most "
                f"{MAX_STATE_DIR_LEN} keep the unix socket paths inside it under 108 bytes"
            )
        if not 1024 <= base_port <= 65535 - 6:
            raise DevStackError(f"base port {base_port} must be in 1024..65529")
        if not domains:
            raise DevStackError("at least one mail domain is needed")
        self._lay = Layout(state, base_port, tuple(d.lower() for d in domains), hostname, oauth2_introspection_url)

    def __repr__(self) -> str:
        return f"DevStack({str(self.state_dir)!r}, base_port={self.base_port})"

    # -- where things are ----------------------------------------------------------------
    state_dir = property(lambda self: self._lay.state_dir)
    base_port = property(lambda self: self._lay.base_port)
    domains = property(lambda self: self._lay.domains)
    hostname = property(lambda self: self._lay.hostname)
    ports = property(lambda self: self._lay.ports, doc="service name -> port")
    imap_port = property(lambda self: self._lay.ports["imap"])
    imaps_port = property(lambda self: self._lay.ports["imaps"])
    pop3_port = property(lambda self: self._lay.ports["pop3"])
    pop3s_port = property(lambda self: self._lay.ports["pop3s"])
    smtp_port = property(lambda self: self._lay.ports["smtp"])
    submission_port = property(lambda self: self._lay.ports["submission"])
    submissions_port = property(lambda self: self._lay.ports["submissions"])
    cafile = property(
        lambda self: self._lay.cert_file,
        doc="The self-signed server certificate; verify TLS against it. New at each start.",
    )
    postfix_log = property(lambda self: self._lay.postfix_log)
    dovecot_log = property(lambda self: self._lay.dovecot_log)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start both daemons and return once IMAP, SMTP and submission answer.

        A no-op when the stack already runs. Leftovers of a half-dead stack are stopped first.
        """
        _preflight()
        with self._locked():
            if self._running():
                recorded = self.recorded_base_port()
                if recorded not in (None, self.base_port):
                    raise DevStackError(
                        f"{self.state_dir} already runs on base port {recorded}, not "
                        f"{self.base_port}; stop it first"
                    )
                return
            self._stop_locked()
            busy = system.ports_in_use(HOST, self.ports.values())
            if busy:
                raise DevStackError(
                    f"ports {busy} on {HOST} are already in use, so base port "
                    f"{self.base_port} is taken (another devstack or service?); choose "
                    "another base port (--base-port / POSTROOM_DEVSTACK_PORT)"
                )
            self._write_files()
            try:
                self._launch()
            except BaseException:
                self._stop_locked()
                raise

    def stop(self, *, hold_ports: bool = False) -> None:
        """Stop this instance (by the pids in its state dir) and wait until its ports are free.

        Everything else stays: mail, users, configuration, certificate; `resume()` brings
        the same instance back (an outage), `start()` a freshly configured one.
        `hold_ports`: until `resume()`, this process keeps the ports, refusing every
        connection as a stopped server does, so that no other stack on the machine takes
        them meanwhile (and clients of ours reach a stranger's server)."""
        if not self.state_dir.is_dir():
            return
        with self._locked():
            self._stop_locked()
            if hold_ports:
                self._holder = _PortHolder(HOST, list(self.ports.values()))

    def resume(self) -> None:
        """Start a stopped instance again exactly as it was: same files, same certificate
        (clients holding it keep verifying), same mail. A no-op when it runs."""
        _preflight()
        with self._locked():
            holder, self._holder = getattr(self, "_holder", None), None
            if holder is not None:
                holder.release()
            if self._running():
                return
            if not self._lay.dovecot_conf.is_file():
                raise DevStackError(f"{self.state_dir} was never started; use start()")
            self._stop_locked()  # leftovers of a half-dead instance
            try:
                self._launch()
            except BaseException:
                self._stop_locked()
                raise

    def recorded_base_port(self) -> int | None:
        """The base port this state dir was last started with, if it ever was."""
        try:
            return int(json.loads(self._lay.meta_file.read_text())["base_port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def is_running(self) -> bool:
        return self._running()

    def status(self) -> dict:
        pids = self._pids()
        return {
            "running": all(pids.values()),
            "state_dir": str(self.state_dir),
            "host": HOST,
            "pids": pids,
            "ports": dict(self.ports),
            "domains": list(self.domains),
            "users": len(self.users()),
            "cafile": str(self.cafile),
        }

    # -- users ---------------------------------------------------------------------------
    def add_user(self, address: str, password: str) -> str:
        """Create (or re-password) a mailbox; works before start and while running.

        Returns the normalized (lower-case) address.
        """
        return self.add_users([(address, password)])[0]

    def add_users(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        """Create or re-password several mailboxes with one Postfix reload.

        Returns the normalized addresses. While running, returns once Postfix accepts mail
        for the new addresses and Dovecot knows the new passwords.
        """
        wanted: dict[str, str] = {}
        for address, password in pairs:  # validate all before writing any
            if not password or "\n" in password or "\0" in password:
                raise users.UserError(f"password for {address!r} is empty or multi-line")
            wanted[users.normalize(address, self.domains)] = password
        _preflight()  # before any chown to the mail, postfix and dovecot users
        with self._locked():
            self._make_dirs()
            known = users.read(self._lay.users_dir)
            fresh = [a for a in wanted if a not in known]
            changed = [a for a in wanted if a in known and known[a] != wanted[a]]
            for addr in fresh + changed:
                users.write_user(self._lay.users_dir, addr, wanted[addr])
            if fresh:
                users.write_map(self._lay.vmailbox, [*known, *fresh])
            if self._running():
                if fresh:
                    self._reload_postfix(fresh)
                if changed:
                    # Dovecot may have stat()ed the old file in this very second and then
                    # serves it until the next one (see users.py).
                    time.sleep(1.05 - time.time() % 1)
            return list(wanted)

    def kick(self, address: str) -> None:
        """End every IMAP/POP3 session of a mailbox (`doveadm kick`), as an administrator
        does after changing its password: Dovecot keeps logged-in sessions otherwise."""
        done = subprocess.run(
            ["doveadm", "-c", str(self._lay.dovecot_conf), "kick", users.normalize(address, self.domains)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        # Exit 68 (EX_NOUSER): nobody was logged in, which is fine.
        if done.returncode not in (0, 68):
            raise DevStackError(f"doveadm kick {address} failed ({done.returncode}): {done.stderr.strip()}")

    def users(self) -> list[str]:
        return sorted(users.read(self._lay.users_dir))

    # -- internals -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize start/stop/add_user of one state dir across processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self._lay.lock_file, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _pids(self) -> dict[str, int | None]:
        """The recorded master pids that are alive and really belong to this instance."""
        lay = self._lay
        pf = system.read_pid(lay.postfix_pidfile)
        # Postfix's master chdirs into its queue directory: a reused pid will not be there.
        if not (
            system.pid_alive(pf) and system.proc_cwd(pf) == os.path.realpath(lay.postfix_queue)
        ):
            pf = None
        dv = system.read_pid(lay.dovecot_pidfile)
        if not (system.pid_alive(dv) and str(lay.dovecot_conf) in system.proc_cmdline(dv)):
            dv = None
        return {"postfix": pf, "dovecot": dv}

    def _running(self) -> bool:
        return all(self._pids().values())

    def _make_dirs(self) -> None:
        lay = self._lay
        lay.state_dir.mkdir(parents=True, exist_ok=True)
        # Postfix's lmtp client (user postfix) and Dovecot's mail processes (user mail)
        # must reach into the state dir: it and every parent must be traversable; a
        # mktemp -d dir is 0700 (pitfall 4). Parents only gain the x bits, nothing else.
        os.chmod(lay.state_dir, 0o755)
        for parent in lay.state_dir.parents:
            mode = parent.stat().st_mode
            if mode & 0o011 != 0o011:
                os.chmod(parent, (mode & 0o7777) | 0o011)
        for d in (lay.postfix_dir, lay.postfix_conf, lay.postfix_queue, lay.dovecot_dir,
                  lay.dovecot_lib, lay.tls_dir):  # fmt: skip
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
        # Mail processes run as mail (pitfall 12); Postfix's data dir belongs to postfix.
        _mkdir_owned(lay.mail_dir, "mail", 0o750)
        _mkdir_owned(lay.postfix_data, "postfix", 0o700)
        if not lay.users_dir.is_dir():
            lay.users_dir.mkdir()
            os.chown(lay.users_dir, 0, grp.getgrnam("dovecot").gr_gid)
            os.chmod(lay.users_dir, 0o750)
        if not lay.vmailbox.exists():
            users.write_map(lay.vmailbox, [])

    def _write_files(self) -> None:
        lay = self._lay
        self._make_dirs()
        mail = pwd.getpwnam("mail")
        system.write_atomic(
            lay.dovecot_conf, config.render_dovecot_conf(lay, mail.pw_uid, mail.pw_gid)
        )
        if lay.oauth2_introspection_url:
            system.write_atomic(lay.oauth2_conf, config.render_oauth2_conf(lay))
        for name, text in (("main.cf", config.render_main_cf(lay)),
                           ("master.cf", config.render_master_cf(lay))):  # fmt: skip
            system.write_atomic(lay.postfix_conf / name, text)
            system.backdate(lay.postfix_conf / name)  # a "hot" main.cf costs 2 s at start
        meta = {"base_port": lay.base_port, "domains": list(lay.domains), "hostname": lay.hostname}
        system.write_atomic(lay.meta_file, json.dumps(meta, indent=2) + "\n")
        tls.make_self_signed(lay.cert_file, lay.key_file, lay.hostname)

    def _launch(self) -> None:
        lay = self._lay
        start_log = lay.state_dir / "start.log"
        # Started side by side: Postfix needs Dovecot's sockets only once mail flows.
        dovecot = system.spawn_detached(["dovecot", "-c", str(lay.dovecot_conf)], start_log)
        postfix = system.spawn_detached(
            ["postfix", "-c", str(lay.postfix_conf), "start"], start_log
        )
        for name, proc in (("dovecot", dovecot), ("postfix", postfix)):
            try:
                rc = proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "timeout"
            if rc != 0:
                raise DevStackError(f"{name} failed to start ({rc}):\n{self._logs()}")
        probes = [
            (self.imap_port, b"* OK", b"a LOGOUT\r\n"),
            (self.smtp_port, b"220", b"QUIT\r\n"),
            (self.submission_port, b"220", b"QUIT\r\n"),
        ]
        # The implicit-TLS ports are served by the same processes, so they are not probed
        # (a plain probe there only logs an SSL_accept error, pitfall 17).
        for port, prefix, bye in probes:
            if not system.wait_until(
                lambda p=port, x=prefix, b=bye: system.greets(HOST, p, x, b), START_TIMEOUT
            ):
                raise DevStackError(f"port {port} never answered:\n{self._logs()}")

    def _stop_locked(self) -> None:
        # Wait on the ports the instance really ran on, even if this object names others.
        ports = config.ports_for(self.recorded_base_port() or self.base_port).values()
        pids = [p for p in self._pids().values() if p]
        # Both masters lead a process group of their own (they setsid); children that
        # outlive them (an smtpd mid-session) would still hold the listening sockets.
        groups = [p for p in pids if _pgid(p) == p]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        if not system.wait_until(lambda: not any(map(system.pid_alive, pids)), STOP_TIMEOUT):
            for pid in pids:
                _signal(pid, signal.SIGKILL)
        for pid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        for f in (self._lay.postfix_pidfile, self._lay.dovecot_pidfile):
            f.unlink(missing_ok=True)
        if pids and not system.wait_until(
            lambda: not system.ports_in_use(HOST, ports), STOP_TIMEOUT
        ):
            busy = system.ports_in_use(HOST, ports)
            raise DevStackError(f"stopped, but ports {busy} are still in use")

    def _reload_postfix(self, fresh: list[str]) -> None:
        """Make Postfix see new recipients: what `postfix reload` does, minus its script.

        texthash maps are read when a process starts (pitfall 18); SIGHUP makes the master
        re-read its config and retire its children. Then wait until smtpd really accepts
        the new addresses, so a test may send to them right away.
        """
        pid = self._pids()["postfix"]
        if pid:
            _signal(pid, signal.SIGHUP)
        # An old-generation smtpd may still answer the first probe (and reject): retry.
        if not system.wait_until(lambda: self._accepts(fresh), 10.0, interval=0.02):
            raise DevStackError(f"Postfix still rejects {fresh} after reload:\n{self._logs()}")

    def _accepts(self, addresses: list[str]) -> bool:
        try:
            with smtplib.SMTP(HOST, self.smtp_port, local_hostname="localhost", timeout=5) as s:
                s.mail("<>")
                ok = all(s.rcpt(a)[0] == 250 for a in addresses)
                s.rset()
                return ok
        except (OSError, smtplib.SMTPException):
            return False

    def _logs(self) -> str:
        lay = self._lay
        return "\n".join(
            f"--- {p}\n{system.tail(p)}"
            for p in (lay.state_dir / "start.log", lay.postfix_log, lay.dovecot_log)
        )


class _PortHolder:
    """Listens on a stopped stack's ports and resets every connection at once: to clients
    the server is down (connection reset), to other stacks the ports are taken."""

    def __init__(self, host: str, ports: list[int]) -> None:
        self._stop = threading.Event()
        self._socks = []
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            sock.setblocking(False)
            self._socks.append(sock)
        self._thread = threading.Thread(target=self._refuse, name="devstack-outage", daemon=True)
        self._thread.start()

    def _refuse(self) -> None:
        linger = struct.pack("ii", 1, 0)  # close with RST, as a port nobody listens on
        while not self._stop.is_set():
            ready, _, _ = select.select(self._socks, [], [], 0.2)
            for sock in ready:
                with contextlib.suppress(OSError):
                    conn, _ = sock.accept()
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    conn.close()

    def release(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._socks:
            sock.close()


@functools.cache
def _preflight() -> None:
    """Refuse early, with a clear message, what would fail obscurely later."""
    if os.geteuid() != 0:
        raise DevStackError(
            "the devstack must run as root to start Postfix and Dovecot (pitfall 19)"
        )
    missing = [b for b in ("postfix", "dovecot", "openssl") if not shutil.which(b)]
    if missing:
        raise DevStackError(
            f"{', '.join(missing)} not found: run scripts/install.sh (Debian packages postfix "
            "dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd openssl)"
        )
    out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, check=False)
    version = out.stdout.strip()
    if not version.startswith("2.3."):
        raise DevStackError(
            f"Dovecot {version or '(unknown version)'} is installed, but the devstack writes "
            "Dovecot 2.3 configuration (2.4, as on Debian 13, changed the syntax); "
            "install Dovecot 2.3.x (Debian 12)"
        )


def _mkdir_owned(path: Path, user: str, mode: int) -> None:
    path.mkdir(exist_ok=True)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, grp.getgrgid(pw.pw_gid).gr_gid)
    os.chmod(path, mode)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
