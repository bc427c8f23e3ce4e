"""Issue 19, findings 1 and 10 through the real stack: stored links, the Content-Security-Policy every
page keeps to, the security headers, the probes' exposure and the API's model names.

The browser check (tests/browser/test_content_security_policy.py) loads the same pages in Chromium and
listens for violations; these tests read the HTML, so they run wherever the suite runs.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.template.loader import render_to_string
from django.test import Client
from rest_framework.test import APIClient

from collection.images import read_image
from collection.ingestion.service import add_image
from collection.models import Image
from core.security_headers import DEFAULT_POLICY
from tests.conftest import image_bytes, write_images
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db

ATTACK = " JaVa\nScRiPt:alert(document.domain)"


class InlineCode(HTMLParser):
    """Collects what a strict CSP blocks: inline scripts, <style>, style="" and on*="" attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script":
            data_block = names.get("type", "").endswith("json")
            self._in_script = "src" not in names and not data_block
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f'<{tag} {name}="{value}">')
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f'<{tag} {name}="{value}">')

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"<script>{data.strip()[:60]}")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


@pytest.fixture
def staff_client(db):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "a-long-test-password")
    client = Client()
    client.force_login(user)
    return client


# --- Finding 1: a stored javascript: link ---------------------------------------------------------


def test_the_ingest_api_refuses_a_javascript_attribution_with_a_clear_400(service):
    key = key_with("ingest")
    for attack in (ATTACK, "javascript:alert(1)", "data:text/html,<script>alert(1)</script>"):
        upload = SimpleUploadedFile("x.png", image_bytes(41), content_type="image/png")
        response = APIClient().post("/api/v1/images", {"image": upload, "attribution": attack}, **bearer(key))
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "invalid_link" and "http" in error["fields"]["attribution"]
    assert not Image.objects.exists()
    upload = SimpleUploadedFile("x.png", image_bytes(41), content_type="image/png")
    good = APIClient().post("/api/v1/images", {"image": upload, "attribution": "https://flickr.com/p/1"}, **bearer(key))
    assert good.status_code == 201 and good.json()["image"]["attribution"] == "https://flickr.com/p/1"


def test_csv_jsonl_and_coco_ingest_skip_a_javascript_attribution_and_say_why(tmp_path):
    write_images(tmp_path, [51, 52, 53, 54])
    (tmp_path / "t.csv").write_text(
        f'file,caption,attribution\nimg_51.png,bad,"{ATTACK}"\nimg_52.png,good,https://example.com/52\n'
    )
    (tmp_path / "t.jsonl").write_text(json.dumps({"file": "img_53.png", "attribution": "javascript:alert(1)"}) + "\n")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_x.json").write_text(
        json.dumps(
            {"images": [{"id": 1, "file_name": "img_54.png", "flickr_url": "JAVASCRIPT:alert(1)"}], "annotations": []}
        )
    )
    out, err = StringIO(), StringIO()
    call_command(
        "ingest",
        str(tmp_path / "t.csv"),
        str(tmp_path / "t.jsonl"),
        str(tmp_path / "annotations" / "captions_x.json"),
        "--images-dir",
        str(tmp_path),
        "--no-embed",
        stdout=out,
        stderr=err,
    )
    assert err.getvalue().count("attribution must be an absolute http:// or https:// URL") == 3, err.getvalue()
    assert "img_51.png" in err.getvalue() and "img_53.png" in err.getvalue() and "img_54.png" in err.getvalue()
    assert list(Image.objects.values_list("attribution", flat=True)) == ["https://example.com/52"]


def test_a_bad_link_stored_before_validation_is_shown_as_text_never_as_a_link(client, service):
    image, _ = add_image(read_image(image_bytes(61)), captions=["old row"])
    Image.objects.filter(pk=image.pk).update(attribution=ATTACK)  # as rows written before the fix
    response = client.get(f"/images/{image.pk}/")
    html = response.content.decode()
    assert response.status_code == 200 and "source:" in html
    assert inline_code(html) == []
    assert 'href=" JaVa' not in html and "<span> JaVa" in html
    api = APIClient().get(f"/api/v1/images/{image.pk}").json()
    assert api["attribution"] == ""


def test_an_http_attribution_is_a_link(client, service):
    image, _ = add_image(read_image(image_bytes(62)), attribution="https://flickr.com/photos/1")
    html = client.get(f"/images/{image.pk}/").content.decode()
    assert '<a href="https://flickr.com/photos/1" rel="nofollow noopener noreferrer">' in html


def test_the_admin_form_refuses_a_javascript_attribution(staff_client, service):
    image, _ = add_image(read_image(image_bytes(63)))
    url = f"/admin/searchapp/image/{image.pk}/change/"
    form = {
        "tags": "",
        "source": "",
        "licence": "",
        "attribution": "javascript:alert(1)",
        "captions-TOTAL_FORMS": "0",
        "captions-INITIAL_FORMS": "0",
    }
    response = staff_client.post(url, form)
    assert response.status_code == 200 and "must be an absolute http" in response.content.decode()
    assert Image.objects.get(pk=image.pk).attribution == ""


# --- The Content-Security-Policy on every page ---------------------------------------------------------


def _pages(collection) -> list[str]:
    image = collection[0].pk
    return [
        "/",
        "/?q=a+test+picture",
        f"/images/{image}/",
        "/no-such-page/",
        "/admin/",
        "/admin/searchapp/image/",
        f"/admin/searchapp/image/{image}/change/",
        "/admin/feedback/searchevent/",
        "/admin/searchapp/encoderversion/",
        "/api/v1/docs",
        "/api/v1/redoc",
    ]


def test_every_page_sends_the_policy_and_has_no_inline_script_or_style(staff_client, collection):
    client = APIClient()
    client.force_login(get_user_model().objects.get(username="boss"))
    staff_client.get("/", {"q": "a test picture"})  # a search event for the admin's lists
    for url in _pages(collection):
        response = staff_client.get(url)
        assert response.status_code in (200, 404), url
        policy = re.sub(r" 'nonce-[^']+'", "", response["Content-Security-Policy"])  # Redoc's (tested below)
        assert policy == DEFAULT_POLICY, url
        assert inline_code(response.content.decode()) == [], url


def test_the_policy_allows_no_inline_code():
    directives = dict(d.split(" ", 1) for d in DEFAULT_POLICY.split("; "))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "unsafe" not in DEFAULT_POLICY and directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"


def test_swagger_loads_its_start_script_from_a_url(client):
    html = client.get("/api/v1/docs").content.decode()
    assert '<script src="/api/v1/docs?script="></script>' in html
    script = client.get("/api/v1/docs?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()
    assert "validatorUrl" in script.content.decode()


def test_the_error_page_has_no_inline_style():
    html = render_to_string("error.html", {"status": 503, "message": "Back soon."})
    assert inline_code(html) == [] and "loupe/error.css" in html


def test_pages_send_the_security_headers(client):
    response = client.get("/")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


# --- Finding 10: the probes and the API's model names ------------------------------------------------


def test_probes_refuse_a_strangers_host(client, collection):
    for probe in ("/readyz", "/metrics", "/healthz"):
        response = client.get(probe, HTTP_HOST="evil.example")
        assert response.status_code == 400 and response.json()["error"]["code"] == "disallowed_host", probe
    assert client.get("/healthz", HTTP_HOST="web:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="127.0.0.1:8000").status_code == 200


def test_readyz_details_only_for_the_machine_itself_and_staff(collection, settings):
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    body = Client().get("/readyz", **remote).json()
    assert body["status"] in ("ready", "degraded")
    assert all(set(check) == {"ok", "required"} for check in body["checks"].values()), body
    local = Client().get("/readyz", REMOTE_ADDR="127.0.0.1").json()
    assert "pgvector" in local["checks"]["database"]["detail"]
    staff = get_user_model().objects.create_user("ops", password="a-long-test-password", is_staff=True)
    plain = get_user_model().objects.create_user("someone", password="a-long-test-password")
    browser = Client()
    browser.force_login(plain)
    assert "detail" not in browser.get("/readyz", **remote).json()["checks"]["database"]
    browser.force_login(staff)
    assert "pgvector" in browser.get("/readyz", **remote).json()["checks"]["database"]["detail"]


def test_the_api_names_the_model_without_its_path(collection, settings):
    body = APIClient().get("/api/v1/search", {"q": "a test picture"}).json()
    encoder = body["meta"]["encoder"]
    assert settings.LOUPE_CLIP_MODEL.startswith("/")  # the tests serve a model from a local folder
    assert encoder["model"] == "tiny-clip" and "/" not in encoder["model"]
    assert "/" not in encoder["name"] and "/" not in encoder["requested_model"]


def test_redoc_alone_gets_a_fresh_style_nonce_and_scripts_stay_self(client):
    seen = set()
    for _ in range(2):
        response = client.get("/api/v1/redoc")
        nonce = re.search(r'data-style-nonce="([^"]+)"', response.content.decode()).group(1)
        directives = dict(d.split(" ", 1) for d in response["Content-Security-Policy"].split("; "))
        assert directives["style-src"] == f"'self' 'nonce-{nonce}'" and directives["script-src"] == "'self'"
        seen.add(nonce)
    assert len(seen) == 2
    assert "nonce" not in client.get("/api/v1/docs")["Content-Security-Policy"]
