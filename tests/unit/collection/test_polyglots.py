"""Finding 9 of issue 19 (polyglots): markup after the image's end, in UTF-16, in compressed PNG text."""

import io

import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from collection.images import InvalidImage, read_image
from collection.polyglots import ACTIVE_CONTENT, image_end
from tests.conftest import image_bytes

SCRIPT = "<script>fetch('/admin/')</script>"


def png_with_text(text: str, *, compressed: str) -> bytes:
    info = PngInfo()
    if compressed == "zTXt":
        info.add_text("Comment", text, zip=True)
    else:
        info.add_itxt("Comment", text, zip=True)
    buffer = io.BytesIO()
    PILImage.open(io.BytesIO(image_bytes(3))).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "appended",
    [
        b'<img src=x onerror="alert(1)">',
        b'<meta http-equiv="refresh" content="0;url=https://evil.example/">',
        b"<!DOCTYPE html><title>x</title><p>hello</p>",
        b"<form action=https://evil.example/><input name=p></form>",
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_html_appended_after_the_image_is_refused(appended, fmt):
    data = image_bytes(1, fmt=fmt) + appended
    assert not ACTIVE_CONTENT.search(data)  # what the old check missed
    with pytest.raises(InvalidImage, match="after the end of the image"):
        read_image(data)


def test_utf16_markup_is_refused():
    for encoding in ("utf-16-le", "utf-16-be"):
        data = image_bytes(2, fmt="JPEG") + SCRIPT.encode(encoding)
        assert not ACTIVE_CONTENT.search(data)
        with pytest.raises(InvalidImage, match="polyglot"):
            read_image(data)


@pytest.mark.parametrize("compressed", ["zTXt", "iTXt"])
def test_script_in_a_compressed_png_text_chunk_is_refused(compressed):
    data = png_with_text(SCRIPT * 20, compressed=compressed)
    assert not ACTIVE_CONTENT.search(data)
    with pytest.raises(InvalidImage, match="text chunks"):
        read_image(data)


def test_plain_text_chunks_trailing_padding_and_metadata_still_pass():
    read_image(png_with_text("A photo of a beach, 2024 <x:xmpmeta> a < b > c", compressed="zTXt"))
    jpeg = image_bytes(4, size=(120, 90), fmt="JPEG")
    assert image_end(jpeg, "JPEG") == len(jpeg)
    read_image(jpeg + b"\0" * 64)  # padding after EOI, as some cameras write
    png = image_bytes(5)
    assert image_end(png, "PNG") == len(png)
    progressive = io.BytesIO()
    PILImage.open(io.BytesIO(jpeg)).save(progressive, format="JPEG", progressive=True, exif=b"Exif\0\0" + b"\0" * 20)
    assert image_end(progressive.getvalue(), "JPEG") == len(progressive.getvalue())
