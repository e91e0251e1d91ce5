"""B-10: the OAuth2 token lifecycle (Microsoft 365, Google).

In the field (zammad#3411, osTicket#6455/#6299, zammad#5503/#3292, chatwoot#10631,
sasl-xoauth2#29): a rotated refresh token was never stored, so boxes died after 90 days;
a refresh broke silently and nobody noticed for ten days; Google "Testing" apps expire
every 7 days; a revoked grant left the admin UI with a 500 and no way to re-authorize.

Here, against real parts: a fake IdP on loopback (postroom/devstack/idp.py) that ROTATES
the refresh token at every refresh and refuses (and revokes the grant on) any rotated-away
one, and a Dovecot + Postfix stack of this module's own whose oauth2 passdb asks that IdP
whether a bearer token is active, for IMAP and for the submission port alike. The support
box and the outbound box (so also the SMTP relay account) log in by SASL XOAUTH2 only:
they have no password anybody knows. Time is skipped ahead on the engine's clock and the
IdP's together, so tokens expire for real at the IdP without waiting.
"""

from __future__ import annotations

import builtins
import os
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from postroom import cli
from postroom.core.alerts import AlertKind
from postroom.core.oauth2 import Answer, GrantState
from postroom.devstack import DevStack
from postroom.devstack import testing as devstack_testing
from postroom.devstack.idp import FakeIdP
from postroom.engine.oauth2 import Provider, call_token_endpoint
from postroom.store.models import Alert, Interaction, OAuth2Grant
from tests.e2e import conftest as e2e
from tests.e2e import enginerun
from tests.e2e.conftest import Center
from tests.field_bugs.helpers import (
    answer,
    auto_responses,
    customer_mail,
    forwards,
    replies,
    run_until,
    send,
)

pytestmark = [pytest.mark.mailstack, pytest.mark.django_db(transaction=True)]

LIFETIME = 600  # seconds an access token lives at the IdP
OAUTH2 = """
[[oauth2]]
name = "idp"
client_id = "postroom"
client_secret = "postroom-secret"
authorize_url = "{idp}/authorize"
token_url = "{idp}/token"
scopes = ["mail"]
redirect_uri = "http://127.0.0.1:9/callback"
timeout = "3s"
"""
# A second incoming box that keeps its password: the box that must go on working.
SALES = """
[[incoming]]
address = "{sales}"
password = "{sales_pw}"
skills = ["support"]
"""


class _Opened(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # keep the 302: its Location carries the code


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdP]:
    server = FakeIdP(access_lifetime=LIFETIME).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mailstack(idp: FakeIdP) -> Iterator[DevStack]:
    """This module's own stack (the session's has no oauth2 passdb), on ports of its own."""
    # A root of its own: the session's stack of this worker is /tmp/pr-<index>-<pid>.
    root = Path("/tmp/pr-oauth2")
    root.mkdir(exist_ok=True)
    root.chmod(0o755)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    stack = devstack_testing.start_for_worker(root, worker, oauth2_introspection_url=f"{idp.url}/introspect")
    try:
        yield stack
    finally:
        devstack_testing.discard(stack)


@pytest.fixture
def oauth2_center(make_center: Callable[..., Center], idp: FakeIdP, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> Center:
    """The center of the end-to-end tests with its support and outbound boxes on OAuth2,
    each authorized the way a site does it: `postroom oauth2 authorize BOX`."""
    template = e2e.CONFIG.replace('password = "{support_pw}"', 'oauth2 = "idp"')
    template = template.replace('password = "{outbound_pw}"', 'oauth2 = "idp"')
    monkeypatch.setattr(e2e, "CONFIG", template)
    idp.down, idp.skew, idp.grant_lifetime = False, 0.0, None
    idp.refused.clear()
    center = make_center(OAUTH2.replace("{idp}", idp.url) + SALES)
    for who in ("support", "outbound"):
        authorize(center, who, monkeypatch, capsys)
    center.ready("alice")
    return center


def authorize(center: Center, who: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Run `postroom oauth2 authorize`: open the URL it prints (the fake IdP approves at
    once and redirects), paste back the URL the browser was sent to."""

    def browser(prompt: str = "") -> str:
        printed = capsys.readouterr().out
        url = next(line for line in printed.splitlines() if line.startswith("http"))
        opener = urllib.request.build_opener(_Opened)
        try:
            opener.open(url, timeout=10)
        except urllib.request.HTTPError as redirect:
            assert redirect.code == 302
            return redirect.headers["Location"]
        raise AssertionError("the IdP did not redirect")

    monkeypatch.setattr(builtins, "input", browser)
    assert cli.main(["oauth2", "authorize", center.address(who), str(center.path)]) == 0
    assert "authorized" in capsys.readouterr().out


def skip_ahead(center: Center, idp: FakeIdP, seconds: float) -> None:
    assert center.clock is not None
    center.clock.advance(seconds=seconds)
    idp.skew += seconds


def grant(center: Center, who: str) -> OAuth2Grant:
    return OAuth2Grant.objects.get(login=center.address(who).lower())


def oauth2_alerts(kind: AlertKind = AlertKind.OAUTH2_GRANT_INVALID) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind))


def answered_end_to_end(center: Center, subject: str, auto: bool = True) -> None:
    """A customer's mail to the support box gets its auto-response (`auto`: Carol gets at
    most three a day, [auto_response]) and the agent's reply."""
    before = (len(auto_responses(center)), len(replies(center)), len(forwards(center)))
    send(center, customer_mail(center, subject=subject))
    run_until(center, "the auto-response and the forward",
              lambda: len(auto_responses(center)) > before[0] - (not auto) and len(forwards(center)) > before[2])
    answer(center)
    run_until(center, "the agent's reply to reach the customer", lambda: len(replies(center)) > before[1])


def test_an_oauth2_box_answers_end_to_end_across_rotations(oauth2_center: Center, idp: FakeIdP,
                                                           mailstack: DevStack) -> None:
    center = oauth2_center
    assert not center.config.mail_passwords().get(center.address("support"))
    answered_end_to_end(center, "Where is my order #1?")
    first = grant(center, "support").refresh_token

    seen = {first}
    for n in range(3):
        refreshes = idp.refreshes
        # Past three quarters of the token's life: due, but still valid at the IdP. Every
        # IMAP session is then ended, so the next login must present a token.
        skip_ahead(center, idp, LIFETIME * 0.8)
        mailstack.kick(center.address("support"))
        mailstack.kick(center.address("outbound"))
        answered_end_to_end(center, f"And my order #{n + 2}?", auto=n < 2)
        assert idp.refreshes > refreshes, "the token was renewed ahead of its expiry"
        stored = grant(center, "support").refresh_token
        assert stored == idp.live_refresh_token(center.address("support")), "the rotated token is stored"
        assert stored not in seen
        seen.add(stored)
    assert idp.refused == [], "no rotated-away refresh token was ever presented again"
    assert oauth2_alerts() == []
    assert Interaction.objects.count() == 4

    # A token already rotated away is refused by the IdP: keeping the old one would fail.
    provider = Provider.of(center.config.oauth2[0])
    assert call_token_endpoint(provider, refresh_token=first).answer is Answer.GRANT_INVALID


def test_an_expired_access_token_is_refreshed_before_use(oauth2_center: Center, idp: FakeIdP,
                                                          mailstack: DevStack) -> None:
    center = oauth2_center
    old = grant(center, "support").access_token
    # Beyond the token's life: the IdP says it is inactive, Dovecot would refuse it.
    skip_ahead(center, idp, LIFETIME + 60)
    mailstack.kick(center.address("support"))
    answered_end_to_end(center, "Is my token fresh?")
    row = grant(center, "support")
    assert row.access_token != old and row.failures == 0


def test_the_idp_down_for_a_while_is_retried_without_alerts_and_recovers(
    oauth2_center: Center, idp: FakeIdP, mailstack: DevStack
) -> None:
    center = oauth2_center
    token = grant(center, "support").refresh_token
    idp.down = True
    skip_ahead(center, idp, LIFETIME * 0.8)  # due, still valid
    mailstack.kick(center.address("support"))
    send(center, customer_mail(center, subject="While the IdP is away"))
    run_until(center, "the mail taken with the last good token", lambda: len(auto_responses(center)) >= 1)
    row = grant(center, "support")
    assert row.failures >= 1 and row.retry_at is not None, "the refresh was tried and put off"
    assert row.refresh_token == token and row.state == GrantState.VALID, "the box keeps its grant"

    # Now the last good token runs out while the IdP is still away: the box waits.
    skip_ahead(center, idp, LIFETIME)
    mailstack.kick(center.address("support"))
    send(center, customer_mail(center, subject="Still away", who="stranger"))
    for _ in range(3):
        center.engine.run_until_idle()
        skip_ahead(center, idp, 30)
    assert len(auto_responses(center, "stranger")) == 0
    assert oauth2_alerts() == [], "an IdP that is away is no grant problem: no alert storm"
    assert grant(center, "support").refresh_token == token

    idp.down = False
    skip_ahead(center, idp, 600)  # past the longest retry backoff
    run_until(center, "the box back after the IdP", lambda: len(auto_responses(center, "stranger")) == 1)
    row = grant(center, "support")
    assert row.failures == 0 and row.refresh_token != token
    assert oauth2_alerts() == []


def test_a_revoked_grant_is_one_alert_the_other_boxes_go_on_and_authorize_restores_it(
    oauth2_center: Center, idp: FakeIdP, mailstack: DevStack, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    center = oauth2_center
    support = center.address("support")
    idp.revoke_user(support)
    skip_ahead(center, idp, LIFETIME + 60)
    mailstack.kick(support)
    send(center, customer_mail(center, subject="To the revoked box"))
    send(center, customer_mail(center, subject="To sales", who="stranger", to="sales"), to="sales")
    run_until(center, "the sales box's auto-response", lambda: len(auto_responses(center, "stranger")) == 1)
    for _ in range(3):
        center.engine.run_until_idle()
        skip_ahead(center, idp, 60)
    assert auto_responses(center) == [], "the support box cannot log in"
    alerts = oauth2_alerts()
    assert [(a.key, a.count) for a in alerts] == [(support.lower(), 1)], "one alert, naming the box"
    assert "postroom oauth2 authorize" in alerts[0].message
    assert grant(center, "support").state == GrantState.INVALID

    # A human authorizes the box again; the same engine picks it up, no restart.
    authorize(center, "support", monkeypatch, capsys)
    run_until(center, "the support box back", lambda: len(auto_responses(center)) == 1)
    assert Alert.objects.get(pk=alerts[0].pk).cleared_at is not None
    assert grant(center, "support").state == GrantState.VALID


def test_a_known_refresh_token_expiry_is_warned_about_ahead(
    oauth2_center: Center, idp: FakeIdP, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    center = oauth2_center
    login = center.address("support").lower()
    # A grant that ends 7 days after consent, as a Google "Testing" app's does; the IdP
    # says so at every refresh (refresh_token_expires_in).
    idp.grant_lifetime = timedelta(days=7).total_seconds()
    authorize(center, "support", monkeypatch, capsys)
    assert grant(center, "support").refresh_expires_at is not None
    center.engine.run_until_idle()
    assert oauth2_alerts(AlertKind.OAUTH2_GRANT_EXPIRING) == []
    skip_ahead(center, idp, timedelta(days=4, minutes=1).total_seconds())
    for _ in range(3):
        center.engine.run_until_idle()
    warned = oauth2_alerts(AlertKind.OAUTH2_GRANT_EXPIRING)
    assert [(a.key, a.count) for a in warned] == [(login, 1)], "warned once, ahead of the end"
    assert "postroom oauth2 authorize" in warned[0].message


# -- a kill around the store of a rotated refresh token (the engine as a process) -------------


def test_a_kill_right_after_the_rotated_token_is_stored_loses_nothing_and_one_before_is_told(
    idp: FakeIdP, mailstack: DevStack, new_user: Callable[..., tuple[str, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`POSTROOM_CRASH_AT` ends the engine like SIGKILL. Killed just after the store, the
    restarted engine goes on with the rotated token: the file's first token, spent at the
    IdP, is never presented again (the IdP would revoke the grant for its reuse). Killed
    between the IdP's answer and the store (the window no order can close with an IdP this
    strict), the grant is lost, and that is one alert naming the box, not silence."""
    # Access tokens of 4 s: the running engine refreshes (and the IdP rotates) every ~3 s.
    idp.down, idp.skew, idp.grant_lifetime, idp.access_lifetime = False, 0.0, None, 4
    idp.refused.clear()
    monkeypatch.setattr(enginerun, "CONFIG", e2e.CONFIG.replace(
        'password = "{support_pw}"', 'oauth2 = "idp"\nrefresh_token_env = "B10_SUPPORT_REFRESH_TOKEN"'))
    dep = enginerun.make_deployment(mailstack, new_user, tmp_path,
                                    extra=lambda values: OAUTH2.replace("{idp}", idp.url))
    try:
        support = dep.center.address("support").lower()
        stored = f"SELECT refresh_token FROM store_oauth2grant WHERE login = '{support}'"
        monkeypatch.setenv("B10_SUPPORT_REFRESH_TOKEN", idp.grant(support))
        dep.load()
        dep.ready("alice")
        crashing = dep.start_engine("oauth2_after_store")
        enginerun.wait_until("the kill after the store", lambda: crashing.poll() is not None, timeout=40)
        assert crashing.poll() == 137
        assert dep.scalar(stored) == idp.live_refresh_token(support)

        running = dep.start_engine()
        send(dep.center, customer_mail(dep.center, subject="After the kill"))
        enginerun.wait_until("the auto-response", lambda: len(auto_responses(dep.center)) == 1, timeout=40,
                             engine=running)
        rotations = idp.refreshes
        enginerun.wait_until("two more rotations", lambda: idp.refreshes >= rotations + 2, timeout=40, engine=running)
        assert idp.refused == [], "neither the file's token nor a rotated one was presented twice"
        running.stop()
        assert dep.scalar(stored) == idp.live_refresh_token(support)

        before = idp.refreshes
        killed = dep.start_engine("oauth2_before_store")
        enginerun.wait_until("the kill before the store", lambda: killed.poll() is not None, timeout=40)
        assert killed.poll() == 137 and idp.refreshes == before + 1, "the IdP answered, then the engine died"
        again = dep.start_engine()
        invalid = (f"SELECT count(*) FROM store_alert WHERE kind = '{AlertKind.OAUTH2_GRANT_INVALID.value}' "
                   f"AND key = '{support}' AND cleared_at IS NULL")
        # (Once the dead engine's claim on the grant has run out: the token endpoint's
        # timeout, 3 s here, plus 5 s.)
        enginerun.wait_until("the alert naming the box", lambda: dep.scalar(invalid) == 1, timeout=60, engine=again)
        assert again.poll() is None, "the engine goes on"
    finally:
        idp.access_lifetime = LIFETIME
        dep.cleanup()
