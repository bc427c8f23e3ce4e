"""Forms of the search page."""

from __future__ import annotations

from django import forms
from django.conf import settings


class SearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=settings.LOUPE_MAX_QUERY_CHARS, strip=True)
    page = forms.IntegerField(required=False, min_value=1)
    sort = forms.ChoiceField(
        required=False, choices=[("relevance", "most relevant"), ("date", "newest first")], initial="relevance"
    )
    like = forms.IntegerField(required=False, min_value=1)  # "more like this" image of the collection
    # Where the first page's exploration moved a candidate up, "from-slot" (searchapp.pipeline.page.continue_first_page)
    explored = forms.RegexField(r"^[0-9]{1,4}-[0-9]{1,3}$", required=False, max_length=8)

    def clean_explored(self) -> tuple[int, int] | None:
        value = self.cleaned_data.get("explored")
        return tuple(int(n) for n in value.split("-")) if value else None


class ImageSearchForm(forms.Form):
    image = forms.FileField()
