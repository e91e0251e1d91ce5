"""pytest helpers: one DevStack per xdist worker, and fresh mailboxes per test.

Worker ``gwN`` gets base port ``21100 + 10*N`` (``master``, i.e. no xdist, gets 21100), so
parallel workers never collide, and none collides with the CLI default of 21000. A second
test session running at the same time on the machine moves 1000 ports up.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from . import config, system
from .stack import MAX_STATE_DIR_LEN, DevStack, DevStackError

TEST_BASE_PORT = 21100
SESSION_SLOTS = 9  # concurrent test sessions per machine: bases 21100, 22100, ... 29100


def worker_index(worker_id: str | None) -> int:
    """0 for "master" (no xdist), N for pytest-xdist's "gwN"."""
    if not worker_id or worker_id == "master":
        return 0
    m = re.fullmatch(r"gw(\d+)", worker_id)
    if not m:
        raise ValueError(f"unexpected pytest-xdist worker id {worker_id!r}")
    return int(m[1])


def stack_for_worker(tmp_root: Path, worker_id: str | None, oauth2_introspection_url: str | None = None) -> DevStack:
    """An (unstarted) DevStack for this worker, state in ``tmp_root/pr-<index>-<pid>``.

    Base port ``21100 + 10*index``; when another test session on this machine already
    holds it, the same slot 1000 ports up (22100 + 10*index, ...), so concurrent sessions
    and their workers all get ports of their own. ``tmp_root`` should be short and
    world-traversable (``/tmp``, or ``/dev/shm`` for tmpfs speed); a path too long for the
    socket paths falls back to /tmp. Stacks left running by a killed earlier session of
    the same worker index are stopped first, so their ports are free again.
    """
    index = worker_index(worker_id)
    root = Path(tmp_root)
    if len(str(root / f"pr-{index}-{os.getpid()}")) > MAX_STATE_DIR_LEN:
        root = Path("/tmp")
    reap_stale(root, index)
    state = root / f"pr-{index}-{os.getpid()}"
    for shift in range(0, SESSION_SLOTS * 1000, 1000):
        base = TEST_BASE_PORT + 10 * index + shift
        if not system.ports_in_use(DevStack.host, config.ports_for(base).values()):
            return DevStack(state, base_port=base, oauth2_introspection_url=oauth2_introspection_url)
    raise DevStackError(
        f"no free base port for worker {index}: {SESSION_SLOTS} test sessions already run"
    )


def start_for_worker(tmp_root: Path, worker_id: str | None, oauth2_introspection_url: str | None = None) -> DevStack:
    """``stack_for_worker``, started; retries when a concurrent session takes the ports
    between our check and our start. Any other failure keeps the state dir and its logs
    (the error names them); the next session of this worker index reaps it."""
    for attempt in range(3):
        stack = stack_for_worker(tmp_root, worker_id, oauth2_introspection_url)
        try:
            stack.start()
            return stack
        except DevStackError as e:
            if "in use" not in str(e) or attempt == 2:
                raise
            shutil.rmtree(stack.state_dir, ignore_errors=True)
    raise AssertionError("unreachable")


def discard(stack: DevStack) -> None:
    """Stop ``stack`` and delete its state dir (unless $POSTROOM_KEEP_MAILSTACK is set,
    to keep postfix/maillog and dovecot/dovecot.log for a look)."""
    stack.stop()
    if not os.environ.get("POSTROOM_KEEP_MAILSTACK"):
        shutil.rmtree(stack.state_dir, ignore_errors=True)


def reap_stale(root: Path, index: int) -> None:
    """Stop and delete ``root/pr-<index>-<pid>`` stacks whose test process is gone."""
    for state in root.glob(f"pr-{index}-*"):
        owner = state.name.rsplit("-", 1)[1]
        if not owner.isdigit() or int(owner) == os.getpid() or system.pid_alive(int(owner)):
            continue
        try:
            DevStack(state).stop()
        except DevStackError:
            continue  # leave it for a human to look at
        shutil.rmtree(state, ignore_errors=True)


def new_user(
    stack: DevStack, prefix: str = "user", domain: str = "example.test"
) -> tuple[str, str]:
    """Add a mailbox no other test uses; returns (address, password)."""
    address = f"{prefix}-{secrets.token_hex(5)}@{domain}"
    password = secrets.token_urlsafe(12)
    return stack.add_user(address, password), password
