"""B-8: the fetcher hangs or stops silently.

In the field (zammad#2321, #6043, #1861; freescout#3694; osTicket#5645): fetching hung for
hours or days, stopped for good after the mail server was briefly down, or kept copying
the inbox into an archive folder until the disk filled, and nobody was told.

Postroom puts a timeout on every IMAP and SMTP operation, reconnects with back-off, and
(branch mailboxes) alerts the supervisors when a box has not synced for a configured time.
Shown with the engine running as in production, its IMAP connections through a proxy
that plays the server going away and coming back, and half-open connections that carry
nothing any more.
"""

from __future__ import annotations

import signal

import pytest

from tests.e2e.enginerun import Deployment, make_deployment, wait_until
from tests.field_bugs.helpers import mail_to_support

pytestmark = pytest.mark.mailstack


def deployment_through(relay, mailstack, new_user, tmp_path, extra: str = "") -> Deployment:
    dep = make_deployment(mailstack, new_user, tmp_path, extra=lambda values: extra)
    text = dep.config.read_text()
    dep.config.write_text(text.replace(f"imap_port = {mailstack.imap_port}", f"imap_port = {relay.port}"))
    return dep


def auto_responded(dep: Deployment, count: int) -> bool:
    return sum(m["Auto-Submitted"] == "auto-replied" for m in dep.center.messages("carol")) >= count


def test_b08_the_server_goes_away_and_comes_back_mail_from_meanwhile_is_taken(mailstack, new_user, tmp_path, proxy) -> None:
    relay = proxy(mailstack.imap_port)
    dep = deployment_through(relay, mailstack, new_user, tmp_path)
    try:
        dep.load()
        engine = dep.start_engine()
        mail_to_support(dep, "Before the outage")
        wait_until("the first auto-response", lambda: auto_responded(dep, 1), timeout=60, engine=engine)
        relay.down()  # every connection dropped, new ones refused
        mail_to_support(dep, "During the outage")  # the MX still delivers into the box
        wait_until("the engine to try again and be refused", lambda: relay.refused > 0, timeout=60, engine=engine)
        relay.up()
        wait_until("the auto-response to the mail from the outage", lambda: auto_responded(dep, 2), timeout=90, engine=engine)
        assert engine.stop(signal.SIGTERM) == 0
        assert dep.statuses() == ["queued", "queued"]
    finally:
        dep.cleanup()


def test_b08_half_open_connections_are_noticed_and_replaced(mailstack, new_user, tmp_path, proxy) -> None:
    relay = proxy(mailstack.imap_port)
    dep = deployment_through(relay, mailstack, new_user, tmp_path)
    try:
        dep.load()
        engine = dep.start_engine()
        mail_to_support(dep, "Before")
        wait_until("the first auto-response", lambda: auto_responded(dep, 1), timeout=60, engine=engine)
        opened = relay.connections
        relay.freeze_all()  # the connections open now never carry a byte again, and never close
        mail_to_support(dep, "After the network went quiet")
        # Only the IMAP timeout can tell a silent connection from a quiet box.
        wait_until("the auto-response to the mail after the freeze", lambda: auto_responded(dep, 2), timeout=150, engine=engine)
        assert relay.connections > opened  # it gave up on the dead connection and opened a new one
        assert engine.stop(signal.SIGTERM) == 0
    finally:
        dep.cleanup()


def test_b08_a_box_that_cannot_sync_alerts_the_supervisors(mailstack, new_user, tmp_path, proxy) -> None:
    relay = proxy(mailstack.imap_port)
    health = '\n[health]\nsync_alert_after = "30s"\nalert_mail_interval = "1s"\n'
    dep = deployment_through(relay, mailstack, new_user, tmp_path, extra=health)
    try:
        dep.load()
        engine = dep.start_engine()
        wait_until("the engine to log in", lambda: relay.connections > 0, timeout=60, engine=engine)
        relay.down()
        wait_until(
            "an alert in the supervisor's mailbox",
            lambda: any("alert" in str(m["Subject"]).lower() for m in dep.center.messages("sam")),
            timeout=120,
            engine=engine,
        )
    finally:
        dep.cleanup()
