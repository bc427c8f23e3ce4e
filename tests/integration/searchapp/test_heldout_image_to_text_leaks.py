"""Image to text on held-out captions: a held-out caption is an answer only, never something the search reads.

Every image has two captions of made-up words no other caption shares (its own words each), and a third,
the same plain sentence for every image. Rotation r asks each image for its r-th caption among the
rotation's held-out captions. Nothing left in the collection links an image to its held-out caption: its
visible made-up caption shares no word with it, CLIP has random demo weights, so every channel, the fusion
and the served image-to-text search can only guess (about 1 in 12). A path that still reads the held-out
caption as one of the image's captions matches it exactly and answers first every time.
"""

import random

import pytest

from searchapp.heldout_modes import held_out_image_to_text
from searchapp.search import SearchService

IMAGES = 12
# 72 words: 12 images x 2 captions x 3 words, none reused, so no two captions share a word.
WORDS = [
    "anchor",
    "basalt",
    "cinder",
    "dulcet",
    "ember",
    "fathom",
    "garnet",
    "hollow",
    "ingot",
    "jasper",
    "kelp",
    "lumen",
    "mantle",
    "nectar",
    "onyx",
    "pewter",
    "quartz",
    "russet",
    "saffron",
    "tundra",
    "umber",
    "velvet",
    "walnut",
    "yarrow",
    "zephyr",
    "amber",
    "bramble",
    "cobalt",
    "driftwood",
    "elm",
    "fennel",
    "gossamer",
    "heron",
    "indigo",
    "juniper",
    "kestrel",
    "lichen",
    "marrow",
    "nutmeg",
    "oxbow",
    "pumice",
    "quill",
    "raven",
    "sorrel",
    "thistle",
    "usher",
    "vellum",
    "wicker",
    "yeoman",
    "zinnia",
    "acorn",
    "birch",
    "clover",
    "dune",
    "egret",
    "flint",
    "glacier",
    "harbor",
    "iris",
    "jetty",
    "knoll",
    "lagoon",
    "meadow",
    "nettle",
    "orchid",
    "pebble",
    "quarry",
    "ridge",
    "spruce",
    "timber",
    "valley",
    "willow",
]


# Shuffled (fixed): an image's two captions are not neighbours in the list above (nearly alphabetical).
ORDER = random.Random(18).sample(range(len(WORDS)), len(WORDS))


def planted_caption(seed: int, rotation: int) -> str:
    start = 3 * (2 * seed + rotation)
    return " ".join(WORDS[i] for i in ORDER[start : start + 3])


def build_planted_collection() -> None:
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from tests.conftest import image_bytes

    for seed in range(IMAGES):
        add_image(
            read_image(image_bytes(seed)),
            captions=[planted_caption(seed, 0), planted_caption(seed, 1), "a plain test picture"],
        )
    embed_everything_missing()


def test_the_planted_words_are_each_captions_own():
    words = [w for seed in range(IMAGES) for r in (0, 1) for w in planted_caption(seed, r).split()]
    assert len(words) == len(set(words)) == 2 * 3 * IMAGES


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential-channels", "parallel-channels"])
def test_held_out_captions_are_answers_only(settings, parallel):
    from collection.text_channels import shutdown_pool

    settings.LOUPE_PARALLEL_CHANNELS = parallel
    service = SearchService()
    build_planted_collection()
    try:
        # Asked once before the evaluation, as live traffic would: every caption is still an answer here.
        assert len(service.describe(_first_image(), k=10)) == 10
        measured = held_out_image_to_text(service, rotations=2, ks=(1, 5, 10))
    finally:
        shutdown_pool()
    metrics = measured["metrics"]
    assert metrics["caption"]["queries"] == metrics["served"]["queries"] == 2 * IMAGES
    # Each rotation's answers are its 12 held-out captions alone, one relevant: recall@10 below 1 shows it.
    assert metrics["clip"]["recall@10"] < 1.0
    assert measured["served_differs_from_clip_channel"] == 0  # describe serves the CLIP channel's list
    # Chance is 1/12 (24 queries: 0.4 or more has p < 1e-4); a leak gives 1.0.
    guess = 0.4
    fused = ("rrf_own_weights", "rrf_fitted", "convex_max_fitted", "convex_fitted")
    for name in ("caption", "clip", *fused, "served", "served_sequential"):
        assert metrics[name]["recall@1"] <= guess, (name, metrics[name])


def _first_image() -> int:
    from collection.models import Image

    return Image.objects.order_by("pk").values_list("pk", flat=True)[0]
