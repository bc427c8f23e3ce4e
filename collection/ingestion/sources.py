"""Readers that turn the formats Loupe ingests into :class:`IngestItem` values.

- a folder of images: sub-folder names become tags (``caltech101/101_ObjectCategories/dog/x.jpg``);
- COCO caption JSON (``captions_*.json``), with optional ``instances_*.json`` categories as tags;
- CSV or JSONL with ``file``, ``caption`` (or ``captions``) and ``tags`` columns;
- a labels JSON mapping a file name to a comma-separated label list.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from collection.tags import clean_tags, split_tag_list

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class SourceError(ValueError):
    """The source itself cannot be read (missing file, wrong format); nothing was ingested from it."""


@dataclass
class IngestItem:
    path: Path
    captions: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    licence: str = ""
    attribution: str = ""
    metadata: dict | str = field(default_factory=dict)  # checked by add_image against the declared fields


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


def _row_item(row: dict, base: Path, where: str) -> IngestItem:
    file_name = str(row.get("file") or row.get("path") or "").strip()
    if not file_name:
        raise SourceError(f"{where}: no 'file' column.")
    captions = row.get("captions")
    if isinstance(captions, str):
        captions = [c for c in captions.split("|")]
    if not captions:
        captions = [row.get("caption") or ""]
    tags = row.get("tags") or []
    tags = split_tag_list(tags) if isinstance(tags, str) else clean_tags(tags)
    return IngestItem(
        path=inside(base, file_name, where),
        captions=[" ".join(str(c).split()) for c in captions if str(c).strip()],
        tags=tags,
        licence=str(row.get("licence") or row.get("license") or ""),
        attribution=str(row.get("attribution") or ""),
        metadata=_row_metadata(row.get("metadata"), where),
    )


def _row_metadata(raw, where: str) -> dict:
    """A row's ``metadata``: an object in JSON lines, a JSON object in a CSV cell, or nothing."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{where}: the metadata column is not a JSON object ({exc.msg}).") from None
    if not isinstance(raw, dict):
        raise SourceError(f"{where}: the metadata column must be a JSON object of field -> value.")
    return raw


def table_items(path: Path) -> Iterator[IngestItem]:
    """CSV (header row) or JSONL: ``file`` relative to the table's folder, ``caption``, ``tags``."""
    if not path.is_file():
        raise SourceError(f"{path} does not exist.")
    base = path.parent
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{path}:{number}: not JSON ({exc.msg}).") from None
                yield _row_item(row, base, f"{path}:{number}")
    else:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "path"} & set(reader.fieldnames):
                raise SourceError(f"{path}: the header needs a 'file' column.")
            for number, row in enumerate(reader, 2):
                yield _row_item(row, base, f"{path}:{number}")


def labels_items(path: Path, images_dir: Path | None = None) -> Iterator[IngestItem]:
    """A JSON object ``{"file name": "label, label", ...}``; files relative to ``images_dir`` or the JSON's folder."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected an object mapping file names to comma-separated labels.")
    base = images_dir or path.parent
    for file_name, labels in sorted(data.items()):
        tags = split_tag_list(labels) if isinstance(labels, str) else clean_tags(labels or [])
        yield IngestItem(path=inside(base, file_name, str(path)), tags=tags)


def detect_items(source: Path, *, images_dir: Path | None = None, folder_tags: bool = True) -> Iterator[IngestItem]:
    """Pick the reader from what ``source`` is."""
    if source.is_dir():
        return folder_items(source, folder_tags=folder_tags)
    suffix = source.suffix.lower()
    if suffix in {".csv", ".jsonl"}:
        return table_items(source)
    if suffix == ".json":
        data = _load_json(source)
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            return coco_items(source, images_dir)
        return labels_items(source, images_dir)
    raise SourceError(f"{source}: give a folder, a COCO captions .json, a labels .json, a .csv or a .jsonl.")
