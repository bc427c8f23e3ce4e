"""Admin: browse searches, clicks and ratings; per-image and per-query summaries; suspicious bursts; partner API keys.

Feedback rows are evidence: the admin shows them read-only, and only superusers may delete (for
example to honour a user's erasure request).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import Count
from django.utils import timezone
from django.utils.html import format_html

from feedback.api_keys import new_key
from feedback.erasure import erase_user_key
from feedback.models import (
    ApiKey,
    Click,
    ErasedUser,
    ImageFeedbackSummary,
    Impression,
    NetworkBurst,
    QueryFeedbackSummary,
    Rating,
    SearchEvent,
)
from feedback.summaries import refresh_summaries


@admin.action(description="Erase every search, click and rating of these users", permissions=["delete"])
def erase_users(modeladmin, request, queryset) -> None:
    """The admin's way to honour an erasure request: the users of the selected rows, all their feedback."""
    keys = sorted(set(queryset.values_list("user_key", flat=True)))
    totals = [0, 0, 0]
    for user_key in keys:
        erasure = erase_user_key(user_key, partner=None, requested_by=f"admin {request.user.get_username()}")
        totals = [totals[0] + erasure.searches, totals[1] + erasure.clicks, totals[2] + erasure.ratings]
    modeladmin.message_user(
        request,
        f"Erased {len(keys)} user(s): {totals[0]} searches, {totals[1]} clicks, {totals[2]} ratings.",
        messages.SUCCESS,
    )


def thumbnail(image) -> str:
    if image is None:  # taken down: the feedback row is kept, detached (collection.takedown)
        return "taken down"
    return format_html('<img src="{}" alt="" class="loupe-thumb">', image.thumbnail.url)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ImpressionInline(ReadOnlyInline):
    model = Impression
    fields = ["position", "preview", "image", "score", "features"]
    readonly_fields = fields
    ordering = ["position"]

    @admin.display(description="image")
    def preview(self, impression: Impression) -> str:
        return thumbnail(impression.image)


class ClickInline(ReadOnlyInline):
    model = Click
    fields = ["created_at", "position", "image", "dwell_ms", "client_id"]
    readonly_fields = fields


@admin.register(SearchEvent)
class SearchEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "query_text",
        "kind",
        "user_key",
        "surface",
        "arm",
        "ranker",
        "result_count",
        "click_count",
        "latency_ms",
    ]
    list_filter = ["surface", "kind", "ranker", "arm", "page", "created_at", "partner"]
    search_fields = ["query_text", "normalised_query", "user_key", "=id"]
    date_hierarchy = "created_at"
    inlines = [ImpressionInline, ClickInline]
    list_select_related = ["partner"]
    actions = [erase_users]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(click_total=Count("clicks"))

    @admin.display(description="clicks", ordering="click_total")
    def click_count(self, event: SearchEvent) -> int:
        return event.click_total


@admin.register(Click)
class ClickAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "preview", "image", "position", "query", "user_key", "dwell_ms"]
    list_filter = ["position", "created_at", "event__surface"]
    search_fields = ["user_key", "event__query_text", "client_id", "=image__id"]
    date_hierarchy = "created_at"
    list_select_related = ["event", "image"]
    actions = [erase_users]

    @admin.display(description="image")
    def preview(self, click: Click) -> str:
        return thumbnail(click.image)

    @admin.display(description="query", ordering="event__query_text")
    def query(self, click: Click) -> str:
        return click.event.query_text


@admin.register(Rating)
class RatingAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "preview", "image", "scale", "value", "query_text", "user_key", "event"]
    list_filter = ["scale", "value", "created_at"]
    search_fields = ["user_key", "query_text", "client_id", "=image__id"]
    date_hierarchy = "created_at"
    list_select_related = ["image"]
    actions = [erase_users]

    @admin.display(description="image")
    def preview(self, rating: Rating) -> str:
        return thumbnail(rating.image)


@admin.register(ErasedUser)
class ErasedUserAdmin(ReadOnlyAdmin):
    """The record of erasures: when, who asked, what went (the key itself is kept only as a digest)."""

    list_display = [
        "erased_at",
        "key_digest",
        "requested_by",
        "partner",
        "searches",
        "clicks",
        "ratings",
        "finished_at",
    ]
    list_filter = ["erased_at", "partner"]
    search_fields = ["=key_digest", "requested_by"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the fence that keeps the erased rows out of training


class SummaryAdmin(ReadOnlyAdmin):
    """Folded summaries: refreshed by the worker every few minutes, or now with the action."""

    actions = ["refresh_now"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_refresh_permission(self, request) -> bool:
        """Rows are read-only (has_change_permission is False), but recomputing is a write: it needs
        the model's change permission, which view-only staff do not have."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.action(
        description="Refresh the summaries now (they refresh by themselves every few minutes)",
        permissions=["refresh"],
    )
    def refresh_now(self, request, queryset) -> None:
        fold = refresh_summaries()
        self.message_user(
            request, f"Summaries refreshed ({fold['hours']} hours, {fold['searches']} searches in {fold['seconds']}s)."
        )

    @admin.display(description="click-through rate")
    def ctr(self, summary) -> str:
        return percent(summary.click_through_rate)

    @admin.display(description="mean rating (0-1)", ordering="mean_utility")
    def mean_rating(self, summary) -> str:
        return "–" if summary.mean_utility is None else f"{summary.mean_utility:.2f}"

    def changelist_view(self, request, extra_context=None):
        # The refresh action must work on an empty summary too, where Django would ask to select rows first.
        if (
            request.method == "POST"
            and request.POST.get("action") == "refresh_now"
            and self.has_refresh_permission(request)
        ):
            post = request.POST.copy()
            post.setdefault(admin.helpers.ACTION_CHECKBOX_NAME, "")
            post["select_across"] = "1"
            request.POST = post
        return super().changelist_view(request, extra_context)


@admin.register(ImageFeedbackSummary)
class ImageFeedbackSummaryAdmin(SummaryAdmin):
    list_display = ["preview", "image_id", "impressions", "clicks", "ctr", "ratings", "mean_rating", "last_activity"]
    ordering = ["-clicks", "-impressions"]
    search_fields = ["=image__id", "image__captions__text"]
    list_select_related = ["image"]

    @admin.display(description="image")
    def preview(self, summary: ImageFeedbackSummary) -> str:
        return thumbnail(summary.image)


@admin.register(QueryFeedbackSummary)
class QueryFeedbackSummaryAdmin(SummaryAdmin):
    list_display = [
        "query",
        "searches",
        "users",
        "impressions",
        "clicks",
        "ctr",
        "abandonment_rate",
        "ratings",
        "mean_rating",
        "last_searched",
    ]
    ordering = ["-searches"]
    search_fields = ["query"]

    @admin.display(description="searches without a click")
    def abandonment_rate(self, summary: QueryFeedbackSummary) -> str:
        return percent(summary.abandonment)


@admin.register(NetworkBurst)
class NetworkBurstAdmin(ReadOnlyAdmin):
    """Networks that sent more new identities in a day than are trusted (``feedback.trust``): what they pushed."""

    list_display = ["day", "network", "newcomers", "burst_weight", "clicks", "top_query", "top_image", "top_clicks"]
    list_filter = ["day"]
    search_fields = ["network", "top_query"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a view over the log: delete the searches themselves, if anything


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "requests_per_minute"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scope_list", "requests_per_minute", "active", "created_at", "last_used_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, api_key: ApiKey) -> str:
        return ", ".join(api_key.scopes)

    @admin.display(description="active", boolean=True)
    def active(self, api_key: ApiKey) -> bool:
        return api_key.is_active

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the key's searches keep pointing at it

    def save_model(self, request, obj: ApiKey, form, change) -> None:
        if not change:
            plaintext = new_key(obj)
            obj.created_by = request.user
            super().save_model(request, obj, form, change)
            messages.warning(
                request,
                format_html(
                    "Copy the new key now; only its hash is stored and it will not be shown again: "
                    '<code data-testid="new-api-key">{}</code>',
                    plaintext,
                ),
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke the selected keys (they stop working at once)", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {revoked} key(s).")
