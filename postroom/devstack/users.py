"""The mail users of one devstack instance: Dovecot passwd-files and Postfix's map.

Each user has a one-line passwd-file of its own, ``dovecot/users.d/<address>``, which
Dovecot finds through ``%u`` in the passdb/userdb path. Why not one shared file: Dovecot
2.3 stats a passwd-file at most once per second (``passwd_file_sync``: "last_sync_time ==
ioloop_time"), so a user appended within the same second as any other login stays unknown
for up to a second -- a failed login or, worse, an LMTP bounce. A file Dovecot has never
looked at has no such gate: new users work at once. (Only a *changed* password still waits
for the next second; ``stack.py`` handles that.)

Postfix's ``texthash`` recipient map is regenerated from the directory on every change, so
the two never disagree about who exists.
"""

from __future__ import annotations

import base64
import grp
import os
import re
from collections.abc import Iterable
from pathlib import Path

from . import system

# Deliberately narrow: addresses become file names and lines in Postfix's map.
# No "+" in the local part: it is the recipient delimiter (outbound+token@ -> outbound@).
_LOCAL = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class UserError(ValueError):
    """An address or password that the stack cannot hold."""


def normalize(address: str, domains: Iterable[str]) -> str:
    """Lower-case and validate ``address``; it must be on one of ``domains``."""
    addr = address.strip().lower()
    local, sep, domain = addr.rpartition("@")
    if not sep or not _LOCAL.match(local) or ".." in local:
        raise UserError(f"not a plain mailbox address (a-z 0-9 . _ -, no '+'): {address!r}")
    if domain not in domains:
        raise UserError(f"{address!r} is not on the stack's domains {', '.join(domains)}")
    return addr


def read(users_dir: Path) -> dict[str, str]:
    """address -> password."""
    found: dict[str, str] = {}
    if not users_dir.is_dir():
        return found
    for path in sorted(users_dir.iterdir()):
        if path.name.endswith(".tmp"):
            continue
        fields = path.read_text().split(":")
        if len(fields) > 1:
            # {PLAIN.b64}: passwords may hold ':' or any character, yet stay recoverable.
            found[path.name] = base64.b64decode(fields[1].removeprefix("{PLAIN.b64}")).decode()
    return found


def write_user(users_dir: Path, address: str, password: str) -> None:
    b64 = base64.b64encode(password.encode()).decode()
    # uid, gid and home stay empty: userdb default_fields fills them (pitfall 12).
    _replace(users_dir / address, f"{address}:{{PLAIN.b64}}{b64}::::::\n")


def write_map(vmailbox: Path, addresses: Iterable[str]) -> None:
    # Any non-empty value marks the address as existing; LMTP does the delivery.
    system.write_atomic(vmailbox, "".join(f"{a} {a}\n" for a in sorted(addresses)))
    system.backdate(vmailbox)  # else each new smtpd waits ~2 s for it to "cool down"


def _replace(path: Path, text: str) -> None:
    old = path.stat() if path.exists() else None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    # Read by Dovecot's auth process, which runs as the dovecot user.
    os.chown(tmp, 0, grp.getgrnam("dovecot").gr_gid)
    os.chmod(tmp, 0o640)
    # Dovecot re-reads a passwd-file only when its mtime (whole seconds) or its size
    # changed. A same-length password change within the same second would go unnoticed,
    # so then move the mtime one second past the old one.
    new = tmp.stat()
    if old and new.st_size == old.st_size and int(new.st_mtime) <= int(old.st_mtime):
        bumped = (int(old.st_mtime) + 1) * 1_000_000_000
        os.utime(tmp, ns=(bumped, bumped))
    os.replace(tmp, path)
