"""Cutting and healing a demo node's database link (issue 10), from the CLI and from the
nodes page, on `postroom demo --nodes 2`'s own nodes (`demo.start_nodes`: demo-1 on
PostgreSQL directly, demo-2 through the demo's relay, devstack/dblink.py).

Cut: demo-2's connections are dropped and refused, its lease runs out, and demo-1 takes
every box. Healed: demo-2 registers again (a new epoch) and takes its share back. The
CLI is the real `postroom node cut|heal`; the page is the real `postroom web` in a real
headless Chromium, logged in as an administrator. Several nodes need PostgreSQL: the
PostgreSQL pass's server, else a throwaway cluster of the demo's own (as the demo does).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from postroom import demo
from tests.e2e.browser import needs_chromium, open_page
from tests.e2e.databases import Database
from tests.e2e.enginerun import Deployment, make_deployment, wait_until

pytestmark = [pytest.mark.mailstack, pytest.mark.browser, needs_chromium]

REPO = Path(__file__).resolve().parents[2]
BOSS_PASSWORD = "cut-and-heal-7Qx"
# Leases held now: a node's row must still have the lease's epoch and a live lease.
HELD = (
    "SELECT l.node_id, count(*) AS boxes FROM store_lease l "
    "JOIN store_node n ON n.node_id = l.node_id AND n.epoch = l.epoch "
    "WHERE left(l.name, 8) = 'mailbox:' AND n.stopped_at IS NULL AND n.lease_until > now() "
    "GROUP BY l.node_id"
)
LINKS = "SELECT node_id, link, epoch, lease_until > now() AS live FROM store_node ORDER BY node_id"
LAPSE_S = 90  # an upper bound to wait for: the default 6 s lease, on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(mailstack, new_user, tmp_path, monkeypatch) -> Iterator[Deployment]:
    """The demo's two nodes on PostgreSQL, each watching one of the site's two boxes."""
    with ExitStack() as cleanup:
        dep = make_deployment(mailstack, new_user, tmp_path)
        if dep.db.kind != "postgres":
            dep.db = Database(url=demo.throwaway_postgres(_free_port(), cleanup))
        cleanup.callback(dep.cleanup)
        dep.load()
        monkeypatch.setenv("DATABASE_URL", dep.db.url)
        demo.start_nodes(str(dep.config), 2, cleanup)
        wait_until("each demo node to watch a box", lambda: _held(dep) == {"demo-1": 1, "demo-2": 1}, timeout=LAPSE_S)
        yield dep


def _held(dep: Deployment) -> dict[str, int]:
    return {r["node_id"]: r["boxes"] for r in dep.rows(HELD)}


def _nodes(dep: Deployment) -> dict[str, dict[str, Any]]:
    return {r["node_id"]: r for r in dep.rows(LINKS)}


def _cut_over(dep: Deployment) -> int:
    """demo-2's link is cut: wait for its lease to lapse and demo-1 to hold every box;
    demo-2's epoch then (it goes up when it comes back)."""
    wait_until(
        "demo-2's lease to lapse and demo-1 to take its box",
        lambda: _held(dep) == {"demo-1": 2} and not _nodes(dep)["demo-2"]["live"],
        timeout=LAPSE_S,
    )
    return _nodes(dep)["demo-2"]["epoch"]


def _rejoined(dep: Deployment, epoch: int) -> None:
    wait_until(
        "demo-2 to register again and take its share back",
        lambda: _held(dep) == {"demo-1": 1, "demo-2": 1} and _nodes(dep)["demo-2"]["epoch"] > epoch,
        timeout=LAPSE_S,
    )


def test_cut_and_heal_a_nodes_link_from_the_cli_and_from_the_nodes_page(two_nodes) -> None:
    dep = two_nodes

    # The CLI.
    assert "database link cut" in dep.cli("node", "cut", "demo-2")
    assert _nodes(dep)["demo-2"]["link"] == "cut"
    epoch = _cut_over(dep)
    assert _nodes(dep)["demo-1"]["live"]  # the first node has no relay: untouched
    assert "database link healed" in dep.cli("node", "heal", "demo-2")
    _rejoined(dep, epoch)
    # A node the demo put no relay in front of cannot be cut: set back, with a reason.
    dep.cli("node", "cut", "demo-1")
    wait_until("the demo to set demo-1's link back", lambda: _nodes(dep)["demo-1"]["link"] == "up", timeout=30)
    assert _held(dep) == {"demo-1": 1, "demo-2": 1}
    with pytest.raises(AssertionError, match="No node 'demo-9'"):
        dep.cli("node", "cut", "demo-9")

    # The nodes page, as an administrator, in the real web process.
    env = {**dep.env(), "POSTROOM_DEMO": "true", "DJANGO_SUPERUSER_PASSWORD": BOSS_PASSWORD}
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.test"],
        cwd=REPO, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    listen = f"127.0.0.1:{_free_port()}"
    web = subprocess.Popen(
        [sys.executable, "-m", "postroom.cli", "web", "--listen", listen],
        cwd=dep.tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://{listen}"
        wait_until("the web to answer", lambda: _answers(listen), timeout=60)
        with open_page() as page:
            page.goto(base + "/nodes/")
            page.fill('input[name="username"]', "boss")
            page.fill('input[name="password"]', BOSS_PASSWORD)
            page.click('#login-form button[type="submit"]')
            page.wait_for_url(base + "/nodes/")
            row = page.locator('tr[data-node="demo-2"]')
            assert row.get_attribute("data-link") == "up"
            row.locator('button[data-action="cut"]').click()
            page.wait_for_selector('tr[data-node="demo-2"][data-link="cut"]')
            epoch = _cut_over(dep)
            page.reload()
            assert row.locator(".state").inner_text() == "lease ran out"
            assert page.locator('tr[data-node="demo-1"] .box').count() == 2
            row.locator('button[data-action="heal"]').click()
            page.wait_for_selector('tr[data-node="demo-2"][data-link="up"]')
            _rejoined(dep, epoch)
            page.reload()
            assert row.get_attribute("data-live") == "true"
            assert row.locator(".box").count() == 1
            assert page.errors == []
    finally:
        web.terminate()
        web.wait(30)
    kinds = [r["action"] for r in dep.rows("SELECT action FROM store_auditentry ORDER BY id") if "link" in r["action"]]
    assert kinds == ["node_link_cut", "node_link_up", "node_link_cut", "node_link_cut", "node_link_up"]


def _answers(listen: str) -> bool:
    host, _, port = listen.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False
