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


class ImageSearchForm(forms.Form):
    image = forms.FileField()
