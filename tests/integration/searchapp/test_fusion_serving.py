"""Which fusion a search is served with: the fitted setting of its CLIP version, else RRF; CLIP alone unchanged."""

import pytest

from collection.fusion import CONVEX, RRF
from collection.fusion_setting import Fusion, forget
from collection.index import nearest_images
from collection.models import EncoderVersion, FusionSetting
from searchapp.search import SearchRequest, SearchService

pytestmark = pytest.mark.django_db


def ids(response) -> list[int]:
    return [hit.image.pk for hit in response.hits]


def uncaptioned_collection() -> list:
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from tests.conftest import image_bytes

    images = [add_image(read_image(image_bytes(seed)))[0] for seed in range(10)]
    embed_everything_missing()
    return images


def test_a_collection_with_clip_alone_is_served_in_clips_order_by_every_fusion(service, settings):
    uncaptioned_collection()
    settings.LOUPE_MIN_SCORE, settings.LOUPE_MAX_RELATIVE_DROP = -1.0, 0.99  # keep every neighbour
    request = SearchRequest(text="a test picture", page_size=10)
    settings.LOUPE_TEXT_CHANNEL = False
    alone = service.search(request)
    clip = [n.id for n in nearest_images(service.version, service.encoder.encode_query(request.text), k=11)]
    assert ids(alone) == clip[:10]
    assert [h.score for h in alone.hits] == [h.similarity for h in alone.hits]  # the cosine, unfused
    settings.LOUPE_TEXT_CHANNEL = True
    for fusion in (Fusion(RRF), Fusion(CONVEX, {"clip": 0.2, "fts": 0.5, "caption": 0.3})):
        fused = SearchService(service.choice, service.version, fusion=fusion).search(request)
        assert ids(fused) == ids(alone), fusion.method


def test_the_newest_fitted_setting_of_the_serving_version_serves(service, collection):
    request = SearchRequest(text="caption 3 of a test picture", page_size=5)
    assert service.search(request).channel_weights == {"clip": 0.0, "fts": 1.0, "caption": 1.0}  # own weights
    other = EncoderVersion.objects.create(name="other", model_ref="x", fingerprint="y", dimension=8)
    FusionSetting.objects.create(method=CONVEX, encoder_version=other, clip_weight=1, fts_weight=0, caption_weight=0)
    FusionSetting.objects.create(
        method=CONVEX, encoder_version=service.version, clip_weight=0.1, fts_weight=0.3, caption_weight=0.6
    )
    forget()
    response = service.search(request)
    assert response.channel_weights == {"clip": 0.1, "fts": 0.3, "caption": 0.6}
    assert response.hits[0].image.captions.filter(text=request.text).exists()
    # The fitted fusion is part of the order's key: a later fit is served at once, not from the cache.
    FusionSetting.objects.create(
        method=RRF, encoder_version=service.version, clip_weight=0.0, fts_weight=1.0, caption_weight=0.0
    )
    forget()
    assert service.search(request).channel_weights == {"clip": 0.0, "fts": 1.0, "caption": 0.0}
