"""A fake OAuth2 identity provider on 127.0.0.1, strict where real ones are lenient.

For the tests of OAuth2 mailboxes (field bug B-10) and the dev stack's oauth2 passdb:

* ``/authorize`` approves at once (the user is ``login_hint``) and redirects with a code
  bound to the PKCE challenge (RFC 7636, S256 only);
* ``/token``: ``authorization_code`` and ``refresh_token`` grants. Every refresh ROTATES
  the refresh token, and the old one is refused from then on; presenting a refresh token
  that was already rotated away revokes the whole grant (RFC 6819 §5.2.2.3, reuse
  detection), as Okta and Auth0 do. Access tokens live ``access_lifetime`` seconds;
* ``/revoke`` (RFC 7009) ends a grant, and ``revoke_user`` does it from the test's side,
  as an admin revoking a user's sessions would;
* ``/introspect`` (RFC 7662, what Dovecot's oauth2 passdb asks): ``active`` and
  ``username`` for a live access token;
* ``down = True`` answers 503 at the token endpoint (introspection stays up, as an IdP's
  token endpoint and its resource servers' checks are separate services).

Nothing here is meant for anything but loopback tests and the demo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from .config import HOST


@dataclass
class _Grant:
    user: str
    refresh_token: str
    revoked: bool = False
    # When the grant itself ends, whatever refreshes happen (Google "Testing" apps: 7 days).
    ends: float | None = None
    # Every refresh token this grant ever had (reuse of an old one revokes the grant).
    spent: set[str] = field(default_factory=set)


class FakeIdP:
    def __init__(self, client_id: str = "postroom", client_secret: str = "postroom-secret",
                 access_lifetime: int = 3600) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_lifetime = access_lifetime
        self.down = False
        # Seconds a new grant lives, told in refresh_token_expires_in; None: no end.
        self.grant_lifetime: float | None = None
        # Seconds added to the IdP's clock: tests skip ahead the engine's and this together.
        self.skew = 0.0
        self.refreshes = 0
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._grants: list[_Grant] = []
        self._codes: dict[str, tuple[str, str, str]] = {}  # code -> (user, challenge, redirect)
        self._access: dict[str, tuple[_Grant, float]] = {}
        self._server: ThreadingHTTPServer | None = None

    # -- running ---------------------------------------------------------------------------
    def start(self) -> FakeIdP:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's hook
                idp._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                idp._handle(self, "POST")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-idp", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{HOST}:{self._server.server_address[1]}"

    def now(self) -> float:
        return time.time() + self.skew

    # -- the test's side -------------------------------------------------------------------
    def grant(self, user: str) -> str:
        """A new grant for `user`, as if it had consented: its first refresh token."""
        with self._lock:
            g = _Grant(user.lower(), _token("rt"))
            self._grants.append(g)
            return g.refresh_token

    def revoke_user(self, user: str) -> None:
        with self._lock:
            for g in self._grants:
                if g.user == user.lower():
                    g.revoked = True

    def live_refresh_token(self, user: str) -> str | None:
        with self._lock:
            live = [g for g in self._grants if g.user == user.lower() and not g.revoked]
            return live[-1].refresh_token if live else None

    # -- the endpoints ---------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        form = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if method == "POST":
            size = int(req.headers.get("Content-Length") or 0)
            form.update({k: v[0] for k, v in parse_qs(req.rfile.read(size).decode()).items()})
        route = {"/authorize": self._authorize, "/token": self._token, "/revoke": self._revoke,
                 "/introspect": self._introspect}.get(parts.path)
        if route is None:
            return _send(req, 404, {"error": "not_found"})
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and "token" not in form:
            form["token"] = auth.removeprefix("Bearer ")
        with self._lock:
            route(req, form)

    def _authorize(self, req: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        if form.get("client_id") != self.client_id or form.get("code_challenge_method") != "S256":
            return _send(req, 400, {"error": "invalid_request"})
        code = _token("code")
        self._codes[code] = (form.get("login_hint", "").lower(), form.get("code_challenge", ""),
                             form.get("redirect_uri", ""))
        target = form.get("redirect_uri", "") + "?" + urlencode({"code": code, "state": form.get("state", "")})
        req.send_response(302)
        req.send_header("Location", target)
        req.send_header("Content-Length", "0")
        req.end_headers()

    def _client_ok(self, req: BaseHTTPRequestHandler, form: dict[str, str]) -> bool:
        basic = req.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            cid, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        else:
            cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        return cid == self.client_id and secret == self.client_secret

    def _token(self, req: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        if self.down:
            return _send(req, 503, {"error": "temporarily_unavailable"})
        if not self._client_ok(req, form):
            return _send(req, 401, {"error": "invalid_client"})
        kind = form.get("grant_type")
        if kind == "authorization_code":
            user, challenge, redirect = self._codes.pop(form.get("code", ""), ("", "", ""))
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not user or digest != challenge or form.get("redirect_uri", "") != redirect:
                return _send(req, 400, {"error": "invalid_grant", "error_description": "bad code"})
            g = _Grant(user, _token("rt"))
            if self.grant_lifetime is not None:
                g.ends = self.now() + self.grant_lifetime
            self._grants.append(g)
            return _send(req, 200, self._issue(g))
        if kind == "refresh_token":
            presented = form.get("refresh_token", "")
            g = next((g for g in self._grants if presented == g.refresh_token or presented in g.spent), None)
            if g is not None and g.ends is not None and self.now() >= g.ends:
                g.revoked = True
            if g is None or g.revoked or presented != g.refresh_token:
                if g is not None:
                    g.revoked = True  # a rotated-away token came back: someone copied it
                self.refused.append(presented)
                return _send(req, 400, {"error": "invalid_grant", "error_description": "refresh token is not valid"})
            g.spent.add(g.refresh_token)
            g.refresh_token = _token("rt")
            self.refreshes += 1
            return _send(req, 200, self._issue(g))
        return _send(req, 400, {"error": "unsupported_grant_type"})

    def _issue(self, g: _Grant) -> dict[str, object]:
        access = _token("at")
        self._access[access] = (g, self.now() + self.access_lifetime)
        answer: dict[str, object] = {"access_token": access, "token_type": "Bearer",
                                     "expires_in": self.access_lifetime, "refresh_token": g.refresh_token,
                                     "scope": "mail"}
        if g.ends is not None:
            answer["refresh_token_expires_in"] = int(g.ends - self.now())
        return answer

    def _revoke(self, req: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        token = form.get("token", "")
        for g in self._grants:
            if token == g.refresh_token or token in g.spent:
                g.revoked = True
        if token in self._access:
            self._access[token][0].revoked = True
        _send(req, 200, {})

    def _introspect(self, req: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        found = self._access.get(form.get("token", ""))
        if found is None or found[0].revoked or self.now() >= found[1]:
            return _send(req, 200, {"active": False})
        _send(req, 200, {"active": True, "username": found[0].user, "exp": int(found[1])})


def _token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"


def _send(req: BaseHTTPRequestHandler, status: int, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    req.send_response(status)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(data)))
    req.send_header("Cache-Control", "no-store")
    req.end_headers()
    req.wfile.write(data)
