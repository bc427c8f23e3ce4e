"""Untrusted bytes: what read_image accepts and refuses."""

import io
import struct
import zlib

import pytest
from PIL import Image as PILImage

from collection.images import InvalidImage, read_image, storage_name
from tests.conftest import image_bytes


def test_a_real_png_is_accepted_with_its_facts():
    checked = read_image(image_bytes(1, size=(40, 30)))
    assert (checked.format, checked.width, checked.height) == ("PNG", 40, 30)
    assert len(checked.sha256) == 64
    assert checked.open().size == (40, 30)


def test_jpeg_is_accepted():
    assert read_image(image_bytes(2, fmt="JPEG")).extension == "jpg"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not an image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image"),
    ],
)
def test_non_images_are_refused(data, reason):
    with pytest.raises(InvalidImage, match=reason):
        read_image(data)


def test_truncated_images_are_refused():
    data = image_bytes(3, size=(200, 200), fmt="JPEG")
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        read_image(data[: len(data) // 2])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge canvas in a few bytes (a decompression bomb's shape)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_decompression_bombs_are_refused_before_decoding():
    with pytest.raises(InvalidImage, match="pixels"):
        read_image(_png_header_only(50_000, 50_000))


def test_oversized_files_are_refused():
    with pytest.raises(InvalidImage, match="limit"):
        read_image(image_bytes(4), max_bytes=100)


def test_unsupported_formats_are_refused():
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(buffer, format="ICO")
    with pytest.raises(InvalidImage, match="Unsupported image format"):
        read_image(buffer.getvalue())


@pytest.mark.parametrize(
    "payload",
    [
        b"<script>alert(1)</script>",
        b"<HTML><body onload=x()>",
        b"<?php system($_GET['c']); ?>",
        b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
        b"<a href='JavaScript:alert(1)'>",
    ],
)
def test_polyglots_with_markup_after_or_inside_the_image_are_refused(payload):
    # A valid PNG that is also a page or a script: refused whatever the serving headers would do.
    with pytest.raises(InvalidImage, match="polyglot"):
        read_image(image_bytes(5) + payload)
    png = image_bytes(6)
    chunk = b"tEXt" + b"Comment\0" + payload  # a well-formed text chunk right after the header
    inside = png[:33] + (len(chunk) - 4).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big") + png[33:]
    assert PILImage.open(io.BytesIO(inside)).text["Comment"]  # it really is a valid PNG carrying the payload
    with pytest.raises(InvalidImage, match="polyglot"):
        read_image(inside)


@pytest.mark.parametrize(
    "metadata",
    [
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>',
        b'<?xml version="1.0"?><!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN">',  # Photoshop's print info
        b"\x9d<Svg\xba,\xc0<BODYx",
    ],  # tag-like bytes without what follows a tag name: chance, not markup
)
def test_metadata_and_chance_bytes_are_not_mistaken_for_markup(metadata):
    checked = read_image(image_bytes(7) + metadata)
    assert checked.format == "PNG"


def test_storage_names_are_content_addressed():
    assert storage_name("abcdef" + "0" * 58, "jpg") == "images/ab/cd/abcdef" + "0" * 58 + ".jpg"
