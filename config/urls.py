from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

from searchapp import views
from searchapp.analytics.page import analytics_page

handler404 = "searchapp.views.not_found"
handler500 = "searchapp.views.server_error"

urlpatterns = [
    path("", views.search_page, name="search"),
    path("personalisation/", views.set_personalisation, name="personalisation"),
    path("images/<int:image_id>/", views.image_page, name="image"),
    path("feedback/", include("feedback.urls")),
    path("api/v1/", include("searchapp.api.urls")),
    path("admin/analytics/", admin.site.admin_view(analytics_page), name="search-analytics"),
    path("admin/", admin.site.urls),
]

if settings.SERVE_MEDIA:
    urlpatterns.append(re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}, name="media"))
