"""GET /api/nodes: the engine nodes sharing this database (what the nodes page shows)."""

from __future__ import annotations

from django.http import HttpRequest

from postroom.store.permissions import Role
from postroom.web.access import allow
from postroom.web.api.router import Router
from postroom.web.api.schemas import NodesOut, answers
from postroom.web.nodes import nodes_dict

router = Router(tags=["nodes"])


@router.get(
    "/nodes",
    response=answers(NodesOut),
    url_name="nodes",
    summary="Each engine node: role, live or not, mode, heartbeat age, mailboxes and claims held",
)
@allow(Role.SUPERVISOR)
def list_nodes(request: HttpRequest):
    return nodes_dict()
