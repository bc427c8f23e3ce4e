from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from collection.models import EXTERNAL_ID_PATTERN
from feedback import api as feedback_api
from feedback import users_api
from ranking import api as ranking_api
from searchapp.api import docs, ingest, ingest_jobs, views

urlpatterns = [
    path("search", views.SearchView.as_view(), name="api-search"),
    path("images", ingest.AddImageView.as_view(), name="api-add-image"),
    path("images/<int:image_id>", views.ImageDetailView.as_view(), name="api-image"),
    re_path(
        rf"^images/ext:(?P<external_id>{EXTERNAL_ID_PATTERN})$",
        views.ExternalImageDetailView.as_view(),
        name="api-image-external",
    ),
    path("images/<int:image_id>/captions", views.ImageCaptionsView.as_view(), name="api-image-captions"),
    path("ingest-jobs", ingest_jobs.IngestJobsView.as_view(), name="api-ingest-jobs"),
    path("ingest-jobs/<int:job_id>", ingest_jobs.IngestJobView.as_view(), name="api-ingest-job"),
    path("ingest-jobs/<int:job_id>/items", ingest_jobs.IngestJobItemsView.as_view(), name="api-ingest-job-items"),
    path("tags", views.TagSuggestionsView.as_view(), name="api-tags"),
    path("feedback/clicks", feedback_api.ClickView.as_view(), name="api-clicks"),
    path("feedback/clicks/batch", feedback_api.ClickBatchView.as_view(), name="api-clicks-batch"),
    path("feedback/ratings", feedback_api.RatingView.as_view(), name="api-ratings"),
    path("feedback/ratings/batch", feedback_api.RatingBatchView.as_view(), name="api-ratings-batch"),
    path("feedback/layout", feedback_api.LayoutView.as_view(), name="api-layout"),
    path("users/<str:user>", users_api.PartnerUserView.as_view(), name="api-user"),
    path("users/<str:user>/export", users_api.PartnerUserExportView.as_view(), name="api-user-export"),
    path("experiments", ranking_api.ExperimentsView.as_view(), name="api-experiments"),
    path(
        "experiments/<int:experiment_id>/results",
        ranking_api.ExperimentResultsView.as_view(),
        name="api-experiment-results",
    ),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    # Both docs pages keep to the Content-Security-Policy: no inline script or style (docs/security.md).
    path(
        "docs",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
    path(
        "redoc",
        docs.RedocView.as_view(url_name="api-schema"),
        name="api-redoc",
    ),
]
