"""`postroom demo --nodes 2`'s nodes: two `postroom engine --node-id demo-K` processes
started by the demo's own `start_nodes` on one PostgreSQL share the site's watched boxes,
and stop cleanly (their leases free at once) when the demo closes."""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest

from postroom import demo
from tests.e2e.enginerun import make_deployment, wait_until

pytestmark = [
    pytest.mark.mailstack,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="several nodes need PostgreSQL"
    ),
]

HELD = (
    "SELECT l.node_id FROM store_lease l JOIN store_node n ON n.node_id = l.node_id AND n.epoch = l.epoch "
    "WHERE left(l.name, 8) = 'mailbox:' AND n.stopped_at IS NULL AND n.lease_until > now()"
)


def test_the_demos_two_nodes_share_the_boxes_and_stop_with_it(mailstack, new_user, tmp_path, monkeypatch) -> None:
    dep = make_deployment(mailstack, new_user, tmp_path)
    try:
        dep.load()
        monkeypatch.setenv("DATABASE_URL", dep.db.url)
        with ExitStack() as cleanup:
            started = demo.start_nodes(str(dep.config), 2, cleanup)
            assert [k for k, _ in started] == [1, 2]
            # The support and the outbound box: one each.
            wait_until(
                "each demo node to watch a box",
                lambda: sorted(r["node_id"] for r in dep.rows(HELD)) == ["demo-1", "demo-2"],
                timeout=90,
            )
        for _, pid in started:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # stopped and reaped by the demo's clean-up
        rows = dep.rows("SELECT node_id, stopped_at FROM store_node ORDER BY node_id")
        assert [r["node_id"] for r in rows] == ["demo-1", "demo-2"]
        assert all(r["stopped_at"] is not None for r in rows), rows  # a clean stop: leases free at once
    finally:
        dep.cleanup()
