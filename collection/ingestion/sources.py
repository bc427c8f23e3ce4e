"""Readers that turn the formats Loupe ingests into :class:`IngestItem` values.

- a folder of images: sub-folder names become tags (``caltech101/101_ObjectCategories/dog/x.jpg``);
- COCO caption JSON (``captions_*.json``), with optional ``instances_*.json`` categories as tags;
- caption tables as the public sets ship them, one row per image or per caption (rows naming one image
  are merged): CSV ``image,caption`` (Flickr8k/Flickr30k Kaggle), Flickr30k's pipe-separated
  ``image_name| comment_number| comment``, JSONL ``url``/``caption`` (img2dataset, local or ``file://``) or
  ``file``/``text``; column aliases in ``FILE_COLUMNS`` and ``CAPTION_COLUMNS``, plus ``tags``, ``licence``;
- a labels JSON mapping a file name to a comma-separated label list.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from collection.models import EXTERNAL_ID_PATTERN
from collection.tags import clean_tags, split_tag_list

EXTERNAL_ID = re.compile(EXTERNAL_ID_PATTERN)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class SourceError(ValueError):
    """The source itself cannot be read (missing file, wrong format); nothing was ingested from it."""


@dataclass
class IngestItem:
    path: Path | None = None  # the file; None for an ingest job's line, whose row says where its bytes are
    captions: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    licence: str = ""
    attribution: str = ""
    problem: str = ""  # why the source refused this image (a bad row of a caption table): reported, not read
    metadata: dict | str = field(default_factory=dict)  # checked by add_image against the declared fields
    external_id: str = ""  # the catalogue's own id (an ``external_id`` column): a known one updates that image


def folder_items(root: Path, *, folder_tags: bool = True) -> Iterator[IngestItem]:
    """Every image file below ``root`` (sorted, so a resumed run sees the same order)."""
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder.")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        tags = clean_tags(path.relative_to(root).parts[:-1]) if folder_tags else []
        yield IngestItem(path=path, tags=tags)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"Cannot read {path} as JSON: {exc}") from None


def coco_items(captions_json: Path, images_dir: Path | None = None) -> Iterator[IngestItem]:
    """Images of a COCO captions file with all their captions, licence and Flickr attribution.

    Images are looked for in ``images_dir``, else in the folder named like the annotation's split
    (``captions_val2017.json`` -> ``../val2017``). Categories from the sibling ``instances_*.json``
    become tags when that file exists.
    """
    data = _load_json(captions_json)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise SourceError(f"{captions_json} is not a COCO captions file (no 'images' and 'annotations').")
    split = captions_json.stem.split("_", 1)[-1]
    images_dir = images_dir or captions_json.parent.parent / split
    licences = {lic["id"]: lic for lic in data.get("licenses", [])}
    captions: dict[int, list[str]] = defaultdict(list)
    for ann in data["annotations"]:
        captions[ann["image_id"]].append(" ".join(str(ann["caption"]).split()))
    categories = _coco_categories(captions_json.parent / f"instances_{split}.json")
    for info in sorted(data["images"], key=lambda i: i["id"]):
        lic = licences.get(info.get("license"), {})
        yield IngestItem(
            path=inside(images_dir, str(info["file_name"]), str(captions_json)),
            captions=captions.get(info["id"], []),
            tags=clean_tags(categories.get(info["id"], [])),
            licence=f"{lic.get('name', '')} ({lic.get('url', '')})" if lic else "",
            attribution=info.get("flickr_url") or info.get("coco_url", ""),
        )


def _coco_categories(instances_json: Path) -> dict[int, list[str]]:
    if not instances_json.is_file():
        return {}
    data = _load_json(instances_json)
    names = {cat["id"]: cat["name"] for cat in data.get("categories", [])}
    per_image: dict[int, list[str]] = defaultdict(list)
    for ann in data.get("annotations", []):
        per_image[ann["image_id"]].append(names.get(ann["category_id"], ""))
    return per_image


def inside(base: Path, file_name: str, where: str) -> Path:
    """``base / file_name``, refused unless it resolves (symlinks followed) inside ``base``.

    A table or an annotation file names images beside it; "../../etc/..." or an absolute path would read
    any file the process may read into the collection (issue 19, finding 9).
    """
    path = (base / file_name).resolve()
    if not path.is_relative_to(base.resolve()):
        raise SourceError(f"{where}: {file_name!r} is outside the folder {base}; refused.")
    return path


# Column names as the public caption sets ship them: Flickr8k/Flickr30k Kaggle CSVs say ``image,caption``,
# Flickr30k's results.csv ``image_name| comment_number| comment``, img2dataset ``url``/``caption``,
# others ``filename``/``sentence`` or ``file``/``text``. The first alias present in a row wins.
FILE_COLUMNS = ("file", "image", "image_name", "filename", "path", "url")
CAPTION_COLUMNS = ("caption", "text", "comment", "sentence")
TABLE_FORMATS = ("csv", "flickr30k", "jsonl")
MAX_REPORTED_ROWS = 10


@dataclass(frozen=True)
class CaptionRow:
    """One row of a caption table: the image it names, where it was, and what it adds to that image."""

    file_name: str
    where: str
    captions: tuple[str, ...]
    tags: tuple[str, ...]
    licence: str
    attribution: str
    metadata: dict
    external_id: str = ""


def _first(row: dict, names: tuple[str, ...]):
    for name in names:
        value = row.get(name)
        if value is not None and str(value).strip():
            return value
    return None


class BadRow(SourceError):
    """One row of a caption table cannot be used; ``file_name`` is the image it names, when that is known."""

    def __init__(self, message: str, file_name: str | None = None):
        super().__init__(message)
        self.file_name = file_name


def _local_name(value: str, where: str) -> str:
    """A file name or a ``file://`` URL as a path; remote URLs are refused (the CLI reads local files only)."""
    if value.startswith("file://"):
        return unquote(urlsplit(value).path)
    if "://" in value:
        raise BadRow(
            f"{where}: {value[:80]!r} is a remote URL; the CLI ingests local files only "
            "(download them first, e.g. with img2dataset, and give file:// URLs or paths).",
            value,
        )
    return value


def _caption_row(row: object, where: str) -> CaptionRow:
    if not isinstance(row, dict):
        raise BadRow(f"{where}: expected an object, got {type(row).__name__}.")
    file_value = _first(row, FILE_COLUMNS)
    if file_value is None:
        raise BadRow(f"{where}: no image named (give one of {', '.join(FILE_COLUMNS)}).")
    file_name = _local_name(str(file_value).strip(), where)
    captions = row.get("captions")
    if isinstance(captions, str):
        captions = captions.split("|")
    if not captions:
        caption = _first(row, CAPTION_COLUMNS)
        captions = [caption] if caption is not None else []
    if not isinstance(captions, list):
        raise BadRow(f"{where}: 'captions' must be a list or a '|'-separated string.", file_name)
    tags = row.get("tags") or []
    if not isinstance(tags, (str, list)):
        raise BadRow(f"{where}: 'tags' must be a list or a comma-separated string.", file_name)
    tags = split_tag_list(tags) if isinstance(tags, str) else clean_tags(str(t) for t in tags)
    return CaptionRow(
        file_name=file_name,
        where=where,
        captions=tuple(" ".join(str(c).split()) for c in captions if c is not None and str(c).strip()),
        tags=tuple(tags),
        licence=str(row.get("licence") or row.get("license") or ""),
        attribution=str(row.get("attribution") or ""),
        metadata=_row_metadata(row.get("metadata"), where, file_name),
        external_id=_external_id(row.get("external_id"), where, file_name),
    )


def _external_id(raw, where: str, file_name: str) -> str:
    value = "" if raw is None else str(raw).strip()
    if value and not EXTERNAL_ID.fullmatch(value):
        raise BadRow(
            f"{where}: external_id {value[:80]!r} must be 1-200 of letters, digits and . _ : @ + -.", file_name
        )
    return value


def _row_metadata(raw, where: str, file_name: str) -> dict:
    """A row's ``metadata``: an object in JSON lines, a JSON object in a CSV cell, or nothing."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BadRow(f"{where}: the metadata column is not a JSON object ({exc.msg}).", file_name) from None
    if not isinstance(raw, dict):
        raise BadRow(f"{where}: the metadata column must be a JSON object of field -> value.", file_name)
    return raw


def _merged_items(rows: Iterator[tuple[str, object]], base: Path, source: Path) -> list[IngestItem]:
    """Rows naming the same image become one item with all their captions (first appearance order).

    The whole table is read before anything is stored, so no image is ever ingested with only part of
    its captions: a bad row that names its image refuses that image (every row of it, reported with the
    line number, the rest of the table goes in: Flickr30k's results.csv ships with a row that lost a
    '|'); a bad row that names no image (not JSON, no image column) could belong to any image, so the
    whole source is refused before a single image is stored.
    """
    items: dict[Path, IngestItem] = {}
    unplaced: list[str] = []
    for where, raw in rows:
        try:
            if isinstance(raw, BadRow):
                raise raw
            row = _caption_row(raw, where)
        except BadRow as exc:
            if exc.file_name is None:
                unplaced.append(str(exc))
                continue
            path = (base / exc.file_name).resolve()
            item = items.setdefault(path, IngestItem(path=path))
            item.problem = item.problem or str(exc)
            continue
        try:
            path = inside(base, row.file_name, where)
        except SourceError as exc:
            # A table that reaches outside its folder is hostile or broken as a whole: refuse the source
            # before any file is read (tests/integration/security/test_request_bodies_and_paths.py).
            unplaced.append(str(exc))
            continue
        item = items.setdefault(path, IngestItem(path=path))
        item.captions.extend(row.captions)
        item.tags = clean_tags([*item.tags, *row.tags])
        item.licence = item.licence or row.licence
        item.attribution = item.attribution or row.attribution
        item.metadata = {**row.metadata, **item.metadata}  # rows of one image: the first row's value of a field wins
        if row.external_id and item.external_id and row.external_id != item.external_id:
            item.problem = (
                item.problem
                or f"{where}: external_id {row.external_id!r} where an earlier row said {item.external_id!r}."
            )
        item.external_id = item.external_id or row.external_id
    if unplaced:
        shown = "\n  ".join(unplaced[:MAX_REPORTED_ROWS])
        more = f"\n  ... and {len(unplaced) - MAX_REPORTED_ROWS} more" if len(unplaced) > MAX_REPORTED_ROWS else ""
        raise SourceError(f"{source}: {len(unplaced)} bad row(s), nothing ingested from it:\n  {shown}{more}")
    return list(items.values())


def _jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{path}:{number}", BadRow(f"{path}:{number}: not JSON ({exc.msg}).")


def _delimited_rows(path: Path, delimiter: str) -> Iterator[tuple[str, object]]:
    # Flickr30k's results.csv is unquoted with captions that contain '"', so the pipe format reads
    # quotes as text; comma CSVs (Flickr8k's captions.txt) quote captions that contain commas.
    quoting = csv.QUOTE_NONE if delimiter == "|" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, skipinitialspace=True)
        header = [name.strip().lower() for name in next(reader, [])]
        image_columns = [i for i, name in enumerate(header) if name in FILE_COLUMNS]
        if not image_columns:
            raise SourceError(f"{path}: the header needs an image column (one of {', '.join(FILE_COLUMNS)}).")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                named = row[image_columns[0]].strip() if len(row) > image_columns[0] else ""
                message = f"{where}: {len(row)} field(s) where the header has {len(header)}."
                yield where, BadRow(message, named or None)
                continue
            yield where, {name: cell.strip() for name, cell in zip(header, row, strict=True)}


def table_format(path: Path) -> str:
    """``jsonl`` by extension, else ``flickr30k`` when the header is pipe-separated, else ``csv``."""
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    return "flickr30k" if "|" in header else "csv"


def table_items(path: Path, images_dir: Path | None = None, *, table: str | None = None) -> Iterator[IngestItem]:
    """A caption table, one row per image or per caption, files relative to ``images_dir`` or the table's folder.

    ``csv`` (header row, comma), ``flickr30k`` (``image_name| comment_number| comment``) or ``jsonl``;
    detected from the extension and header unless ``table`` says which.
    """
    if not path.is_file():
        raise SourceError(f"{path} does not exist.")
    try:
        kind = table or table_format(path)
        rows = _jsonl_rows(path) if kind == "jsonl" else _delimited_rows(path, "|" if kind == "flickr30k" else ",")
        return iter(_merged_items(rows, images_dir or path.parent, path))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc.reason}).") from None
    except csv.Error as exc:
        raise SourceError(f"{path}: not a readable table ({exc}).") from None


def labels_items(path: Path, images_dir: Path | None = None) -> Iterator[IngestItem]:
    """A JSON object ``{"file name": "label, label", ...}``; files relative to ``images_dir`` or the JSON's folder."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected an object mapping file names to comma-separated labels.")
    base = images_dir or path.parent
    for file_name, labels in sorted(data.items()):
        tags = split_tag_list(labels) if isinstance(labels, str) else clean_tags(labels or [])
        yield IngestItem(path=inside(base, file_name, str(path)), tags=tags)


SOURCE_FORMATS = ("auto", "folder", "coco", "labels", *TABLE_FORMATS)


def detect_items(
    source: Path, *, images_dir: Path | None = None, folder_tags: bool = True, source_format: str = "auto"
) -> Iterator[IngestItem]:
    """Pick the reader from what ``source`` is (extension, then header or keys), or from ``source_format``."""
    if source_format not in SOURCE_FORMATS:
        raise SourceError(f"Unknown format {source_format!r}; give one of {', '.join(SOURCE_FORMATS)}.")
    if source_format == "auto":
        source_format = _detected_format(source)
    if source_format == "folder":
        return folder_items(source, folder_tags=folder_tags)
    if source_format == "coco":
        return coco_items(source, images_dir)
    if source_format == "labels":
        return labels_items(source, images_dir)
    return table_items(source, images_dir, table=source_format)


def _detected_format(source: Path) -> str:
    if source.is_dir():
        return "folder"
    suffix = source.suffix.lower()
    if suffix in {".csv", ".txt", ".jsonl"}:
        # Flickr8k's Kaggle captions ship as captions.txt with an ``image,caption`` header.
        return table_format(source)
    if suffix == ".json":
        data = _load_json(source)
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            return "coco"
        return "labels"
    raise SourceError(
        f"{source}: give a folder, a COCO captions .json, a labels .json, a caption table "
        ".csv/.txt (image,caption or Flickr30k's image_name| comment_number| comment) or a .jsonl, "
        "or say which with --format."
    )
