"""The search analytics page (staff with the right to read the search log): parse the filter, read the
rollups (``feedback.analytics.report``), chart them with the promotions (``ranking.promotions``), render."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from feedback.analytics.report import (
    BUCKETS,
    SURFACES,
    AnalyticsFilter,
    BadAnalyticsFilter,
    Figures,
    SearchAnalytics,
    search_analytics,
)
from ranking.promotions import promotions
from searchapp.analytics.chart import Line, line_chart

PERMISSION = "feedback.view_searchevent"  # the page shows what users typed, as the search log does
DEFAULT_DAYS = 7
HOURLY_UP_TO_DAYS = 2  # a default: hourly buckets for a range this short, daily ones beyond

# Where the search log's admin finds each surface's events (feedback.analytics.fold.SURFACE_SQL).
SURFACE_LOOKUPS = {
    "": {},
    "page": {"surface": "web"},
    "api": {"surface": "api", "partner__isnull": "1"},
    "partner": {"surface": "api", "partner__isnull": "0"},
    "sim": {"surface": "sim"},
}


class AnalyticsForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From")
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (inclusive)")
    surface = forms.ChoiceField(required=False, choices=list(SURFACES.items()))
    bucket = forms.ChoiceField(required=False, choices=[("", "automatic"), *((b, f"per {b}") for b in BUCKETS)])


def analytics_page(request: HttpRequest) -> TemplateResponse:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    form = AnalyticsForm(request.GET)
    status, found = 200, None
    if form.is_valid():
        try:
            found = search_analytics(_filter(form.cleaned_data))
        except BadAnalyticsFilter as exc:
            form.add_error(None, str(exc))
    if found is None:
        status = 400
    context = {
        **admin.site.each_context(request),
        "title": "Search analytics",
        "form": form,
        "found": found,
        **(_shown(found) if found else {}),
    }
    return TemplateResponse(request, "admin/search_analytics.html", context, status=status)


def _filter(data: dict) -> AnalyticsFilter:
    end = data.get("end") or timezone.now().date()
    start = data.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
    bucket = data.get("bucket") or ("hour" if (end - start).days < HOURLY_UP_TO_DAYS else "day")
    return AnalyticsFilter(start=start, end=end, surface=data.get("surface") or "", bucket=bucket)


def _shown(found: SearchAnalytics) -> dict:
    chosen = found.filter
    marks = promotions(chosen.since, chosen.until)
    starts = [point.at for point in found.series]

    def chart(title: str, fmt: str = "{:.3f}", **lines) -> str:
        drawn = [Line(name.replace("_", " "), [getattr(p.figures, field) for p in found.series])
                 for name, field in lines.items()]  # fmt: skip
        return line_chart(title, starts, drawn, marks, chosen.until, fmt)

    return {
        "surface_label": SURFACES[chosen.surface],
        "charts": [
            chart("Searches", "{:.0f}", searches="searches"),
            chart("Users", "{:.0f}", users="users"),
            chart("Click-through rate", click_through_rate="click_through_rate"),
            chart("Abandonment", abandonment="abandonment"),
            chart("Mean rating (0-1)", mean_rating="mean_rating"),
            chart("Latency (ms)", "{:.0f}", p50="p50_ms", p99="p99_ms"),
        ],
        "promotions": marks,
        "figures": _figures(found.totals),
        "series_rows": [(p.at, _figures(p.figures)) for p in found.series if p.figures.searches],
        "query_tables": [
            ("Top queries", "top-queries", _query_rows(found, found.top_queries)),
            ("Queries with no results (content gaps)", "no-results", _query_rows(found, found.no_result_queries)),
            (
                "Queries with results but no clicks (relevance gaps)",
                "no-clicks",
                _query_rows(found, found.no_click_queries),
            ),
        ],  # fmt: skip
        "slices": [
            ("exploration", found.totals.explored, _share(found.totals.explored, found.totals.searches)),
            ("swap", found.totals.swapped, _share(found.totals.swapped, found.totals.searches)),
        ],
    }


def _figures(figures: Figures) -> list[tuple[str, str, str]]:
    """(key, label, shown value) in the page's order."""
    return [
        ("searches", "searches", f"{figures.searches}"),
        ("users", "users", f"{figures.users}"),
        ("click_through_rate", "click-through rate", _percent(figures.click_through_rate)),
        ("abandonment", "abandonment", _percent(figures.abandonment)),
        ("mean_rating", "mean rating (0-1)", "–" if figures.mean_rating is None else f"{figures.mean_rating:.3f}"),
        ("p50_ms", "p50 latency", _ms(figures.p50_ms)),
        ("p99_ms", "p99 latency", _ms(figures.p99_ms)),
        ("no_results", "searches with no results", f"{figures.no_results}"),
        ("clicks", "clicks", f"{figures.clicks}"),
        ("ratings", "ratings", f"{figures.ratings}"),
    ]


def _query_rows(found: SearchAnalytics, rows) -> list[dict]:
    chosen = found.filter
    events = {"created_at__gte": chosen.since.date().isoformat(), "created_at__lt": chosen.until.date().isoformat()}
    events.update(SURFACE_LOOKUPS[chosen.surface])
    return [
        {
            "row": row,
            "search_url": f"{reverse('search')}?{urlencode({'q': row.query})}",
            "events_url": f"{reverse('admin:feedback_searchevent_changelist')}?"
            f"{urlencode({'normalised_query': row.query, **events})}",
        }
        for row in rows
    ]


def _share(part: int, whole: int) -> str:
    return _percent(part / whole if whole else None)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"
