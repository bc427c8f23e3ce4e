"""``{% external_link url %}``: the one place a stored URL becomes an ``href``.

Only http(s) URLs (``core.links.http_url``) are linked; anything else, such as a row stored before
write-time validation, is shown as plain, escaped text, never as a link.
"""

from __future__ import annotations

from django import template
from django.template.defaultfilters import truncatechars
from django.utils.html import format_html

from core.links import http_url

register = template.Library()


@register.simple_tag
def external_link(url: str, limit: int = 60) -> str:
    text = truncatechars(url, limit)
    href = http_url(url)
    if not href:
        return format_html("<span>{}</span>", text)
    return format_html('<a href="{}" rel="nofollow noopener noreferrer">{}</a>', href, text)
