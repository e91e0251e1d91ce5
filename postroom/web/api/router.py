"""A ninja Router that will not take an endpoint without a declared role.

Every operation must carry ``@allow(Role.X)`` (postroom.web.access) under its route
decorator; the role goes into the OpenAPI schema as ``x-postroom-role`` (and
``x-postroom-demo-open``), where clients read it and the permission-matrix test finds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ninja
from django.core.exceptions import ImproperlyConfigured


class Router(ninja.Router):
    def add_api_operation(
        self, path: str, methods: list[str], view_func: Callable[..., Any], **kwargs: Any
    ) -> None:
        if not hasattr(view_func, "postroom_access"):
            raise ImproperlyConfigured(
                f"API endpoint {view_func.__qualname__} ({methods} {path}) declares no role: "
                "put @allow(Role.X) under its route decorator"
            )
        extra = dict(kwargs.get("openapi_extra") or {})
        extra["x-postroom-role"] = view_func.postroom_access.label
        if getattr(view_func, "postroom_demo_open", False):
            extra["x-postroom-demo-open"] = True
        kwargs["openapi_extra"] = extra
        super().add_api_operation(path, methods, view_func, **kwargs)
