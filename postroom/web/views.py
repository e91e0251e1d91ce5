"""The live monitoring page, the health check and the API docs' local assets."""

from __future__ import annotations

from pathlib import Path

import ninja
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError, connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from postroom.web.access import login_required_for_monitoring
from postroom.web.api import status_dict


def waiting_text(seconds: int) -> str:
    """45s, 3m 05s, 2h 03m, 1d 4h: the same format as the page's script."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


@require_GET
@never_cache
def live(request: HttpRequest) -> HttpResponse:
    """The queue and the agents, refreshed every second by the page's own script.

    No login by default: in the walking skeleton this is read-only monitoring of the local
    demo, which must open without a password. POSTROOM_WEB_LOGIN_REQUIRED=true makes it
    (and its feed, GET /api/status) require a logged-in user.
    """
    if login_required_for_monitoring() and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    status = status_dict()
    for item in status["queue"]:
        item["waiting"] = waiting_text(item["waiting_seconds"])
    return render(request, "postroom/live.html", {"status": status})


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 {"status": "ok"} when the database answers; 503 otherwise."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return JsonResponse(
            {"status": "error", "database": "unreachable", "detail": str(exc)}, status=503
        )
    return JsonResponse({"status": "ok", "database": "ok"})


# Swagger UI ships inside django-ninja; serve those files ourselves so /api/docs works
# offline and without "ninja" in INSTALLED_APPS or a static-files server.
_NINJA_STATIC = Path(ninja.__file__).resolve().parent / "static" / "ninja"
_DOCS_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-init.js": "text/javascript",
    "favicon.png": "image/png",
}


@require_GET
def docs_asset(request: HttpRequest, name: str) -> FileResponse:
    content_type = _DOCS_ASSETS.get(name)
    if content_type is None:
        raise Http404(name)
    response = FileResponse((_NINJA_STATIC / name).open("rb"), content_type=content_type)
    response["Cache-Control"] = "public, max-age=86400"
    return response
