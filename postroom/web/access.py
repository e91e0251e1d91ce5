"""Who may look at the live monitoring page (and its data feed, GET /api/status)."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def login_required_for_monitoring() -> bool:
    """POSTROOM_WEB_LOGIN_REQUIRED, read on every request; default false.

    The walking skeleton's live page is read-only monitoring of the local demo, so by
    default it opens without a password. Set POSTROOM_WEB_LOGIN_REQUIRED=true wherever
    real people's mail is shown: then "/" needs a login and GET /api/status needs a
    session or a token like the rest of the API. A value that is not a boolean is an
    error rather than a silent "open".
    """
    value = os.environ.get("POSTROOM_WEB_LOGIN_REQUIRED", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"POSTROOM_WEB_LOGIN_REQUIRED must be a boolean, got {value!r}")
