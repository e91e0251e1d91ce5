"""The ``postroom devstack start|stop|status`` command, as a plain ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from .stack import MAX_STATE_DIR_LEN, DevStack, DevStackError
from .users import UserError

DEFAULT_BASE_PORT = 21000
PORT_ENV = "POSTROOM_DEVSTACK_PORT"
NOT_RUNNING = 3  # `status` exit code when stopped, as LSB init scripts do


def default_state_dir(cwd: Path | None = None) -> Path:
    """./var/devstack, unless that absolute path is too long for the socket paths inside."""
    cwd = (cwd or Path.cwd()).absolute()
    state = cwd / "var" / "devstack"
    if len(str(state)) <= MAX_STATE_DIR_LEN:
        return state
    return Path("/tmp") / f"postroom-devstack-{hashlib.sha1(str(cwd).encode()).hexdigest()[:10]}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="postroom devstack",
        description="Run a throwaway real Postfix + Dovecot mail stack on 127.0.0.1.",
    )
    p.add_argument("command", choices=("start", "stop", "status"))
    p.add_argument(
        "--state",
        type=Path,
        help="state directory (default ./var/devstack, or /tmp/postroom-devstack-<hash> "
        f"when that path is longer than {MAX_STATE_DIR_LEN} characters)",
    )
    p.add_argument(
        "--base-port",
        type=int,
        help=f"first of 7 consecutive ports (default ${PORT_ENV}, else the port the state "
        f"dir last ran on, else {DEFAULT_BASE_PORT})",
    )
    p.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="ADDRESS:PASSWORD",
        help="create or re-password a mailbox (start only; repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    return p


def _base_port(args: argparse.Namespace, state: Path) -> int:
    if args.base_port is not None:
        return args.base_port
    env = os.environ.get(PORT_ENV, "").strip()
    if env:
        if not env.isdigit():
            raise DevStackError(f"${PORT_ENV} must be a port number, not {env!r}")
        return int(env)
    return DevStack(state).recorded_base_port() or DEFAULT_BASE_PORT


def _users(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        address, sep, password = spec.partition(":")
        if not sep or not password:
            raise UserError(f"--user wants ADDRESS:PASSWORD, got {spec!r}")
        pairs.append((address, password))
    return pairs


def _describe(stack: DevStack, status: dict, command: str) -> str:
    if not status["running"]:
        return f"devstack in {stack.state_dir}: {'stopped' if command == 'stop' else 'not running'}"
    lines = [f"devstack in {stack.state_dir}: running (pids {status['pids']})"]
    lines += [f"  {name:<12} {stack.host}:{port}" for name, port in status["ports"].items()]
    lines.append(f"  cafile       {status['cafile']}")
    lines.append(f"  users        {status['users']} on {', '.join(status['domains'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        state = args.state or default_state_dir()
        stack = DevStack(state, base_port=_base_port(args, state))
        if args.command == "start":
            users = _users(args.user)
            if users:
                stack.add_users(users)
            started = time.monotonic()
            stack.start()
            elapsed = time.monotonic() - started
            if not args.json:
                print(f"started in {elapsed:.2f} s")
        elif args.command == "stop":
            stack.stop()
        status = stack.status()
    except (DevStackError, UserError) as e:
        print(f"postroom devstack: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else _describe(stack, status, args.command))
    if args.command == "status" and not status["running"]:
        return NOT_RUNNING
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
