"""`postroom demo`: the whole product on one machine, watching itself work.

Starts the local Dovecot + Postfix with the demo configuration's users, loads the
configuration, starts the engine and the web page, makes the auto-answer agents Ready,
and runs the simulator: customers writing the shipped sample mails, and agent mail
clients replying the way Thunderbird, Outlook, Gmail and Apple Mail do.

`postroom demo --nodes N` (N ≥ 2) shows several nodes sharing the demo's mailboxes
(docs/redundancy.md): it starts a throwaway PostgreSQL (postroom.devstack.postgres, on
the port after the mail stack's seven, in a temporary directory destroyed at the end),
and runs N `postroom engine --node-id demo-K` processes on it, each with a state
directory of its own, instead of the engine in this process. The nodes page shows them;
SIGKILL one (its pid is printed) and watch another take its boxes within seconds. Each
node after the first reaches PostgreSQL through a loopback relay of this process
(devstack/dblink.py): cut and heal its link from the nodes page or with
`postroom node cut|heal demo-K`.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

log = logging.getLogger("postroom.demo")


def run_demo(config_path: str, listen: str, nodes: int = 1) -> int:
    with ExitStack() as cleanup:
        return _run_demo(config_path, listen, nodes, cleanup)


def _run_demo(config_path: str, listen: str, nodes: int, cleanup: ExitStack) -> int:
    from postroom import cli
    from postroom.config import mail_users
    from postroom.devstack.cli import default_state_dir
    from postroom.devstack.stack import DevStack

    config = cli.load_config_or_exit(config_path)
    stack = DevStack(default_state_dir(), base_port=cli.devstack_port(config))
    started_here = not stack.is_running()
    stack.add_users(mail_users(config))
    stack.start()
    log.info("mail stack on 127.0.0.1:%s.. (state in %s)", stack.base_port, stack.state_dir)
    if nodes > 1:
        # Before Django reads DATABASE_URL (cli.prepare): every node and the web share it.
        os.environ["DATABASE_URL"] = throwaway_postgres(stack.base_port + 7, cleanup)

    cli.prepare(config_path)
    from django.utils import timezone

    from postroom.store.agents import set_ready
    from postroom.store.models import Agent
    from postroom_sim.agents import STYLES, AgentClient
    from postroom_sim.customers import CustomerSimulator

    for agent in Agent.objects.filter(auto_answer=True):
        set_ready(agent, True, now=timezone.now(), by="demo")
    logins = demo_logins()

    if nodes > 1:
        node_pids = start_nodes(config_path, nodes, cleanup)
        engine = None
    else:
        engine = cli.start_engine(config)
        node_pids = []
    cli.start_web(listen)

    cafile = str(stack.cafile)
    styles = itertools.cycle(STYLES)
    clients = [
        AgentClient(
            "127.0.0.1",
            stack.imap_port,
            stack.submission_port,
            agent.address,
            agent.password,
            cafile=cafile,
            style=next(styles),
            reply_after=(3.0, 10.0),
            name=agent.name,
        ).start()
        for agent in config.agents
        if agent.password
    ]
    customers = CustomerSimulator(
        "127.0.0.1",
        stack.smtp_port,
        customers=[c.address for c in config.customers],
        recipients=[box.address for box in config.incoming],
        every=6.0,
    ).start()
    print(
        f"\nPostroom is running: open http://{listen}/ (admin: http://{listen}/admin/)\n"
        "Customers write every few seconds; agents reply a few seconds after delivery.\n"
        "Web logins for this run (made up now; mailbox passwords are never web logins):\n"
        + "".join(f"  {user:<24} {password}\n" for user, password in logins)
        + "".join(f"Node demo-{k} is pid {pid} (nodes page: http://{listen}/nodes/)\n" for k, pid in node_pids)
        + (
            "Cut a node's database link (demo-2 on) from the nodes page, or from a shell:\n"
            f"  DATABASE_URL={os.environ.get('DATABASE_URL', '')} postroom node cut demo-2   (heal: node heal)\n"
            if len(node_pids) > 1
            else ""
        )
        + "Press Ctrl-C to stop.\n",
        flush=True,
    )
    try:
        cli.wait_for_signal()
    finally:
        customers.stop()
        for client in clients:
            client.stop()
        if engine is not None:
            engine.stop()
        if started_here:
            stack.stop()
    return 0


def demo_logins() -> list[tuple[str, str]]:
    """A fresh web password for every agent's user and for an administrator "admin", for
    this run only: printed at start so that people can log in (the demo's agents have
    mailbox passwords in the file, which never double as web logins)."""
    import secrets

    from django.contrib.auth import get_user_model

    from postroom.store.models import Agent

    users = [a.user for a in Agent.objects.select_related("user") if a.user is not None]
    admin, _ = get_user_model().objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    logins = []
    for user in [*users, admin]:
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.save(update_fields=["password"])
        logins.append((user.get_username(), password))
    return logins


def throwaway_postgres(port: int, cleanup: ExitStack) -> str:
    """A fresh PostgreSQL cluster on 127.0.0.1:`port`, destroyed when `cleanup` closes."""
    from postroom.devstack.postgres import PgCluster

    state = Path(tempfile.mkdtemp(prefix="postroom-demo-pg-"))
    state.chmod(0o755)  # the server runs as the postgres user, under this directory
    cluster = PgCluster(state / "cluster", port)
    cluster.start()
    cleanup.callback(shutil.rmtree, state, True)
    cleanup.callback(cluster.destroy)
    log.info("PostgreSQL for %s: %s", "the demo's nodes", cluster.url)
    return cluster.url


def start_nodes(config_path: str, count: int, cleanup: ExitStack) -> list[tuple[int, int]]:
    """`postroom engine CONFIG --node-id demo-K` for K in 1..count, each with a state
    directory of its own; stopped with SIGTERM (by pid) when `cleanup` closes. (K, pid).

    Node 1 uses $DATABASE_URL; every later node goes through a relay of its own whose
    link people cut and heal (`store_node.link`, devstack/dblink.py), stopped last."""
    from postroom.devstack.dblink import DbLinks

    database_url = os.environ["DATABASE_URL"]
    links = DbLinks(database_url)
    cleanup.callback(links.stop)  # after the nodes have stopped (callbacks run last first)
    started = []
    for k in range(1, count + 1):
        state = Path(tempfile.mkdtemp(prefix=f"postroom-demo-node{k}-"))
        url = database_url if k == 1 else links.relay(f"demo-{k}")
        env = {**os.environ, "POSTROOM_STATE_DIR": str(state), "DATABASE_URL": url}
        proc = subprocess.Popen(
            [sys.executable, "-m", "postroom.cli", "engine", config_path, "--node-id", f"demo-{k}"],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        cleanup.callback(shutil.rmtree, state, True)
        cleanup.callback(_stop, proc)
        started.append((k, proc.pid))
    links.start()
    return started


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
