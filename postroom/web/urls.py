from django.urls import path

from postroom.web import views
from postroom.web.api import api

urlpatterns = [
    path("", views.live, name="live"),
    path("healthz", views.healthz, name="healthz"),
    # Before "api/" so ninja's catch-all does not see it.
    path("api/docs/assets/<str:name>", views.docs_asset, name="docs-asset"),
    path("api/", api.urls),
]
