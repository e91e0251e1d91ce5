"""`postroom oauth2 authorize BOX CONFIG --listen`: the code taken from the browser's
redirect to a loopback redirect URI (RFC 8252 §7.3), against the fake IdP."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from postroom import cli
from postroom.core.oauth2 import GrantState
from postroom.devstack.idp import FakeIdP
from postroom.store.models import OAuth2Grant
from tests.unit.test_config import base, write

pytestmark = pytest.mark.django_db(transaction=True)

BOX = "sales@example.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_authorize_takes_the_code_from_the_loopback_redirect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    idp = FakeIdP().start()
    try:
        doc = base()
        doc["oauth2"] = [{"name": "idp", "client_id": idp.client_id, "client_secret": idp.client_secret,
                          "authorize_url": f"{idp.url}/authorize", "token_url": f"{idp.url}/token",
                          "scopes": ["mail"], "redirect_uri": f"http://127.0.0.1:{free_port()}/"}]
        doc["incoming"][1] = {"address": BOX, "oauth2": "idp", "skills": ["sales"]}
        path = write(tmp_path, doc)
        done: list[int] = []
        def authorize() -> None:
            try:
                done.append(cli.main(["oauth2", "authorize", BOX, str(path), "--listen"]))
            finally:
                # This thread's own database connection: left open, its session outlived the
                # thread until a garbage collection (and could hold up the test database's DROP).
                connection.close()

        command = threading.Thread(target=authorize)
        command.start()
        url = ""
        deadline = time.monotonic() + 20
        printed = ""
        while not url and time.monotonic() < deadline:
            printed += capsys.readouterr().out
            url = next((line for line in printed.splitlines() if line.startswith("http")), "")
            time.sleep(0.05)
        # The browser: the IdP approves and redirects to the command's loopback listener.
        for _ in range(50):
            try:
                with urllib.request.urlopen(url, timeout=10) as page:
                    assert b"Postroom has the authorization" in page.read()
                break
            except (ConnectionRefusedError, urllib.error.URLError):
                time.sleep(0.1)  # the listener is not up yet
        command.join(20)
        assert done == [0]
        grant = OAuth2Grant.objects.get(login=BOX)
        assert grant.state == GrantState.VALID and grant.refresh_token == idp.live_refresh_token(BOX)
    finally:
        idp.stop()
