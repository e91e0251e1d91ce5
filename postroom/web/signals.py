"""Logins, failed logins, logouts and admin changes into the audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from postroom.store import audit

_ADMIN_ACTIONS = {1: "admin_add", 2: "admin_change", 3: "admin_delete"}


def _name(user: Any) -> str:
    get_username = getattr(user, "get_username", None)
    return get_username() if callable(get_username) else ""


@receiver(user_logged_in, dispatch_uid="postroom-audit-login")
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit.record("login", actor=_name(user), target=_name(user))


@receiver(user_logged_out, dispatch_uid="postroom-audit-logout")
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record("logout", actor=_name(user), target=_name(user))


@receiver(user_login_failed, dispatch_uid="postroom-audit-login-failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # Django has already masked the password in `credentials`; keep only the username.
    username = str(credentials.get("username", ""))
    audit.record("login_failed", actor=username, target=username)


@receiver(post_save, sender=LogEntry, dispatch_uid="postroom-audit-admin")
def _admin_changed(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    audit.record(
        _ADMIN_ACTIONS.get(instance.action_flag, "admin_action"),
        actor=_name(instance.user),
        target=f"{instance.content_type.model if instance.content_type else '?'}:{instance.object_id}",
        via="admin",
        object=instance.object_repr,
        change=instance.get_change_message(),
    )
