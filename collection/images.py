"""Reading untrusted image bytes safely, and storing images by content.

Every image that enters Loupe (ingestion, API upload, search by example) passes through
:func:`read_image`, which refuses what is not a complete raster image of a sane size.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from collection.polyglots import polyglot_reason
from core.errors import Refused

ALLOWED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


class InvalidImage(Refused):
    """The bytes are not an image Loupe accepts; the message says why, for the user."""

    code = "invalid_image"

    def __init__(self, message: str, *, field: str | None = "image") -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True)
class CheckedImage:
    """Bytes that decoded completely as an allowed raster format."""

    data: bytes
    sha256: str
    format: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return ALLOWED_FORMATS[self.format]

    def file_fields(self, file_name: str, thumbnail_name: str, source: str) -> dict:
        """The Image row's fields that come from these bytes and where they were stored (new row or new file)."""
        return {
            "sha256": self.sha256,
            "file": file_name,
            "thumbnail": thumbnail_name,
            "width": self.width,
            "height": self.height,
            "format": self.format.lower(),
            "byte_size": len(self.data),
            "source": source[:2000],
        }

    def open(self) -> PILImage.Image:
        """The decoded image, upright (EXIF orientation applied) and in RGB."""
        return upright(PILImage.open(io.BytesIO(self.data)))


def upright(image: PILImage.Image) -> PILImage.Image:
    """``image`` with its EXIF orientation applied, in RGB: what thumbnails and pages show."""
    return ImageOps.exif_transpose(image).convert("RGB")


def check_dimensions(width: int, height: int, max_pixels: int) -> None:
    """Refuse sizes whose decode or model input would be huge: pixel count, each side, aspect ratio."""
    if width < 1 or height < 1:
        raise InvalidImage(f"The image is {width}x{height} pixels; it has no pixels.")
    if width * height > max_pixels:
        raise InvalidImage(f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.")
    max_side = settings.LOUPE_MAX_IMAGE_SIDE
    if max(width, height) > max_side:
        raise InvalidImage(f"The image is {width}x{height} pixels; each side may be at most {max_side:,} pixels.")
    max_ratio = settings.LOUPE_MAX_ASPECT_RATIO
    if max(width, height) / min(width, height) > max_ratio:
        raise InvalidImage(
            f"The image is {width}x{height} pixels; its long side may be at most {max_ratio:g} times its short side."
        )


def read_image(data: bytes, *, max_bytes: int | None = None, max_pixels: int | None = None) -> CheckedImage:
    """Validate image bytes: size, format, dimensions (decompression bombs, thin strips) and a full decode."""
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)[0]


def decode_image(
    data: bytes, *, max_bytes: int | None = None, max_pixels: int | None = None
) -> tuple[CheckedImage, PILImage.Image]:
    """:func:`read_image`, and the image its full decode made (as stored: no EXIF transpose, native mode).

    Ingestion makes the thumbnail and the tower's input from that image instead of decoding the bytes
    twice more (bench/ingest_speed.py).
    """
    max_bytes = max_bytes or settings.LOUPE_MAX_UPLOAD_BYTES
    max_pixels = max_pixels or settings.LOUPE_MAX_IMAGE_PIXELS
    if not data:
        raise InvalidImage("The file is empty.")
    if len(data) > max_bytes:
        raise InvalidImage(f"The file is {len(data):,} bytes; the limit is {max_bytes:,}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as probe:
                image_format = probe.format or ""
                width, height = probe.size
                if image_format not in ALLOWED_FORMATS:
                    raise InvalidImage(
                        f"Unsupported image format {image_format or 'unknown'!r}; "
                        f"accepted: {', '.join(sorted(ALLOWED_FORMATS))}."
                    )
                check_dimensions(width, height, max_pixels)  # from the header, before any decode
                probe.load()  # a full decode: truncated or corrupt data fails here
                decoded = probe
    except InvalidImage:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise InvalidImage("The image declares too many pixels (decompression bomb).") from None
    except UnidentifiedImageError:
        raise InvalidImage("The file is not an image Loupe can read.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"The image is damaged or truncated: {exc}.") from None
    if reason := polyglot_reason(data, image_format):
        raise InvalidImage(reason)
    return CheckedImage(data, hashlib.sha256(data).hexdigest(), image_format, width, height), decoded


def storage_name(sha256: str, extension: str, kind: str = "images") -> str:
    """Content-addressed path under MEDIA_ROOT: ``images/ab/cd/abcd….jpg``."""
    return f"{kind}/{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` so that no reader ever sees part of it, whoever else writes it meanwhile.

    Two requests carrying the same image write the same name at once; each writes its own temporary file
    (``mkstemp`` in the same folder, so ``os.replace`` stays on one file system and is atomic) and the
    last rename wins with the same bytes. A fixed temporary name let one writer rename the other's file
    while it was still being written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # content-addressed: already there is already right
        return
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def store_original(image: CheckedImage) -> str:
    """Write the bytes under MEDIA_ROOT (once per content) and return the storage name."""
    name = storage_name(image.sha256, image.extension)
    path = Path(settings.MEDIA_ROOT) / name
    if not path.exists():
        _write_atomically(path, image.data)
    return name


def thumbnail_jpeg(decoded: PILImage.Image) -> bytes:
    """The thumbnail's bytes: a JPEG no larger than LOUPE_THUMBNAIL_SIZE on its long side."""
    thumb = decoded.copy()
    thumb.thumbnail((settings.LOUPE_THUMBNAIL_SIZE, settings.LOUPE_THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def store_thumbnail(image: CheckedImage, decoded: PILImage.Image | None = None, *, jpeg: bytes | None = None) -> str:
    """Write the thumbnail (made from ``decoded``, or ``jpeg`` made ahead by a decode pool); returns its name."""
    name = storage_name(image.sha256, "jpg", kind="thumbs")
    path = Path(settings.MEDIA_ROOT) / name
    if not path.exists():
        if jpeg is None:
            jpeg = thumbnail_jpeg(decoded if decoded is not None else image.open())
        _write_atomically(path, jpeg)
    return name


def read_upload(upload) -> CheckedImage:
    """An uploaded file (Django's UploadedFile) checked as an image, size first so nothing big is read."""
    if upload.size > settings.LOUPE_MAX_UPLOAD_BYTES:
        raise InvalidImage(f"The file is {upload.size:,} bytes; the limit is {settings.LOUPE_MAX_UPLOAD_BYTES:,}.")
    return read_image(upload.read())
