from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from searchapp.api import views

urlpatterns = [
    path("search", views.SearchView.as_view(), name="api-search"),
    path("images/<int:image_id>", views.ImageDetailView.as_view(), name="api-image"),
    path("images/<int:image_id>/captions", views.ImageCaptionsView.as_view(), name="api-image-captions"),
    path("tags", views.TagSuggestionsView.as_view(), name="api-tags"),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
