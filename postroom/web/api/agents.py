"""Agents: list, one, Ready / Not Ready."""

from __future__ import annotations

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Path

from postroom.store import agents as agent_state
from postroom.store.permissions import Role
from postroom.web.access import agent_for, allow, principal_of
from postroom.web.api.router import Router
from postroom.web.api.schemas import NO_NUL, AgentOut, answers
from postroom.web.presenters import agent_dict, agents_with_current

router = Router(tags=["agents"])

# An address as the agents table holds it (EmailField: at most 254 characters).
Address = Path(..., min_length=3, max_length=254, pattern=NO_NUL)


@router.get(
    "/agents",
    response=answers(list[AgentOut]),
    url_name="agents",
    summary="The agents you may see (yourself; a supervisor: its agents; an administrator: all)",
)
@allow(Role.AGENT)
def list_agents(request: HttpRequest):
    return [agent_dict(a) for a in agents_with_current(principal_of(request))]


@router.get(
    "/agents/{address}",
    response=answers(AgentOut, 404, 422),
    url_name="agent",
    summary="One agent, by address",
)
@allow(Role.AGENT)
def get_agent(request: HttpRequest, address: str = Address):
    agent_for(request, address)
    return agent_dict(
        get_object_or_404(agents_with_current(principal_of(request)), address__iexact=address)
    )


def _set_ready(request: HttpRequest, address: str, ready: bool):
    agent = agent_for(request, address, change=True)
    agent_state.set_ready(agent, ready, now=timezone.now(), by=request.auth)
    return agent_dict(agent)


@router.post(
    "/agents/{address}/ready",
    response=answers(AgentOut, 404, 422),
    url_name="agent-ready",
    summary="Make the agent Ready",
)
@allow(Role.AGENT)
def make_ready(request: HttpRequest, address: str = Address):
    return _set_ready(request, address, True)


@router.post(
    "/agents/{address}/not-ready",
    response=answers(AgentOut, 404, 422),
    url_name="agent-not-ready",
    summary="Make the agent Not Ready",
)
@allow(Role.AGENT)
def make_not_ready(request: HttpRequest, address: str = Address):
    return _set_ready(request, address, False)
