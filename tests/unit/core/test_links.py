"""core.links: what may become an href (issue 19, finding 1)."""

import pytest
from django.template import Context, Template

from core.links import InvalidLink, checked_http_url, http_url

ATTACKS = [
    "javascript:alert(document.domain)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "\tjavascript:alert(1)",
    "java\nscript:alert(1)",
    "java\tscript:alert(1)",
    "\x01javascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    "/images/1/",
    "https://",
    "http://exa mple.com/",
    "https://example.com/\u2028x",
    "http://[::1",
    "https://example.com/" + "a" * 2000,
]


@pytest.mark.parametrize("value", ATTACKS)
def test_anything_but_an_absolute_http_url_is_refused(value):
    assert http_url(value) == ""
    with pytest.raises(InvalidLink) as refused:
        checked_http_url(value, field="attribution")
    assert refused.value.field == "attribution" and refused.value.status == 400


@pytest.mark.parametrize(
    "value", ["http://farm5.staticflickr.com/4031/4430589002_88e591d3e9_z.jpg", "HTTPS://Example.com/a?b=c#d"]
)
def test_http_and_https_urls_pass_unchanged(value):
    assert http_url(value) == value == checked_http_url(value, field="attribution")


def test_empty_stays_empty():
    assert checked_http_url("", field="attribution") == "" and http_url(None) == ""


def _render(url: str) -> str:
    return Template("{% load safe_links %}{% external_link url %}").render(Context({"url": url}))


@pytest.mark.parametrize("value", ATTACKS[:6])
def test_the_template_tag_never_links_anything_else(value):
    html = _render(value)
    assert "href" not in html and html.startswith("<span>")


def test_the_template_tag_links_http_urls_escaped():
    html = _render('https://example.com/?q="><b>')
    assert html == (
        '<a href="https://example.com/?q=&quot;&gt;&lt;b&gt;" rel="nofollow noopener noreferrer">'
        "https://example.com/?q=&quot;&gt;&lt;b&gt;</a>"
    )
