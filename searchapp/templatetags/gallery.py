"""The search page's results: inline SVG icons and the justified layout's aspect-ratio classes.

Icons are inline SVG, not emoji: a machine without an emoji font drew the thumbs as empty boxes
(issue 24). They are drawn here, on a 24-unit grid in ``currentColor``, so they follow the text's
colour in light and dark mode and need no extra request.
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

ICONS = {
    "thumb-up": '<path d="M7 11v9H4v-9zM7 11l4-7c1.4 0 2.5 1.2 2.2 2.6L12.6 10H18a2 2 0 0 1 2 2.4l-1.3 6A2 2 0 0 1 '
    '16.7 20H7"/>',
    "thumb-down": '<path d="M17 13V4h3v9zM17 13l-4 7c-1.4 0-2.5-1.2-2.2-2.6l.6-3.4H6a2 2 0 0 1-2-2.4l1.3-6A2 2 0 0 1 '
    '7.3 4H17"/>',
    "star": '<path class="fill" d="M12 3l2.7 5.6 6.1.9-4.4 4.3 1 6.1L12 17l-5.4 2.9 1-6.1-4.4-4.3 6.1-.9z"/>',
    "enlarge": '<path d="M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5"/>',
    "close": '<path d="M6 6l12 12M18 6L6 18"/>',
    "previous": '<path d="M15 18l-6-6 6-6"/>',
    "next": '<path d="M9 18l6-6-6-6"/>',
    "similar": '<path d="M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z"/>',
    "open": '<path d="M14 4h6v6M20 4l-9 9M18 14v6H4V6h6"/>',
    "image": '<path d="M4 4h16v16H4zM4 16l5-5 4 4 2-2 5 5"/><circle cx="15.5" cy="8.5" r="1.5"/>',
}

# Aspect ratios (width / height) in tenths, clamped: each result's card is one CSS class
# ``ar-N`` (static/loupe/loupe.css) whose flex-grow and flex-basis are N, so every row of the
# justified layout fills the width while each image keeps its shape. The CSP forbids inline styles,
# and classes need no JavaScript. A tenth is at most a 5% crop (object-fit: cover) at ratio 1.
MIN_ASPECT_TENTHS = 4  # 2:5 portraits and narrower are cropped to this
MAX_ASPECT_TENTHS = 30  # 3:1 panoramas and wider are cropped to this


@register.simple_tag
def icon(name: str) -> SafeString:
    """An inline SVG icon, hidden from assistive technology: the button around it carries the label."""
    return format_html(
        '<svg class="icon icon-{}" viewBox="0 0 24 24" aria-hidden="true" focusable="false">{}</svg>',
        name,
        mark_safe(ICONS[name]),  # noqa: S308 -- constant markup defined above
    )


def aspect_tenths(width: int, height: int) -> int:
    """An image's width/height in tenths, within the range the layout has classes for."""
    if width <= 0 or height <= 0:
        return 10
    return max(MIN_ASPECT_TENTHS, min(MAX_ASPECT_TENTHS, round(10 * width / height)))


@register.filter
def aspect_class(image) -> str:
    """The card class that gives ``image`` its share of a row: ``ar-13`` for a 4:3 image."""
    return f"ar-{aspect_tenths(image.width, image.height)}"
