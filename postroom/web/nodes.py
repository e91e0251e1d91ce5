"""The nodes page (issue 10): each engine process sharing this database, as a supervisor
sees it: its role, the mailboxes it watches, its mode, how long ago it last renewed its
lease, the island claims it holds.

Read from the `Node` and `Lease` rows the nodes keep (engine/nodes.py, decision 0030),
never from a node itself: the page runs in the web process. Ages and liveness are by the
database's clock, as the nodes' leases are, so a web server whose clock is off does not
call a live node dead. A lease counts as held only while its node's row still has the
lease's epoch and a live lease (the same test the nodes apply before they take one over).

A POST (a form per node, CSRF-protected like every form) cuts or heals a node's database
link: `store.commands.set_link`, which `postroom demo` carries out on its relays. Another
forgets a node whose lease ran out (`store.commands.forget_node`, as `postroom node
forget`): the supervisor confirms it is down for good, and the boxes taken from it leave
island mode (docs/redundancy.md, "Forgetting a node").
"""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, ExpressionWrapper, Q
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from postroom.core.cluster import ROUTER, Link, box_of
from postroom.store.commands import CommandError, forget_node, set_link
from postroom.store.models import Lease, Mailbox, Node
from postroom.store.permissions import Role
from postroom.web.access import forbidden, page


def nodes_dict() -> dict[str, Any]:
    """Every node that ever registered, live ones first, with what it holds now."""
    rows = list(
        Node.objects.annotate(
            db_now=Now(),
            live=ExpressionWrapper(Q(stopped_at=None, lease_until__gt=Now()), output_field=BooleanField()),
        ).order_by("node_id")
    )
    epochs = {n.node_id: n.epoch for n in rows if n.live}
    addresses = dict(Mailbox.objects.values_list("pk", "address"))
    held: dict[str, list[str]] = {}
    for lease in Lease.objects.order_by("name"):
        if epochs.get(lease.node_id) == lease.epoch:
            held.setdefault(lease.node_id, []).append(lease.name)
    nodes = []
    for n in rows:
        names = held.get(n.node_id, [])
        boxes = [addresses.get(pk, f"mailbox {pk}") for name in names if (pk := box_of(name)) is not None]
        claims = n.detail.get("claims") if isinstance(n.detail, dict) else None
        nodes.append(
            {
                "node_id": n.node_id,
                "role": n.role,
                "mode": n.mode,
                "link": n.link,
                "live": bool(n.live),
                "state": "live" if n.live else ("stopped" if n.stopped_at else "lease ran out"),
                "epoch": n.epoch,
                "host": n.hostname,
                "pid": n.pid,
                "started_at": n.started_at,
                "heartbeat_age_s": max(0.0, (n.db_now - n.heartbeat_at).total_seconds()),
                "router": ROUTER in names,
                "mailboxes": sorted(boxes),
                "claims": [str(c) for c in claims] if isinstance(claims, list) else [],
            }
        )
    nodes.sort(key=lambda d: (not d["live"], d["node_id"]))
    return {"nodes": nodes}


@require_http_methods(["GET", "POST"])
@never_cache
@page(Role.SUPERVISOR)
def nodes_page(request: HttpRequest) -> HttpResponse:
    from postroom.web.views import render_page  # the page header; views import this module's peers

    if request.method == "POST":
        node = request.POST.get("node", "")
        try:
            if request.POST.get("forget") == "yes":
                forget_node(node, by_user=request.user, now=timezone.now())
            else:
                try:
                    link = Link(request.POST.get("link", ""))
                except ValueError:
                    return HttpResponse("link must be up or cut", status=400, content_type="text/plain")
                set_link(node, link, by_user=request.user, now=timezone.now())
        except CommandError as exc:
            if exc.status == 403:
                return forbidden(request, exc.message)
            return HttpResponse(exc.message, status=exc.status, content_type="text/plain")
        return redirect("nodes")  # post/redirect/get: a reload does not post again
    return render_page(request, "postroom/nodes.html", nodes_dict())
