"""Rebuild the committed demo set from ../shared/datasets/coco_mini (run from the repo root).

Takes up to 40 COCO images whose Flickr licence allows redistribution with attribution
(licence ids 4-8), copies them to demo/images/, and writes demo/demo.jsonl (file, captions,
tags from the COCO object categories, licence, attribution) and demo/ATTRIBUTION.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REDISTRIBUTABLE = {4, 5, 6, 7, 8}
LIMIT = 40


def main(coco_root: Path, out_dir: Path) -> None:
    rows = []
    for split in ("val2017", "train2017"):
        captions = json.loads((coco_root / "annotations" / f"captions_{split}.json").read_text())
        instances = json.loads((coco_root / "annotations" / f"instances_{split}.json").read_text())
        licences = {lic["id"]: lic for lic in captions["licenses"]}
        names = {c["id"]: c["name"] for c in instances["categories"]}
        tags: dict[int, list[str]] = {}
        for ann in instances["annotations"]:
            tag = names[ann["category_id"]]
            tags.setdefault(ann["image_id"], [])
            if tag not in tags[ann["image_id"]]:
                tags[ann["image_id"]].append(tag)
        texts: dict[int, list[str]] = {}
        for ann in captions["annotations"]:
            texts.setdefault(ann["image_id"], []).append(" ".join(ann["caption"].split()))
        for info in sorted(captions["images"], key=lambda i: i["id"]):
            if info["license"] not in REDISTRIBUTABLE or len(rows) >= LIMIT:
                continue
            lic = licences[info["license"]]
            shutil.copyfile(coco_root / split / info["file_name"], out_dir / "images" / info["file_name"])
            rows.append(
                {
                    "file": f"images/{info['file_name']}",
                    "captions": texts.get(info["id"], []),
                    "tags": tags.get(info["id"], []),
                    "licence": f"{lic['name']} ({lic['url']})",
                    "attribution": info["flickr_url"],
                }
            )
    with (out_dir / "demo.jsonl").open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    lines = [
        "# Demo images: attribution",
        "",
        "Photographs from Flickr via the COCO 2017 dataset (annotations CC BY 4.0, COCO Consortium).",
        "Each image keeps its own Flickr licence, listed below with its source.",
        "",
        "| file | licence | source |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {r['file']} | {r['licence']} | {r['attribution']} |" for r in rows]
    (out_dir / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    print(f"{len(rows)} demo images written to {out_dir}")


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/datasets/coco_mini")
    main(root, Path(__file__).resolve().parent)
