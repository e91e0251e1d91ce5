from django.urls import path

from postroom.web import composer, evaluate, journal, nodes, reports, transcript, views
from postroom.web.api import api

urlpatterns = [
    path("", views.live, name="live"),
    path("agent/", views.agent_desk, name="agent"),
    path("supervisor/", views.supervisor_console, name="supervisor"),
    path("nodes/", nodes.nodes_page, name="nodes"),
    path("journal/", journal.journal, name="journal"),
    path("reports/", reports.reports_page, name="reports"),
    path("reports/download", reports.reports_download, name="reports-download"),
    path("interactions/<uuid:guid>/", views.interaction_page, name="interaction"),
    path("interactions/<uuid:guid>/transcript/", transcript.transcript, name="transcript"),
    path(
        "interactions/<uuid:guid>/messages/<str:ref>/frame",
        transcript.message_frame,
        name="message-frame",
    ),
    path(
        "interactions/<uuid:guid>/messages/<str:ref>/attachments/<int:index>",
        transcript.message_attachment,
        name="message-attachment",
    ),
    path("interactions/<uuid:guid>/evaluate/", evaluate.evaluate, name="evaluate"),
    path("interactions/<uuid:guid>/reply/", composer.reply, name="reply"),
    path("accounts/login/", views.login_view, name="login"),
    path("accounts/logout/", views.logout_view, name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("assets/<str:asset_name>", views.asset, name="asset"),
    path("favicon.ico", views.favicon, name="favicon"),
    # Before "api/" so ninja's catch-all does not see it.
    path("api/docs/assets/<str:name>", views.docs_asset, name="docs-asset"),
    path("api/", api.urls),
]
