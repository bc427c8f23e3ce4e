"""Markup hidden in image bytes (polyglot files): an image that is also a page or a script.

A browser, a misconfigured server or a CDN that sniffs such a file may run it. Four places are read:

- the raw bytes, for active content (``ACTIVE_CONTENT``), in ASCII/UTF-8 and in UTF-16 (either byte
  order), which browsers also decode;
- bytes after the image's end (JPEG's EOI, PNG's IEND, the RIFF size of WebP), which no decoder reads:
  any well-formed markup there is refused (a tag with an attribute, a closing tag, an HTML doctype);
- PNG text chunks, decompressed (zTXt, compressed iTXt): deflate hides a script from the raw scan.

A tag counts only with what must follow its name (space, '/' or '>'): short names alone turn up by chance
in compressed pixel data ("<Svg" did, in one COCO photo), and metadata carries other markup (XMP's
<x:xmpmeta, Photoshop's Apple plist <!DOCTYPE); the broader markup pattern is used only where no pixel
data or metadata lives. tests/integration/collection/test_datasets_not_polyglots.py checks every shared
dataset image passes.
"""

from __future__ import annotations

import re
import struct
import zlib

_TAGS = ("script", "html", "body", "iframe", "svg", "object", "embed")
_AFTER_TAG = " \t\r\n\f\v/>"
# Text chunks are decompressed up to this many bytes: a deflate bomb in a text chunk is not inflated.
MAX_TEXT_CHUNK = 1 << 20


def _active_content(encode) -> re.Pattern[bytes]:
    def lit(text: str) -> bytes:
        return re.escape(encode(text))

    tag = lit("<") + b"(?:" + b"|".join(lit(name) for name in _TAGS) + b")"
    after = b"(?:" + b"|".join(lit(c) for c in _AFTER_TAG) + b")"
    return re.compile(tag + after + b"|" + lit("<?php") + b"|" + lit("javascript:"), re.IGNORECASE)


ACTIVE_CONTENT = _active_content(str.encode)
ACTIVE_CONTENT_UTF16 = (
    _active_content(lambda text: text.encode("utf-16-le")),
    _active_content(lambda text: text.encode("utf-16-be")),
)
# Well-formed markup, which bytes no decoder reads have no reason to carry. Random bytes match it about
# once per 10^9 (a tag needs a name, white space, an attribute name and '=' in a row).
MARKUP = re.compile(
    rb"<!doctype\s+html|</[a-z][a-z0-9]*\s*>|<[a-z][a-z0-9]*\s+[a-z-]+\s*=|\bon[a-z]{3,20}\s*=\s*[\"']", re.IGNORECASE
)


def polyglot_reason(data: bytes, image_format: str) -> str | None:
    """Why the bytes count as a polyglot, or None."""
    if ACTIVE_CONTENT.search(data) or any(p.search(data) for p in ACTIVE_CONTENT_UTF16):
        return "The file carries markup or script besides the image (a polyglot file); refused."
    end = image_end(data, image_format)
    if end is not None and end < len(data):
        trailer = data[end:]
        if MARKUP.search(trailer) or any(p.search(trailer) for p in ACTIVE_CONTENT_UTF16):
            return "The file carries markup after the end of the image (a polyglot file); refused."
    if image_format == "PNG":
        for text in png_texts(data):
            if ACTIVE_CONTENT.search(text) or any(p.search(text) for p in ACTIVE_CONTENT_UTF16):
                return "The image's text chunks carry markup or script (a polyglot file); refused."
    return None


def image_end(data: bytes, image_format: str) -> int | None:
    """Where the image's own bytes end, for the formats whose end is marked; None when unknown."""
    if image_format == "JPEG":
        return _jpeg_end(data)
    if image_format == "PNG":
        return _png_end(data)
    if image_format == "WEBP" and len(data) >= 8:
        size = struct.unpack_from("<I", data, 4)[0]
        return 8 + size + (size & 1)
    return None


def _jpeg_end(data: bytes) -> int | None:
    """After the EOI marker: segments are skipped by their lengths, scans up to the next real marker."""
    at, n = 2, len(data)
    while at + 1 < n:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xD9:
            return at + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        if at + 4 > n:
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDA:  # entropy-coded data: FF00 is a stuffed byte, FFD0-D7 restart markers
            while True:
                at = data.find(b"\xff", at)
                if at < 0 or at + 1 >= n:
                    return None
                following = data[at + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    at += 1 if following == 0xFF else 2
                    continue
                break
    return None


def _png_chunks(data: bytes):
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        yield kind, at + 8, length
        at += 12 + length
        if kind == b"IEND":
            return


def _png_end(data: bytes) -> int | None:
    for kind, start, length in _png_chunks(data):
        if kind == b"IEND":
            return start + length + 4
    return None


def png_texts(data: bytes) -> list[bytes]:
    """The decompressed text of zTXt and compressed iTXt chunks (tEXt is plain: the raw scan reads it)."""
    texts = []
    for kind, start, length in _png_chunks(data):
        body = data[start : start + length]
        compressed = None
        if kind == b"zTXt":
            keyword_end = body.find(b"\0")
            compressed = body[keyword_end + 2 :] if keyword_end >= 0 else None
        elif kind == b"iTXt":
            keyword_end = body.find(b"\0")
            if keyword_end >= 0 and body[keyword_end + 1 : keyword_end + 2] == b"\1":
                rest = body[keyword_end + 3 :]
                language_end = rest.find(b"\0")
                translated_end = rest.find(b"\0", language_end + 1) if language_end >= 0 else -1
                compressed = rest[translated_end + 1 :] if translated_end >= 0 else None
        if compressed:
            try:
                texts.append(zlib.decompressobj().decompress(compressed, MAX_TEXT_CHUNK))
            except zlib.error:
                continue
    return texts
