"""`postroom demo`: the whole product on one machine, watching itself work.

Starts the local Dovecot + Postfix with the demo configuration's users, loads the
configuration, starts the engine and the web page, makes the auto-answer agents Ready,
and runs the simulator: customers writing the shipped sample mails, and agent mail
clients replying the way Thunderbird, Outlook, Gmail and Apple Mail do.
"""

from __future__ import annotations

import itertools
import logging

log = logging.getLogger("postroom.demo")


def run_demo(config_path: str, listen: str) -> int:
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

    cli.prepare(config_path)
    from django.utils import timezone

    from postroom.store.agents import set_ready
    from postroom.store.models import Agent
    from postroom_sim.agents import STYLES, AgentClient
    from postroom_sim.customers import CustomerSimulator

    for agent in Agent.objects.filter(auto_answer=True):
        set_ready(agent, True, now=timezone.now(), by="demo")
    logins = demo_logins()

    engine = cli.start_engine(config)
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
        + "Press Ctrl-C to stop.\n",
        flush=True,
    )
    try:
        cli.wait_for_signal()
    finally:
        customers.stop()
        for client in clients:
            client.stop()
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
