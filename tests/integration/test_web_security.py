"""Issue 8, the web side: secrets, sessions, logins, headers, tokens and the audit trail."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from postroom.core.lifecycle import State
from postroom.store import agents as agent_state
from postroom.store import commands
from postroom.store.models import (
    Agent,
    ApiToken,
    Approval,
    AuditEntry,
    Interaction,
    Mailbox,
    OutboundMessage,
    WrapUpCode,
)

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("POSTROOM_", "DJANGO_"))}
    return {**keep, "DJANGO_SETTINGS_MODULE": "postroom.settings", **extra}


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=_env(**env), cwd=ROOT, capture_output=True, text=True
    )


def make_agent(address: str, **kw) -> Agent:
    user = get_user_model().objects.create_user(address.split("@")[0], password=PASSWORD)
    return Agent.objects.create(name=address, address=address, user=user, **kw)


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


# --- #8 SECRET_KEY --------------------------------------------------------------------


def test_the_web_refuses_to_start_without_a_secret_key(tmp_path):
    load = "import postroom.wsgi"
    refused = _python(load, POSTROOM_STATE_DIR=str(tmp_path))
    assert refused.returncode != 0
    assert "POSTROOM_SECRET_KEY" in refused.stderr
    short = _python(load, POSTROOM_STATE_DIR=str(tmp_path), POSTROOM_SECRET_KEY="too-short")
    assert short.returncode != 0
    key_file = tmp_path / "key"
    key_file.write_text("k" * 48 + "\n")
    ok = _python(load, POSTROOM_STATE_DIR=str(tmp_path), POSTROOM_SECRET_KEY_FILE=str(key_file))
    assert ok.returncode == 0, ok.stderr
    demo = _python(load, POSTROOM_STATE_DIR=str(tmp_path), POSTROOM_DEMO="true")
    assert demo.returncode == 0, demo.stderr


# --- #12 /healthz ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_does_not_tell_the_database_error(tmp_path):
    """With the database unreachable, /healthz answers 503 and keeps the reason (hosts,
    users, paths) for the log."""
    dead_port, web_port = _free_port(), _free_port()
    env = _env(
        POSTROOM_STATE_DIR=str(tmp_path),
        POSTROOM_SECRET_KEY="s" * 48,
        DATABASE_URL=f"postgres://secret_db_user:pw@127.0.0.1:{dead_port}/secret_db_name",
    )
    code = (
        "import django, threading; django.setup();"
        f"from postroom.cli import start_web; start_web('127.0.0.1:{web_port}');"
        "threading.Event().wait()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=10)
                raise AssertionError("healthz answered 200 without a database")
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    assert status == 503
    assert json.loads(body) == {"status": "error", "database": "unreachable"}
    for secret in ("secret_db_user", "secret_db_name", str(dead_port), "refused"):
        assert secret not in body


# --- #9 logins and sessions -----------------------------------------------------------


def test_failed_logins_lock_the_account_out_and_are_audited(client, settings):
    alice = make_agent("alice@example.test")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        refused = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert refused.status_code == 200  # the form again, with an error
    last = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert last.status_code == 429
    locked = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # The admin's login page is guarded by the same lockout.
    admin_login = client.post("/admin/login/", {"username": "alice", "password": PASSWORD})
    assert admin_login.status_code == 429
    failed = AuditEntry.objects.filter(action="login_failed", actor="alice")
    # The limit, plus the right password tried while locked out.
    assert failed.filter(via="web").count() == settings.AXES_FAILURE_LIMIT + 1
    assert set(failed.values_list("ip", flat=True)) == {"127.0.0.1"}
    # Another address is not locked out by this one's failures.
    other = Client(REMOTE_ADDR="127.0.0.2")
    ok = other.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert ok.status_code == 302
    entry = AuditEntry.objects.get(action="login")
    assert (entry.actor, entry.ip) == ("alice", "127.0.0.2")
    assert alice.user.pk == int(other.session["_auth_user_id"])


def test_sessions_last_a_working_day_and_cookies_are_secure(client, settings):
    make_agent("alice@example.test")
    assert settings.SESSION_COOKIE_AGE == 8 * 3600
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD}, secure=True
    )
    assert response.status_code == 302
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["secure"] and cookie["httponly"]
    assert cookie["max-age"] == ""  # gone when the browser closes
    page = client.get("/healthz", secure=True)
    assert page["Strict-Transport-Security"].startswith("max-age=31536000")
    assert page["X-Frame-Options"] == "DENY"
    assert page["Referrer-Policy"] == "same-origin"


def test_proxy_settings_come_from_the_environment():
    code = (
        "import django, json; django.setup(); from django.conf import settings as s;"
        "print(json.dumps([s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS,"
        " s.CSRF_TRUSTED_ORIGINS, s.SESSION_COOKIE_AGE, s.TRUSTED_PROXIES, s.SESSION_COOKIE_SECURE]))"
    )
    out = _python(
        code,
        POSTROOM_PROXY_SSL_HEADER="X-Forwarded-Proto",
        POSTROOM_CSRF_TRUSTED_ORIGINS="https://postroom.example.com, https://pr.example.com",
        POSTROOM_SESSION_SECONDS="3600",
        POSTROOM_TRUSTED_PROXIES="1",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        ["HTTP_X_FORWARDED_PROTO", "https"],
        True,
        31536000,
        ["https://postroom.example.com", "https://pr.example.com"],
        3600,
        1,
        True,
    ]
    bad = _python(code, POSTROOM_SESSION_SECONDS="a day")
    assert bad.returncode != 0 and "POSTROOM_SESSION_SECONDS must be an integer" in bad.stderr
    demo = _python(code, POSTROOM_DEMO="true")
    assert json.loads(demo.stdout)[-1] is False  # the demo runs on plain http


def test_the_admin_answers_only_allowed_networks(settings):
    staff = get_user_model().objects.create_superuser("root", "r@example.test", PASSWORD)
    inside, outside = Client(REMOTE_ADDR="10.1.2.3"), Client(REMOTE_ADDR="203.0.113.9")
    for c in (inside, outside):
        c.force_login(staff)
    assert inside.get("/admin/").status_code == 200
    assert outside.get("/admin/").status_code == 403
    assert outside.get("/admin/login/").status_code == 403
    # Behind one proxy, the client is the last X-Forwarded-For hop, not the proxy.
    settings.TRUSTED_PROXIES = 1
    via_proxy = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.9")
    via_proxy.force_login(staff)
    assert via_proxy.get("/admin/").status_code == 403
    settings.ADMIN_ALLOWED_NETWORKS = [__import__("ipaddress").ip_network("203.0.113.0/24")]
    assert via_proxy.get("/admin/").status_code == 200


def test_web_passwords_follow_the_validators(tmp_path):
    make_agent("alice@example.test")
    weak = tmp_path / "weak"
    weak.write_text("password\n")
    from postroom.cli import main

    assert main(["user", "set-password", "alice", "--password-file", str(weak)]) == 1
    good = tmp_path / "good"
    good.write_text("a much better passphrase 42\n")
    assert main(["user", "set-password", "alice", "--password-file", str(good)]) == 0
    assert get_user_model().objects.get(username="alice").check_password("a much better passphrase 42")
    assert AuditEntry.objects.filter(action="password_set", target="alice").exists()


# --- #12 API tokens expire and can be revoked -----------------------------------------


def test_tokens_expire_and_can_be_revoked(client, settings):
    alice = make_agent("alice@example.test")
    now = timezone.now()
    old = agent_state.issue_token(alice.user, days=1, now=now - timedelta(days=2))
    assert client.get("/api/agents", **bearer(old)).status_code == 401
    key = agent_state.issue_token(alice.user, name="laptop")
    row = ApiToken.objects.get(name="laptop")
    assert row.expires_at - row.created_at > timedelta(days=settings.API_TOKEN_DAYS - 1)
    assert client.get("/api/agents", **bearer(key)).status_code == 200

    from postroom.cli import main

    assert main(["token", "alice@example.test", "--revoke", "--name", "laptop"]) == 0
    assert client.get("/api/agents", **bearer(key)).status_code == 401
    assert AuditEntry.objects.filter(action="token_revoked", target="alice").count() == 1
    assert AuditEntry.objects.filter(action="token_issued", target="alice").count() == 2


def test_the_admin_revokes_tokens_and_never_shows_them(client):
    alice = make_agent("alice@example.test")
    key = agent_state.issue_token(alice.user)
    root = get_user_model().objects.create_superuser("root", "r@example.test", PASSWORD)
    client.force_login(root)
    listing = client.get("/admin/store/apitoken/")
    assert listing.status_code == 200
    row = ApiToken.objects.get()
    assert key.encode() not in listing.content and row.key_hash.encode() not in listing.content
    done = client.post(
        "/admin/store/apitoken/", {"action": "revoke", "_selected_action": [row.pk]}
    )
    assert done.status_code == 302
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert Client().get("/api/agents", **bearer(key)).status_code == 401
    entry = AuditEntry.objects.get(action="token_revoked")
    assert (entry.actor, entry.via, entry.ip) == ("root", "admin", "127.0.0.1")


# --- audit trail ----------------------------------------------------------------------


def _interaction(mailbox: Mailbox, uid: int, **kw) -> Interaction:
    return Interaction.objects.create(
        mailbox=mailbox, node_id="n", uidvalidity=1, uid=uid, customer="c@customer.test",
        arrival_time=timezone.now(), **kw,
    )  # fmt: skip


def test_supervisor_actions_are_in_the_audit_trail_with_who_when_and_where(client):
    mailbox = Mailbox.objects.create(address="support@example.test", login="support")
    WrapUpCode.objects.create(code="resolved", label="Resolved")
    alice = make_agent("alice@example.test")
    sue = make_agent("sue@example.test", is_supervisor=True)
    alice.supervisors.add(sue)
    ix = _interaction(mailbox, 1, status=State.DELIVERED.value, agent=alice)
    held = _interaction(mailbox, 2, status=State.AWAITING_APPROVAL.value, agent=alice)
    reply = OutboundMessage.objects.create(mailbox=mailbox, uidvalidity=1, uid=1, outcome="accepted")
    approval = Approval.objects.create(
        interaction=held, reply=reply, raw=b"From: a@b.test\r\n\r\nhi\r\n",
        approvers=[sue.address], requested_at=timezone.now(),
    )  # fmt: skip
    Agent.objects.filter(pk=alice.pk).update(ready=True)
    token = agent_state.issue_token(sue.user)
    api = Client(REMOTE_ADDR="10.0.0.7")

    assert api.post("/api/agents/alice@example.test/not-ready", **bearer(token)).status_code == 200
    moved = api.post(
        f"/api/interactions/{ix.guid}/transfer",
        {"queue": "unassigned"},
        content_type="application/json",
        **bearer(token),
    )
    assert moved.status_code == 200, moved.content
    approved = api.post(
        f"/api/approvals/{approval.pk}/approve", {}, content_type="application/json", **bearer(token)
    )
    assert approved.status_code == 200, approved.content
    # Alice going Not Ready herself, or hanging up her own, is her work, not an audit matter.
    commands.hang_up(
        _interaction(mailbox, 3, status=State.DELIVERED.value, agent=alice),
        by_user=alice.user, code="resolved", now=timezone.now(),
    )  # fmt: skip

    trail = list(AuditEntry.objects.order_by("id").values_list("action", "actor", "target", "ip", "via"))
    assert trail == [
        ("token_issued", "sue", "sue", None, "cli"),
        ("agent_not_ready", "sue", "alice@example.test", "10.0.0.7", "api"),
        ("transfer", "sue@example.test", str(ix.guid), "10.0.0.7", "api"),
        ("approval_approve", "sue@example.test", str(held.guid), "10.0.0.7", "api"),
    ]


def test_the_audit_trail_is_read_only_in_the_admin(client):
    AuditEntry.objects.create(at=timezone.now(), actor="sue", action="login", via="web")
    entry = AuditEntry.objects.get()
    root = get_user_model().objects.create_superuser("root", "r@example.test", PASSWORD)
    client.force_login(root)
    assert client.get("/admin/store/auditentry/").status_code == 200
    page = client.get(f"/admin/store/auditentry/{entry.pk}/change/")
    assert page.status_code == 200 and b'name="actor"' not in page.content
    assert client.post(f"/admin/store/auditentry/{entry.pk}/change/", {"actor": "x"}).status_code == 403
    assert client.post(f"/admin/store/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/store/auditentry/add/").status_code == 403
    entry.refresh_from_db()
    assert entry.actor == "sue"


def test_a_configuration_load_is_audited(tmp_path):
    from postroom.config import load_config
    from postroom.store.loader import apply_config

    apply_config(load_config(ROOT / "examples" / "demo.toml", environ={}))
    apply_config(load_config(ROOT / "examples" / "demo.toml", environ={}))  # no change
    loads = AuditEntry.objects.filter(action="config_load")
    assert loads.count() == 1
    assert loads.get().target.endswith("demo.toml") and loads.get().detail["agents"]["created"] == 5
