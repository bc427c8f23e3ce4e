"""The pure parts of an image edit: the metadata merge patch and caption clean-up."""

from collection.image_changes import ImageChanges, merged_metadata, unique_captions


def test_metadata_patch_replaces_adds_and_null_removes():
    current = {"author": "smith", "price": 10, "taken": "2021-06-01"}
    assert merged_metadata(current, {"price": 12, "author": None, "orientation": "portrait"}) == {
        "price": 12,
        "taken": "2021-06-01",
        "orientation": "portrait",
    }
    assert merged_metadata(current, {}) == current
    assert current == {"author": "smith", "price": 10, "taken": "2021-06-01"}  # not changed in place


def test_captions_are_trimmed_deduplicated_in_order():
    assert unique_captions(["  a kite ", "", "a bird", "a kite", None, "   "]) == ["a kite", "a bird"]


def test_only_captions_and_tags_touch_the_text_channels():
    assert ImageChanges(captions=()).text_changes and ImageChanges(tags=("a",)).text_changes
    assert not ImageChanges(licence="CC0", metadata={"a": 1}).text_changes
