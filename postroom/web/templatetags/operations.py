"""`{% operations_panel %}`: alerts, box health and quarantine on the supervisor console."""

from __future__ import annotations

from typing import Any

from django import template

from postroom.web.operations import operations_dict

register = template.Library()


@register.inclusion_tag("postroom/_operations.html")
def operations_panel() -> dict[str, Any]:
    return {"ops": operations_dict()}
