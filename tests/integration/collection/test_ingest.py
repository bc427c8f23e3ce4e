"""Ingestion from every supported source, through the management command and the service."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from collection.ingestion.one_pass import ingest_items
from collection.ingestion.sources import SourceError, coco_items, folder_items, labels_items, table_items
from collection.models import Caption, Image, ImageEmbedding
from tests.conftest import DATASETS, image_bytes, write_images

pytestmark = pytest.mark.django_db


def run_ingest(*args):
    out, err = StringIO(), StringIO()
    call_command("ingest", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_folder_names_become_tags_and_files_are_content_addressed(tmp_path, media_root):
    write_images(tmp_path / "Car_Side", [1, 2])
    write_images(tmp_path / "dogs" / "Puppies", [3])
    out, _ = run_ingest(tmp_path)
    assert "3 added" in out and "Embedded 3 images" in out
    assert sorted(map(sorted, Image.objects.values_list("tags", flat=True))) == [
        ["car side"],
        ["car side"],
        ["dogs", "puppies"],
    ]
    image = Image.objects.first()
    assert (media_root / image.file.name).read_bytes()[:4] == b"\x89PNG"
    assert image.sha256 in image.file.name and (media_root / image.thumbnail.name).exists()
    assert ImageEmbedding.objects.count() == 3


def test_duplicates_are_skipped_and_a_rerun_resumes(tmp_path):
    paths = write_images(tmp_path / "a", [1, 2])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.png").write_bytes(paths[0].read_bytes())
    out, _ = run_ingest(tmp_path)
    assert "2 added, 1 already present" in out
    write_images(tmp_path / "a", [3])
    out, _ = run_ingest(tmp_path)
    assert "1 added, 3 already present" in out
    assert Image.objects.count() == 3


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path):
    write_images(tmp_path, [1])
    (tmp_path / "broken.jpg").write_bytes(image_bytes(2, fmt="JPEG")[:300])
    (tmp_path / "notes.png").write_text("not an image")
    out, err = run_ingest(tmp_path)
    assert "1 added" in out and "2 skipped" in out
    assert "broken.jpg" in err and "notes.png" in err
    assert Image.objects.count() == 1 and ImageEmbedding.objects.count() == 1


def test_coco_captions_with_categories_as_tags_and_licences(tmp_path):
    write_images(tmp_path / "val2017", [1, 2])
    (tmp_path / "annotations").mkdir()
    captions = {
        "licenses": [{"id": 4, "name": "Attribution License", "url": "http://cc/by/2.0/"}],
        "images": [
            {"id": 10, "file_name": "img_1.png", "license": 4, "flickr_url": "http://flickr/1"},
            {"id": 11, "file_name": "img_2.png", "license": 4, "flickr_url": "http://flickr/2"},
            {"id": 12, "file_name": "missing.png", "license": 4},
        ],
        "annotations": [
            {"image_id": 10, "caption": "A dog  on a beach."},
            {"image_id": 10, "caption": "A puppy by the sea."},
            {"image_id": 11, "caption": "Two cats."},
        ],
    }
    instances = {"categories": [{"id": 1, "name": "dog"}], "annotations": [{"image_id": 10, "category_id": 1}]}
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps(captions))
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    out, err = run_ingest(tmp_path / "annotations" / "captions_val2017.json")
    assert "2 added" in out and "missing.png" in err
    dog = Image.objects.get(tags=["dog"])
    assert [c.text for c in dog.captions.all()] == ["A dog on a beach.", "A puppy by the sea."]
    assert dog.licence.startswith("Attribution License") and dog.attribution == "http://flickr/1"


def test_csv_and_jsonl_tables(tmp_path):
    write_images(tmp_path, [1, 2, 3])
    (tmp_path / "t.csv").write_text('file,caption,tags\nimg_1.png,"A red, square thing","Red, square"\n')
    (tmp_path / "t.jsonl").write_text(
        json.dumps({"file": "img_2.png", "captions": ["one", "two"], "tags": ["A", "b"]})
        + "\n\n"
        + json.dumps({"file": "img_3.png", "caption": "three", "tags": "c"})
        + "\n"
    )
    run_ingest(tmp_path / "t.csv", tmp_path / "t.jsonl")
    assert Caption.objects.filter(text="A red, square thing", image__tags=["red", "square"]).exists()
    assert list(Caption.objects.filter(text__in=["one", "two"]).values_list("position", flat=True)) == [0, 1]
    assert Image.objects.filter(tags=["c"]).exists()


def test_labels_json(tmp_path):
    write_images(tmp_path / "pics", [1, 2])
    (tmp_path / "labels.json").write_text(json.dumps({"img_1.png": "cat, Indoor", "img_2.png": "dog"}))
    run_ingest(tmp_path / "labels.json", "--images-dir", tmp_path / "pics")
    assert sorted(map(sorted, Image.objects.values_list("tags", flat=True))) == [["cat", "indoor"], ["dog"]]


@pytest.mark.parametrize(
    "content, suffix, message",
    [("{not json", ".json", "Cannot read"), ("name,caption\nx,y\n", ".csv", "image column"), ("", ".dat", "give a")],
)
def test_unreadable_sources_fail_with_a_clear_message_and_store_nothing(tmp_path, content, suffix, message):
    source = tmp_path / f"source{suffix}"
    source.write_text(content)
    with pytest.raises(CommandError, match=message):
        run_ingest(source)
    assert not Image.objects.exists()


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run_ingest(tmp_path / "nope")


def test_source_readers_directly(tmp_path):
    write_images(tmp_path / "x", [1])
    assert [item.tags for item in folder_items(tmp_path)] == [["x"]]
    with pytest.raises(SourceError):
        list(folder_items(tmp_path / "missing"))
    with pytest.raises(SourceError):
        list(table_items(tmp_path / "missing.csv"))
    (tmp_path / "l.json").write_text("[1, 2]")
    with pytest.raises(SourceError):
        list(labels_items(tmp_path / "l.json"))
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(SourceError):
        list(coco_items(tmp_path / "c.json"))


def test_service_counts_added_duplicates_and_failures(tmp_path):
    items = list(folder_items(write_images(tmp_path / "f", [1, 2])[0].parent))
    first = ingest_items(items)
    second = ingest_items(items)
    assert (first.added, first.duplicates, second.added, second.duplicates) == (2, 0, 0, 2)


@pytest.mark.dataset
def test_caltech_slice_ingests_with_class_tags(tmp_path):
    root = DATASETS / "caltech101" / "101_ObjectCategories"
    if not root.is_dir():
        pytest.skip(f"Caltech 101 is not at {root} (../shared/datasets is absent on a fresh clone)")
    out, _ = run_ingest(root / "accordion", root / "anchor", "--limit", "10", "--no-folder-tags")
    assert "10 added" in out
    assert Image.objects.count() == 20 and not Image.objects.exclude(tags=[]).exists()


def test_flickr_style_caption_csv_end_to_end(tmp_path):
    """The public layout: captions.txt beside an Images/ folder, one row per caption, a bad row."""
    write_images(tmp_path / "Images", [1, 2, 3])
    (tmp_path / "captions.txt").write_text(
        "image,caption\n"
        "img_1.png,A dog runs on the beach .\n"
        "img_2.png,Two cats on a sofa .\n"
        'img_1.png,"A brown dog, wet, by the sea ."\n'
        "img_3.png,A kite .,extra field\n"
        "img_3.png,A red kite in the sky .\n"
    )
    out, err = run_ingest(tmp_path / "captions.txt", "--images-dir", tmp_path / "Images")
    assert "2 added, 0 already present, 1 skipped" in out and "Embedded 2 images" in out
    assert "img_3.png" in err and "captions.txt:5: 3 field(s)" in err
    dog = Caption.objects.get(text="A dog runs on the beach .").image
    assert [c.text for c in dog.captions.order_by("position")] == [
        "A dog runs on the beach .",
        "A brown dog, wet, by the sea .",
    ]
    assert Image.objects.count() == 2 and not Caption.objects.filter(text__contains="kite").exists()
    out, _ = run_ingest(tmp_path / "captions.txt", "--images-dir", tmp_path / "Images")
    assert "0 added, 2 already present" in out and Caption.objects.count() == 3


def test_a_table_with_an_unplaceable_bad_row_stores_nothing(tmp_path):
    write_images(tmp_path, [1])
    (tmp_path / "pairs.jsonl").write_text('{"file": "img_1.png", "caption": "fine"}\n{"caption": "whose?"}\n')
    with pytest.raises(CommandError, match=r"pairs.jsonl:2: no image named"):
        run_ingest(tmp_path / "pairs.jsonl")
    assert not Image.objects.exists()


@pytest.mark.dataset
def test_coco_mini_ships_coco_captions_and_ingests_with_all_captions(tmp_path):
    captions_json = DATASETS / "coco_mini" / "annotations" / "captions_val2017.json"
    if not captions_json.is_file():
        pytest.skip(f"coco_mini is not at {captions_json} (../shared/datasets is absent on a fresh clone)")
    shipped = json.loads(captions_json.read_text())
    assert {"images", "annotations"} <= shipped.keys()
    out, _ = run_ingest(captions_json, "--limit", "5", "--no-embed", "--format", "coco")
    assert "5 added" in out
    first_five = sorted(shipped["images"], key=lambda i: i["id"])[:5]
    expected = sum(1 for a in shipped["annotations"] if a["image_id"] in {i["id"] for i in first_five})
    assert Image.objects.count() == 5 and Caption.objects.count() == expected >= 5
