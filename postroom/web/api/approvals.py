"""Approvals: list those you may decide, approve (or approve an edit), reject."""

from __future__ import annotations

from typing import Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Path

from postroom.store import commands
from postroom.store.permissions import Role
from postroom.web.access import allow, approval_for, principal_of
from postroom.web.api.router import Router
from postroom.web.api.schemas import ApprovalOut, ApproveIn, RejectIn, answers
from postroom.web.presenters import approval_dict, approvals_for

router = Router(tags=["approvals"])

ApprovalId = Path(..., ge=1, le=2**62)


@router.get(
    "/approvals",
    response=answers(list[ApprovalOut], 422),
    url_name="approvals",
    summary="Approvals you may decide (administrators: all), with the reply text",
)
@allow(Role.SUPERVISOR)
def list_approvals(
    request: HttpRequest, state: Literal["pending", "approved", "rejected"] = "pending"
):
    return [approval_dict(a) for a in approvals_for(principal_of(request), state)]


@router.post(
    "/approvals/{approval_id}/approve",
    response=answers(ApprovalOut, 400, 404, 409, 422),
    url_name="approval-approve",
    summary="Approve a held reply (body {}); with `text`, approve your edited wording instead",
)
@allow(Role.SUPERVISOR)
def approve(request: HttpRequest, payload: ApproveIn, approval_id: int = ApprovalId):
    text = payload.text
    approval = commands.decide_approval(
        approval_for(request, approval_id),
        by_user=request.auth,
        decision="approve" if text is None else "edit",
        text=text,
        now=timezone.now(),
    )
    return approval_dict(approval)


@router.post(
    "/approvals/{approval_id}/reject",
    response=answers(ApprovalOut, 400, 404, 409, 422),
    url_name="approval-reject",
    summary="Reject a held reply, with a reason for the agent",
)
@allow(Role.SUPERVISOR)
def reject(request: HttpRequest, payload: RejectIn, approval_id: int = ApprovalId):
    approval = commands.decide_approval(
        approval_for(request, approval_id),
        by_user=request.auth,
        decision="reject",
        reason=payload.reason,
        now=timezone.now(),
    )
    return approval_dict(approval)
