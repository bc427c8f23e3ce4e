"""The search page's layout classes and icons (searchapp.templatetags.gallery)."""

from searchapp.templatetags.gallery import ICONS, aspect_tenths, icon


def test_aspect_ratio_in_tenths_within_the_layouts_classes():
    assert aspect_tenths(96, 72) == 13  # 4:3
    assert aspect_tenths(1920, 1080) == 18  # 16:9
    assert aspect_tenths(60, 96) == 6  # portrait
    assert aspect_tenths(4000, 100) == 30 and aspect_tenths(100, 4000) == 4  # clamped
    assert aspect_tenths(0, 0) == 10  # a row without its size stored is drawn square


def test_icons_are_hidden_svg_in_the_text_colour():
    for name in ICONS:
        markup = str(icon(name))
        assert markup.startswith(f'<svg class="icon icon-{name}" viewBox="0 0 24 24" aria-hidden="true"')
        assert "<path" in markup or "<circle" in markup


def test_the_stylesheet_has_a_class_for_every_aspect_ratio():
    from pathlib import Path

    from django.conf import settings

    from searchapp.templatetags.gallery import MAX_ASPECT_TENTHS, MIN_ASPECT_TENTHS

    css = (Path(settings.BASE_DIR) / "static" / "loupe" / "loupe.css").read_text()
    for tenths in range(MIN_ASPECT_TENTHS, MAX_ASPECT_TENTHS + 1):
        assert f".ar-{tenths} {{ flex-grow: {tenths}; flex-basis: calc(var(--row) * {tenths / 10:g}); }}" in css
        assert f".ar-{tenths} img {{ aspect-ratio: {tenths} / 10; }}" in css
