"""The HTML pages through Django's test client (the browser tests drive the same pages in Chromium)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db


def test_empty_search_page_has_the_form_and_the_demo_banner(client):
    html = client.get("/").content.decode()
    assert 'role="search"' in html and 'name="q"' in html
    assert 'data-testid="demo-banner"' in html and "no semantic quality" in html


def test_search_page_shows_a_grid_of_results(client, collection):
    html = client.get("/", {"q": "a photo"}).content.decode()
    assert html.count('<li class="card ') == 12
    assert "/media/thumbs/" in html and "caption 0 of a test picture" in html
    assert f'href="/images/{collection[0].pk}/"' in html


def test_paging_links(client, collection, settings):
    settings.LOUPE_PAGE_SIZE = 5
    html = client.get("/", {"q": "photo"}).content.decode()
    assert html.count('<li class="card ') == 5 and 'rel="next"' in html and 'rel="prev"' not in html
    html = client.get("/", {"q": "photo", "page": 3}).content.decode()
    assert html.count('<li class="card ') == 2 and 'rel="prev"' in html and 'rel="next"' not in html


def test_bad_queries_get_a_400_page_with_the_reason(client, collection):
    response = client.get("/", {"q": "tag:"})
    assert response.status_code == 400 and "empty tag" in response.content.decode()
    response = client.get("/", {"q": "x" * 700})
    assert response.status_code == 400


def test_search_by_uploaded_image(client, collection):
    upload = SimpleUploadedFile("mine.png", image_bytes(9), content_type="image/png")
    html = client.post("/", {"image": upload}).content.decode()
    assert f'href="/images/{collection[9].pk}/"' in html and "for your image" in html


def test_a_bad_upload_is_a_400_with_the_reason(client, collection):
    response = client.post("/", {"image": SimpleUploadedFile("x.png", b"nope")})
    assert response.status_code == 400 and "not an image" in response.content.decode()


def test_image_page_with_more_like_this_and_describing_captions(client, collection):
    image = collection[2]
    html = client.get(f"/images/{image.pk}/").content.decode()
    assert "More like this" in html and "Captions that describe it" in html
    assert html.count('<li class="card ') == 11  # every other image, never itself
    assert f'href="/images/{image.pk}/" class="result-link"' not in html
    assert client.get("/images/999999/").status_code == 404


def test_user_text_is_escaped(client, collection):
    html = client.get("/", {"q": "<script>alert(1)</script>"}).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_admin_lists_images_and_encoder_versions(admin_client, collection):
    html = admin_client.get("/admin/searchapp/image/").content.decode()
    assert "caption 0 of a test picture" in html and "/media/thumbs/" in html
    html = admin_client.get("/admin/searchapp/encoderversion/").content.decode()
    assert "loupe-demo-tiny-clip" in html and ">12<" in html
    assert admin_client.get(f"/admin/searchapp/image/{collection[0].pk}/change/").status_code == 200


def test_admin_requires_staff(client):
    response = client.get("/admin/searchapp/image/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_tag_facet_and_text_match_hint(client, collection):
    html = client.get("/", {"q": "another view number 3"}).content.decode()
    assert 'aria-label="Popular tags"' in html and "tag:even" in html
    assert "matched caption/tag" in html


def test_more_like_an_image_of_the_collection(client, collection):
    image = collection[3]
    html = client.get("/", {"like": image.pk}).content.decode()
    assert f'like <a href="/images/{image.pk}/">image {image.pk}</a>' in html
    assert html.count('<li class="card ') == 11 and f'data-image-id="{image.pk}"' not in html
    assert client.get("/", {"like": "x"}).status_code == 400
    response = client.get("/", {"like": 999999})
    assert response.status_code == 404 and "There is no image 999999." in response.content.decode()


def test_paging_links_keep_the_search(client, collection, settings):
    settings.LOUPE_PAGE_SIZE = 5
    html = client.get("/", {"like": collection[0].pk}).content.decode()
    assert f'rel="next" href="?like={collection[0].pk}&amp;page=2"' in html
    upload = SimpleUploadedFile("mine.png", image_bytes(9), content_type="image/png")
    html = client.post("/", {"image": upload}).content.decode()
    assert 'rel="next"' not in html  # an upload is not kept, so there is no page 2 to link to


def test_results_have_svg_icons_and_aspect_classes(client, collection):
    html = client.get("/", {"q": "photo"}).content.decode()
    assert html.count('<svg class="icon icon-thumb-up"') == 12 and "👍" not in html
    assert html.count('<li class="card ar-13"') == 12  # 96×72 images: 4:3 is 1.3 to the tenth


def test_scores_are_shown_only_to_staff_who_ask(client, admin_client, collection):
    assert 'data-testid="score"' not in client.get("/", {"q": "photo", "debug": "1"}).content.decode()
    assert 'data-testid="score"' not in admin_client.get("/", {"q": "photo"}).content.decode()
    html = admin_client.get("/", {"q": "photo", "debug": "1"}).content.decode()
    assert html.count('data-testid="score"') == 12
    assert 'href="?q=photo&amp;debug=1&amp;page=' not in html  # one page only: no pager links
    image = admin_client.get(f"/images/{collection[0].pk}/", {"debug": "1"}).content.decode()
    assert 'data-testid="score"' in image
