"""The admin's "Authorize again" for a box on OAuth2 (field bug B-10, decision 0046).

The page people open when a grant was revoked: it must never answer 500, and its action
must sign the box in again. Against the fake IdP on loopback (postroom/devstack/idp.py),
with the site's configuration file naming the box's provider (POSTROOM_CONFIG).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from postroom.core.alerts import AlertKind
from postroom.core.oauth2 import GrantState
from postroom.devstack.idp import FakeIdP
from postroom.store.models import Alert, AuditEntry, OAuth2Grant
from postroom.store.oauth2 import site_providers
from tests.unit.test_config import base, write

pytestmark = pytest.mark.django_db

BOX = "sales@example.test"


class _Kept(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    server = FakeIdP().start()
    yield server
    server.stop()


@pytest.fixture
def site(idp: FakeIdP, tmp_path: Path, settings) -> Path:
    doc = base()
    doc["oauth2"] = [{"name": "idp", "client_id": idp.client_id, "client_secret": idp.client_secret,
                      "authorize_url": f"{idp.url}/authorize", "token_url": f"{idp.url}/token", "scopes": ["mail"]}]
    doc["incoming"][1] = {"address": BOX, "oauth2": "idp", "skills": ["sales"]}
    path = write(tmp_path, doc)
    settings.POSTROOM_CONFIG = str(path)
    assert BOX in site_providers()
    return path


@pytest.fixture
def admin_client(client):
    root = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(root)
    return client


def revoked(now=None) -> OAuth2Grant:
    now = now or timezone.now()
    Alert.objects.create(kind=AlertKind.OAUTH2_GRANT_INVALID, key=BOX, message="refused", raised_at=now,
                         last_raised_at=now)
    return OAuth2Grant.objects.create(login=BOX, provider="idp", state=GrantState.INVALID, refresh_token="rt-dead",
                                      access_token="at-secret-token", last_error="400 invalid_grant")


def act(admin_client, grant: OAuth2Grant):
    return admin_client.post("/admin/store/oauth2grant/", {"action": "authorize", "_selected_action": [grant.pk]})


def test_a_revoked_grant_is_shown_without_its_tokens(admin_client, site: Path) -> None:
    revoked()
    page = admin_client.get("/admin/store/oauth2grant/")
    assert page.status_code == 200
    assert b"invalid_grant" in page.content and b"at-secret-token" not in page.content
    grant = OAuth2Grant.objects.get()
    detail = admin_client.get(f"/admin/store/oauth2grant/{grant.pk}/change/")
    assert detail.status_code == 200 and b"rt-dead" not in detail.content


def test_authorize_again_signs_the_box_in_and_clears_the_alert(admin_client, site: Path, idp: FakeIdP) -> None:
    grant = revoked()
    started = act(admin_client, grant)
    assert started.status_code == 302 and started["Location"].startswith(f"{idp.url}/authorize?")
    # The administrator signs in at the IdP, which redirects back to the callback.
    try:
        urllib.request.build_opener(_Kept).open(started["Location"], timeout=10)
        raise AssertionError("the IdP did not redirect")
    except urllib.request.HTTPError as redirect:
        back = redirect.headers["Location"]
    assert "/admin/store/oauth2grant/callback/" in back
    here = urlsplit(back)
    done = admin_client.get(f"{here.path}?{here.query}", follow=True)
    assert done.status_code == 200
    assert b"authorized" in done.content
    grant.refresh_from_db()
    assert grant.state == GrantState.VALID and grant.refresh_token == idp.live_refresh_token(BOX)
    assert Alert.objects.get(key=BOX).cleared_at is not None
    assert AuditEntry.objects.filter(action="oauth2_authorized", target=BOX).exists()
    # The same redirect again (a reload, a replay) is refused with a message, not a 500.
    again = admin_client.get(f"{here.path}?{here.query}", follow=True)
    assert again.status_code == 200 and b"not one this session started" in again.content


@pytest.mark.parametrize("trouble", ["denied", "idp_down", "forged_state", "no_config"])
def test_every_failure_is_a_message_never_a_500(admin_client, site: Path, idp: FakeIdP, settings, trouble: str) -> None:
    grant = revoked()
    if trouble == "no_config":
        settings.POSTROOM_CONFIG = ""
        page = act(admin_client, grant)
        assert page.status_code == 302
        assert b"not a box on OAuth2" in admin_client.get(page["Location"]).content
        return
    started = act(admin_client, grant)
    state = started["Location"].split("state=")[1].split("&")[0]
    query = {"denied": f"error=access_denied&state={state}",
             "idp_down": f"code=whatever&state={state}",
             "forged_state": "code=whatever&state=forged"}[trouble]
    idp.down = trouble == "idp_down"
    page = admin_client.get(f"/admin/store/oauth2grant/callback/?{query}", follow=True)
    assert page.status_code == 200
    assert b"class=\"error\"" in page.content
    assert OAuth2Grant.objects.get().state == GrantState.INVALID
