from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("postroom.web.urls")),
]

handler403 = "postroom.web.views.permission_denied"
