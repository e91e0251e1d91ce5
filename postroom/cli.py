"""The `postroom` command: one entry point for the engine, the web, and their helpers.

    postroom run [CONFIG]            engine and web together (migrates and loads CONFIG first)
    postroom engine [CONFIG] [--node-id ID] [--role primary|secondary]
                                     the engine alone: one node (several may share PostgreSQL)
    postroom web [--listen ADDR]     the web workspace and API alone
    postroom check CONFIG            validate a configuration file, naming every error
    postroom load CONFIG             apply a configuration file to the database
    postroom devstack start|stop|status [--config CONFIG]   the local Dovecot + Postfix
    postroom agent ready|not-ready ADDRESS
    postroom token ADDRESS [--days N] [--revoke]   issue (or revoke) an agent's API tokens
    postroom user set-password USERNAME           a web login's password
    postroom quarantine list [--all]  messages held in quarantine, with their reasons
    postroom quarantine release ID   give a quarantined message back to its box
    postroom rules test FILE         what the routing rules would do with a message
    postroom lifecycle               the state diagram, generated from the transition table
    postroom demo [--nodes N]        everything `make demo` shows (N nodes: docs/redundancy.md)
    postroom node cut|heal NODE_ID   cut or heal a demo node's database link (docs/redundancy.md)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

DEFAULT_CONFIG = os.environ.get("POSTROOM_CONFIG", "examples/demo.toml")
DEFAULT_LISTEN = "127.0.0.1:8000"
# pg_advisory_lock key held while a starting node migrates and loads the configuration.
STARTUP_LOCK = 0x706F7374726F6F6D  # "postroom"

log = logging.getLogger("postroom")


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "postroom.settings")
    import django
    from django.apps import apps
    from django.conf import settings

    Path(settings.STATE_DIR).mkdir(parents=True, exist_ok=True)
    # Once per process: django.setup() applies settings.LOGGING at every call, binding the
    # "postroom" logger to sys.stderr as it is then (in a test, that test's capture, closed
    # when it ends: "Logging error: I/O operation on closed file" ever after).
    if not apps.ready:
        django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def load_config_or_exit(path: str):
    from postroom.config import check_config, load_config

    errors = check_config(path)
    if errors:
        for error in errors:
            print(f"{path}: {error.path}: {error.message}", file=sys.stderr)
        raise SystemExit(2)
    return load_config(path)


def cmd_check(args: argparse.Namespace) -> int:
    from postroom.config import check_config

    errors = check_config(args.config)
    for error in errors:
        print(f"{args.config}: {error.path}: {error.message}")
    if not errors:
        print(f"{args.config}: ok")
    return 1 if errors else 0


def cmd_load(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config)
    setup_django()
    migrate()
    from postroom.store.loader import apply_config

    report = apply_config(config)
    print(report)
    return 0


def site_from(config):
    from postroom.engine.site import site_from_config

    return site_from_config(config, devstack_cafile=devstack_cafile(config))


def with_node(config, args: argparse.Namespace):
    """The configuration as this node runs it: --node-id and --role override the file's
    (one file for every node of a site; docs/redundancy.md)."""
    from postroom.config import valid_node_id

    node_id = getattr(args, "node_id", None)
    role = getattr(args, "role", None)
    if node_id and not valid_node_id(node_id):
        print(f"postroom: --node-id: expected 1-64 of A-Z a-z 0-9 _ -, got {node_id!r}", file=sys.stderr)
        raise SystemExit(2)
    if node_id:
        config = config.model_copy(update={"node_id": node_id})
    if role:
        config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"role": role})})
    return config


def devstack_cafile(config) -> str | None:
    from postroom.devstack.cli import default_state_dir
    from postroom.devstack.stack import DevStack

    stack = DevStack(default_state_dir(), base_port=devstack_port(config))
    return str(stack.cafile)


def devstack_port(config) -> int:
    return config.devstack.base_port if config.devstack else 21000


def start_engine(config):
    from postroom.engine.runtime import Engine

    engine = Engine(site_from(config), config=config)
    engine.start()
    return engine


def start_web(listen: str) -> threading.Thread:
    from django.core.exceptions import ImproperlyConfigured
    from waitress import create_server

    try:
        from postroom.wsgi import application
    except ImproperlyConfigured as exc:
        print(f"postroom: refusing to start the web: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    host, _, port = listen.rpartition(":")
    server = create_server(application, host=host or "127.0.0.1", port=int(port), threads=8)
    thread = threading.Thread(target=server.run, name="postroom-web", daemon=True)
    thread.start()
    log.info("web workspace on http://%s/", listen)
    return thread


def wait_for_signal(also: threading.Event | None = None) -> None:
    """Until SIGINT/SIGTERM, or until `also` is set (the engine stopped itself)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and not (also is not None and also.is_set()):
        stop.wait(1.0)


def start_engine_or_exit(config):
    """The engine, started; exit status 3 when this node may not run (its node id is
    running elsewhere, or SQLite already holds another node)."""
    from postroom.engine.nodes import NodeRefused

    try:
        return start_engine(config)
    except NodeRefused as exc:
        print(f"postroom: not starting: {exc}", file=sys.stderr)
        raise SystemExit(3) from None


def prepare(config_path: str):
    config = load_config_or_exit(config_path)
    # The web reads customer mail for transcripts with the file's server and passwords.
    os.environ["POSTROOM_CONFIG"] = str(Path(config_path).resolve())
    setup_django()
    from postroom.store.loader import apply_config

    # Several nodes may start at once on one PostgreSQL: one migrates and loads at a time.
    with startup_lock():
        migrate()
        log.info("%s", apply_config(config))
    return config


@contextlib.contextmanager
def startup_lock():
    from django.db import connection

    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [STARTUP_LOCK])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [STARTUP_LOCK])


def cmd_run(args: argparse.Namespace) -> int:
    config = with_node(prepare(args.config), args)
    engine = start_engine_or_exit(config)
    start_web(args.listen)
    wait_for_signal(engine.stopping)
    engine.stop()
    return 1 if engine.failure else 0


def cmd_engine(args: argparse.Namespace) -> int:
    config = with_node(prepare(args.config), args)
    engine = start_engine_or_exit(config)
    wait_for_signal(engine.stopping)
    engine.stop()
    if engine.failure:
        print(f"postroom: engine stopped: {engine.failure}", file=sys.stderr)
        return 1
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    if args.config:
        load_config_or_exit(args.config)
        os.environ["POSTROOM_CONFIG"] = str(Path(args.config).resolve())
    setup_django()
    migrate()
    start_web(args.listen)
    wait_for_signal()
    return 0


def cmd_devstack(args: argparse.Namespace) -> int:
    from postroom.config import mail_users
    from postroom.devstack.cli import main as devstack_main

    argv = [args.action]
    if args.config:
        config = load_config_or_exit(args.config)
        argv += ["--base-port", str(devstack_port(config))]
        for address, password in mail_users(config):
            argv += ["--user", f"{address}:{password}"]
    return devstack_main(argv)


def cmd_agent(args: argparse.Namespace) -> int:
    setup_django()
    from django.utils import timezone

    from postroom.store.agents import set_ready
    from postroom.store.models import Agent

    try:
        agent = Agent.objects.get(address__iexact=args.address)
    except Agent.DoesNotExist:
        print(f"no agent with address {args.address}", file=sys.stderr)
        return 1
    changed = set_ready(agent, args.state == "ready", now=timezone.now(), by="cli")
    print(f"{agent.address}: {'Ready' if agent.ready else 'Not Ready'}{'' if changed else ' (unchanged)'}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    setup_django()
    from postroom.store.agents import issue_token, revoke_tokens
    from postroom.store.models import Agent, ApiToken

    agent = Agent.objects.select_related("user").filter(address__iexact=args.address).first()
    if agent is None or agent.user is None:
        print(f"no agent user for {args.address}", file=sys.stderr)
        return 1
    if args.revoke:
        tokens = ApiToken.objects.filter(user=agent.user, revoked_at=None).select_related("user")
        if args.name:
            tokens = tokens.filter(name=args.name)
        done = revoke_tokens(tokens, by="cli")
        print(f"{done} token(s) of {agent.address} revoked")
        return 0
    print(issue_token(agent.user, name=args.name or "cli", days=args.days, by="cli"))
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    """`postroom user set-password USERNAME`: a web login's password (never a mailbox's)."""
    import getpass

    setup_django()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    from postroom.store import audit

    user = get_user_model().objects.filter(username=args.username).first()
    if user is None:
        print(f"no user {args.username}", file=sys.stderr)
        return 1
    if args.password_file:
        password = Path(args.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    else:
        password = getpass.getpass(f"New password for {user.get_username()}: ")
        if getpass.getpass("Again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    try:
        validate_password(password, user)
    except ValidationError as exc:
        for message in exc.messages:
            print(message, file=sys.stderr)
        return 1
    user.set_password(password)
    user.save(update_fields=["password"])
    audit.record("password_set", actor="cli", target=user.get_username())
    print(f"password of {user.get_username()} set")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    setup_django()
    from django.utils import timezone

    from postroom.store import quarantine
    from postroom.store.commands import CommandError

    if args.action == "list":
        for row in quarantine.held(include_released=args.all):
            state = "released" if row.released_at else ("release requested" if row.release_requested_at else "held")
            moved = "" if row.moved_at or row.released_at else " (not moved aside yet)"
            print(f"{row.pk}\t{row.created_at:%Y-%m-%d %H:%M}\t{row.mailbox.address}\tuid {row.uid}\t{state}{moved}\t{row.reason}")
        return 0
    if args.id is None:
        print("quarantine release needs the ID shown by `postroom quarantine list`", file=sys.stderr)
        return 2
    try:
        row = quarantine.request_release(args.id, f"cli:{os.environ.get('USER', '')}", timezone.now())
    except CommandError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"{row.pk}: release requested; the engine moves it back into {row.mailbox.address} at its next pass")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    setup_django()
    from postroom.rules_cli import main as rules_main

    return rules_main(args.rest)


def cmd_node(args: argparse.Namespace) -> int:
    """`postroom node cut|heal NODE_ID`: ask `postroom demo` to cut or heal the relay
    between that node and the database (docs/redundancy.md, "Cut and heal").
    `postroom node forget NODE_ID`: confirm that a node whose lease ran out is down for
    good; the boxes taken from it leave island mode (docs/redundancy.md, "Forgetting a
    node")."""
    setup_django()
    from django.utils import timezone

    from postroom.core.cluster import Link
    from postroom.store.commands import CommandError, forget_node, set_link

    if args.action == "forget":
        try:
            forgotten = forget_node(args.node_id, by_user=f"cli:{os.environ.get('USER', '')}", now=timezone.now())
        except CommandError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        if not forgotten:
            print(f"{args.node_id}: already stopped (cleanly, or forgotten); nothing to do")
            return 0
        print(
            f"{args.node_id}: forgotten. The boxes taken from it leave island mode at the other nodes' next "
            "heartbeat; should it come back, it registers again as a new incarnation (its old one's writes are refused)"
        )
        return 0
    link = Link.CUT if args.action == "cut" else Link.UP
    try:
        set_link(args.node_id, link, by_user=f"cli:{os.environ.get('USER', '')}", now=timezone.now())
    except CommandError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"{args.node_id}: database link {'cut' if link is Link.CUT else 'healed'} (carried out by postroom demo)")
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from postroom.core.lifecycle import mermaid

    print(mermaid())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # The only place the insecure conveniences are allowed: a made-up SECRET_KEY, the
    # live page open without a login (it says so), plain http (settings.py).
    os.environ.setdefault("POSTROOM_DEMO", "true")
    os.environ.setdefault("POSTROOM_WEB_LOGIN_REQUIRED", "false")
    from postroom.demo import run_demo

    return run_demo(args.config, args.listen, args.nodes)


def cmd_oauth2(args: argparse.Namespace) -> int:
    """`postroom oauth2 authorize BOX [CONFIG]`: a box's OAuth2 grant, new or again (B-10).

    Prints the identity provider's URL for a human to open and sign in at; then takes the
    code the IdP redirects to: by itself on a loopback redirect URI (RFC 8252 §7.3), or
    pasted (the whole redirected URL or the bare code). The grant goes to the
    database at once, and the running engine's next login uses it: no restart."""
    config = load_config_or_exit(args.config)
    setup_django()
    from urllib.parse import parse_qs, urlsplit

    from django.utils import timezone

    from postroom.engine.oauth2 import Tokens

    tokens = Tokens.of(config)
    login = _oauth2_login(config, args.box)
    if tokens is None or login is None or login not in tokens.logins:
        print(f"{args.box} is not a box on OAuth2 in {args.config} (give its oauth2 = provider)", file=sys.stderr)
        return 1
    redirect_uri = tokens.provider(login).redirect_uri
    url, state, verifier = tokens.authorization_url(login, redirect_uri)
    print(f"Open this URL, sign in as {login} and allow access:\n\n{url}\n", flush=True)
    code = None
    if args.listen:
        code = _oauth2_loopback(redirect_uri, state)
    if code is None:
        answer = input("Paste the URL the browser was sent to (or the code): ").strip()
        if "?" in answer:
            query = parse_qs(urlsplit(answer).query)
            if query.get("state", [state])[0] != state:
                print("the state does not match this authorization (an old or forged URL)", file=sys.stderr)
                return 1
            code = query.get("code", [""])[0]
        else:
            code = answer
    if not code:
        print("no code given", file=sys.stderr)
        return 1
    reply = tokens.authorize(login, code, verifier, timezone.now(), redirect_uri)
    if reply.detail and not reply.token.get("refresh_token"):
        print(f"not authorized: {reply.detail}", file=sys.stderr)
        return 1
    print(f"{login}: authorized; the grant is stored and the engine uses it at its next login")
    return 0


def _oauth2_login(config, box: str) -> str | None:
    wanted = box.lower()
    for b in config.mailboxes:
        if wanted in (b.address.lower(), b.login.lower()):
            return b.login.lower()
    smtp = (config.server.smtp_login or "").lower()
    return smtp if wanted == smtp else None


def _oauth2_loopback(redirect_uri: str, state: str) -> str | None:
    """Wait for the browser's redirect on the loopback redirect URI and take its code."""
    import http.server
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(redirect_uri)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    got: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            query = parse_qs(urlsplit(self.path).query)
            if query.get("state", [""])[0] == state and query.get("code"):
                got["code"] = query["code"][0]
                body = b"Postroom has the authorization; you may close this page.\n"
            else:
                body = b"This is not the authorization Postroom waits for.\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", parts.port or 80), Handler) as server:
        server.timeout = 1.0
        print(f"Waiting for the redirect to {redirect_uri} ...", flush=True)
        for _ in range(600):
            server.handle_request()
            if "code" in got:
                return got["code"]
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postroom", description="Postroom, an ACD for email.")
    sub = p.add_subparsers(dest="command", required=True)

    for name, fn, help_ in (
        ("run", cmd_run, "engine and web together"),
        ("engine", cmd_engine, "the engine alone"),
        ("demo", cmd_demo, "local mail stack + Postroom + simulated customers and agents"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
        if name != "engine":
            s.add_argument("--listen", default=DEFAULT_LISTEN)
        if name == "demo":
            s.add_argument(
                "--nodes", type=int, default=1, choices=range(1, 10), metavar="N",
                help="N engine nodes on a throwaway PostgreSQL (docs/redundancy.md); default 1, in this process",
            )
        if name != "demo":
            s.add_argument("--node-id", default=None, help="this node's id (default: the file's node_id)")
            s.add_argument("--role", choices=["primary", "secondary"], default=None, help="default: [cluster] role")
        s.set_defaults(fn=fn)

    s = sub.add_parser("web", help="the web workspace and API alone")
    s.add_argument("--listen", default=DEFAULT_LISTEN)
    s.add_argument(
        "--config", default=None, help="the site's file: transcripts read mail from its server"
    )
    s.set_defaults(fn=cmd_web)

    for name, fn in (("check", cmd_check), ("load", cmd_load)):
        s = sub.add_parser(name, help=f"{name} a configuration file")
        s.add_argument("config")
        s.set_defaults(fn=fn)

    s = sub.add_parser("devstack", help="the local Dovecot + Postfix")
    s.add_argument("action", choices=["start", "stop", "status"])
    s.add_argument("--config", default=None, help="create the users this configuration names")
    s.set_defaults(fn=cmd_devstack)

    s = sub.add_parser("agent", help="set an agent Ready or Not Ready")
    s.add_argument("state", choices=["ready", "not-ready"])
    s.add_argument("address")
    s.set_defaults(fn=cmd_agent)

    s = sub.add_parser("rules", help="rules test MESSAGE_FILE: what the rules would do, sending nothing")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_rules)

    s = sub.add_parser("quarantine", help="list quarantined messages, or release one to be taken again")
    s.add_argument("action", choices=["list", "release"])
    s.add_argument("id", nargs="?", type=int)
    s.add_argument("--all", action="store_true", help="list released messages too")
    s.set_defaults(fn=cmd_quarantine)

    s = sub.add_parser(
        "node",
        help="node cut|heal NODE_ID: cut or heal a demo node's database link; "
        "node forget NODE_ID: confirm a node whose lease ran out is down for good (ends island mode for its boxes)",
    )
    s.add_argument("action", choices=["cut", "heal", "forget"])
    s.add_argument("node_id")
    s.set_defaults(fn=cmd_node)

    s = sub.add_parser("lifecycle", help="print the lifecycle state diagram (Mermaid), from the table")
    s.set_defaults(fn=cmd_lifecycle)

    s = sub.add_parser("token", help="issue (or --revoke) an agent's API tokens")
    s.add_argument("address")
    s.add_argument("--name", default=None, help="the token's name (with --revoke: only those)")
    s.add_argument("--days", type=int, default=None, help="lifetime (POSTROOM_API_TOKEN_DAYS)")
    s.add_argument("--revoke", action="store_true", help="revoke the agent's live tokens")
    s.set_defaults(fn=cmd_token)

    s = sub.add_parser("user", help="user set-password USERNAME: set a web login's password")
    s.add_argument("action", choices=["set-password"])
    s.add_argument("username")
    s.add_argument("--password-file", default=None, help="read it from a file, not the terminal")
    s.set_defaults(fn=cmd_user)

    s = sub.add_parser("oauth2", help="oauth2 authorize BOX [CONFIG]: (re-)authorize a box on OAuth2")
    s.add_argument("action", choices=["authorize"])
    s.add_argument("box", help="the box's address or login")
    s.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    s.add_argument("--listen", action="store_true",
                   help="take the code from the browser's redirect to the loopback redirect_uri")
    s.set_defaults(fn=cmd_oauth2)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("POSTROOM_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
