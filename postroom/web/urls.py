from django.urls import path

from postroom.web import views
from postroom.web.api import api

urlpatterns = [
    path("", views.live, name="live"),
    path("agent/", views.agent_desk, name="agent"),
    path("supervisor/", views.supervisor_console, name="supervisor"),
    path("interactions/<uuid:guid>/", views.interaction_page, name="interaction"),
    path("accounts/login/", views.login_view, name="login"),
    path("accounts/logout/", views.logout_view, name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("assets/<str:asset_name>", views.asset, name="asset"),
    path("favicon.ico", views.favicon, name="favicon"),
    # Before "api/" so ninja's catch-all does not see it.
    path("api/docs/assets/<str:name>", views.docs_asset, name="docs-asset"),
    path("api/", api.urls),
]
