"""Fine-tuning the (tiny) encoder from clicks through the real services: the gate, the new version, re-embedding."""

import io
import random
from datetime import timedelta

import numpy as np
import pytest
import torch
from django.utils import timezone
from PIL import Image as PILImage

from collection.device import DeviceUnavailable
from collection.encoders import Encoder
from collection.models import EncoderVersion, ImageEmbedding, ImageTowerOutput
from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.models import SearchEvent
from ranking.finetune.counterfactual import ESTIMATOR
from ranking.finetune.service import FineTuneSettings, fine_tune
from ranking.models import FineTuneRun
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db
AN_HOUR_AGO = timezone.now() - timedelta(hours=1)
COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 40, 200),
    "yellow": (220, 210, 30),
    "purple": (140, 30, 160),
    "grey": (128, 128, 128),
}
PER_CLASS = 12


def class_image(colour: tuple[int, int, int], seed: int) -> bytes:
    rng = random.Random(seed)
    image = PILImage.new("RGB", (64, 64), colour)
    pixels = image.load()
    for _ in range(150):
        pixels[rng.randrange(64), rng.randrange(64)] = tuple(
            max(0, min(255, c + rng.randrange(-60, 60))) for c in colour
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def classes(service, settings, tmp_path):
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image

    settings.VAR_DIR = tmp_path
    settings.LOUPE_TEXT_CHANNEL = False
    settings.LOUPE_SWAP_SHARE = settings.LOUPE_EXPLORE_SHARE = 0.0  # the same order for every search
    by_class = {}
    for c, (name, colour) in enumerate(COLOURS.items()):
        by_class[name] = [
            add_image(read_image(class_image(colour, c * 100 + i)), captions=[f"{name} square number {i}"])[0]
            for i in range(PER_CLASS)
        ]
    embed_everything_missing()
    return by_class


def small_run(**changes) -> FineTuneSettings:
    """Settings for 72 images and ~100 pairs: the last two click rounds (held-out images) are validation and test."""
    options = {
        "learning_rate": 0.02,
        "epochs": 60,
        "batch_size": 32,
        "patience": 10,
        "margin": 0.05,
        "tolerance": 0.2,
        "min_pairs": 20,
        "held_out_share": 0.4,
    }
    return FineTuneSettings(**{**options, **changes})


def click_classes(service, by_class, images_range, rounds: int, start: int = 0) -> None:
    """Users search a colour and click its images (among images_range of each class) wherever they are shown.

    Search n is dated n seconds after an hour ago (one test transaction would give them all one time).
    """
    n = start
    for _ in range(rounds):
        for name, images in by_class.items():
            viewer = Viewer(user_key=f"anon:ft-user-{n:05d}-00000", surface="web")
            response = service.search(SearchRequest(text=f"{name} picture", page_size=100), viewer)
            SearchEvent.objects.filter(pk=response.event_id).update(created_at=AN_HOUR_AGO + timedelta(seconds=n))
            position = {h.image.pk: h.position for h in response.hits}
            for image in images[images_range]:
                record_click(
                    viewer, ClickInput(str(response.event_id), image.pk, position[image.pk], f"k{n}-{image.pk}")
                )
            n += 1


def click_three_windows(service, by_class) -> None:
    """Three training rounds on images 0-7 of each class, then the held-out share (the last two rounds) on
    images no earlier round chose: 8-9 in the validation window, 10-11 in the gate's test window."""
    click_classes(service, by_class, slice(0, 8), rounds=3)
    click_classes(service, by_class, slice(8, 10), rounds=1, start=1000)
    click_classes(service, by_class, slice(10, 12), rounds=1, start=1000 + len(by_class))


def test_fine_tuning_from_clicks_passes_the_gate_and_serves_a_new_version(service, classes):
    fine_tune_from_clicks(service, classes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_fine_tune_without_cuda_is_refused_before_any_work(service, settings):
    settings.LOUPE_DEVICE = "cuda"
    with pytest.raises(DeviceUnavailable, match=r"LOUPE_DEVICE=cuda, but torch sees no CUDA device.*bin/setup --cuda"):
        fine_tune(service.version, small_run())
    assert not FineTuneRun.objects.exists()  # no run recorded, so nothing read or cached for it either


def changelist_row(page: str, change_url: str) -> str:
    """The admin changelist's row (``<tr>`` … ``</tr>``) that links to ``change_url``."""
    link = page.index(f'href="{change_url}"')
    return page[page.rindex("<tr", 0, link) : page.index("</tr>", link)]


def fine_tune_from_clicks(service, classes) -> FineTuneRun:
    """Clicks, a fine-tune that passes the gate, and everything checked about the new version."""
    click_three_windows(service, classes)
    run = fine_tune(service.version, small_run())
    assert run.outcome == FineTuneRun.Outcome.PROMOTED, run.message
    # The gate read the test window's 7 logged searches, re-ranked by both versions: the clicks on images 10-11
    # (shown deep in the base's lists) move up. No swap slice here, so the prior's propensities, as recorded.
    gate = run.metrics["gate_estimate"]
    assert gate["estimator"] == ESTIMATOR and gate["propensity"] == "prior" and gate["searches"] == 7
    assert gate["chosen_clicks"] == 7 * 2 and gate["lower_bound"] > 0
    assert gate["after"] >= gate["before"] * 1.05
    assert gate["difference"] == pytest.approx(gate["after"] - gate["before"])
    # The gate reads the clicks on new pairs; those on pairs the training or validation window held are recorded
    # apart (here the test window's images 10-11 and grey's round-4 images 8-9 were never trained on).
    parts = gate["parts"]
    assert gate["gates_on"] == "new pairs" and parts["new pairs"]["after"] == gate["after"]
    assert parts["seen pairs"]["chosen_clicks"] == 0 and parts["all"]["chosen_clicks"] == 7 * 2
    assert parts["repeat queries"]["searches"] + parts["new queries"]["searches"] == 7
    # The anchor held every image but the guard and the gate images in place.
    assert run.metrics["anchor_images"] == 6 * PER_CLASS - guard_and_gate_images(run)
    assert run.metrics["device"] == "cpu (float32)"  # LOUPE_DEVICE=auto without an accelerator: fp32 on the CPU
    held = run.metrics["held_out_recall@10"]  # recorded beside it, not gated on: it favours the logger
    assert held["after"] >= held["before"] + 0.05
    # The gate read pairs and captions nothing was chosen on. The windows are search-time quantiles (60%, 80%
    # of 30 searches), so the last search of each earlier round falls in the next window: grey's round-3
    # clicks (its 8 training pairs again) are left out of validation; the test window holds grey's round-4
    # pairs and round 5's. The guard and the gate captions are different images.
    pairs = run.metrics["pairs"]
    assert pairs["validation"] == 5 * 2 and pairs["test"] == 2 + 6 * 2
    assert pairs["left_out_seen_earlier"] == {"validation": 8, "test": 0}
    # Who logged each window (the pairs favour that version): here the base served all 17 + 6 + 7 searches.
    base = f"v{service.version.pk}"
    assert run.metrics["served_by"] == {"training": {base: 17}, "validation": {base: 6}, "test": {base: 7}}
    guard, gate = run.metrics["guard_recall@10"]["captions"], run.metrics["reference_recall@10"]["captions"]
    assert guard > 0 and gate > 0 and guard + gate < 6 * PER_CLASS  # a quarter of the images anchor instead
    assert run.metrics["reference_recall@10"]["after"] >= run.metrics["reference_recall@10"]["before"] - 0.2
    version = run.result
    assert version.status == EncoderVersion.Status.READY and version.parent_id == service.version.pk
    assert ImageEmbedding.objects.filter(encoder_version=version).count() == 6 * PER_CLASS
    # Re-projected vectors are what the saved model computes from the pixels.
    fresh = Encoder(version.model_ref, local_files_only=True)
    assert fresh.fingerprint == version.fingerprint
    image = classes["red"][0]
    stored = np.asarray(ImageEmbedding.objects.get(encoder_version=version, image=image).vector)
    with PILImage.open(image.file.path) as handle:
        computed = fresh.encode_images([handle.convert("RGB")])[0]
    assert float(stored @ computed) > 0.999
    # The tower outputs were cached once, keyed by the vision tower (shared by its fine-tunes).
    assert ImageTowerOutput.objects.count() == 6 * PER_CLASS
    # The serving encoder did not change under the fine-tune.
    assert service.encoder.fingerprint == service.version.fingerprint
    return run


def guard_and_gate_images(run: FineTuneRun) -> int:
    # Each class image has one caption, so the guard and gate captions count their images.
    return run.metrics["guard_recall@10"]["captions"] + run.metrics["reference_recall@10"]["captions"]


def test_with_swapped_searches_the_gate_reads_the_measured_depth(service, classes, settings):
    """The swap slice measured positions 2..4 (``propensity_from_swaps`` records them from 2): the gate reads down
    to 4 with those propensities. Until the h4 audit it counted from 1, so it always fell back to the prior."""
    settings.LOUPE_SWAP_SHARE, settings.LOUPE_SWAP_MAX_POSITION, settings.LOUPE_SWAP_MAX_OFFSET = 0.9, 4, 1
    swapped = 75  # ~22 swapped searches per position k = 1..3, 2 clicks each: over the 20 a ratio needs
    long_ago = AN_HOUR_AGO - timedelta(hours=1)
    for n in range(swapped):  # every user clicks the top 4, short clicks: examinations, so no training pairs
        viewer = Viewer(user_key=f"anon:swap-user-{n:05d}-0000", surface="web")
        response = service.search(SearchRequest(text="any picture", page_size=12), viewer)
        SearchEvent.objects.filter(pk=response.event_id).update(created_at=long_ago + timedelta(seconds=n))
        for hit in response.hits[:4]:
            click = ClickInput(str(response.event_id), hit.image.pk, hit.position, f"s{n}-{hit.position}", dwell_ms=100)
            record_click(viewer, click)
    settings.LOUPE_SWAP_SHARE = 0.0
    click_three_windows(service, classes)
    run = fine_tune(service.version, small_run(held_out_share=0.4 * 30 / (30 + swapped)))  # the same 30 searches
    assert run.outcome in (FineTuneRun.Outcome.PROMOTED, FineTuneRun.Outcome.REFUSED), run.message
    gate = run.metrics["gate_estimate"]
    assert (gate["propensity"], gate["depth"]) == ("swap slice", 4)


def test_admin_acts_on_a_fine_tuned_version(service, classes, admin_client):
    from ranking.models import Experiment, ServingConfig

    run = fine_tune_from_clicks(service, classes)
    version = run.result
    # The rows of this version and this run, not the pages: their filter sidebars print "ready" and
    # "passed the gate" whatever the rows say.
    listing = admin_client.get("/admin/searchapp/encoderversion/").content.decode()
    row = changelist_row(listing, f"/admin/searchapp/encoderversion/{version.pk}/change/")
    assert '<td class="field-status">ready</td>' in row and f"fine-tuned (run {run.pk}" in row
    assert f'<td class="field-embedded_images">{6 * PER_CLASS}</td>' in row and " MB</td>" in row
    base_row = changelist_row(listing, f"/admin/searchapp/encoderversion/{service.version.pk}/change/")
    assert f"{FineTuneRun.Outcome.PROMOTED.label}: {version} ready" in base_row  # the base's last fine-tune
    runs = admin_client.get("/admin/ranking/finetunerun/").content.decode()
    run_row = changelist_row(runs, f"/admin/ranking/finetunerun/{run.pk}/change/")
    assert f'<td class="field-outcome">{FineTuneRun.Outcome.PROMOTED.label}</td>' in run_row
    gate = run.metrics["gate_estimate"]  # what the gate read, with its propensity source and depth
    shown = f"{gate['before']:.3f} → {gate['after']:.3f} (7 searches, prior to {gate['depth']})"
    assert f'<td class="field-gate_clicks">{shown}</td>' in run_row
    action = {"action": "start_ab_test", "_selected_action": [version.pk]}
    response = admin_client.post("/admin/searchapp/encoderversion/", action)
    experiment = Experiment.objects.get()
    assert response.status_code == 302 and f"/admin/ranking/experiment/{experiment.pk}/" in response["Location"]
    assert experiment.variants.get(is_control=False).encoder_version == version
    admin_client.post(
        "/admin/searchapp/encoderversion/", {"action": "promote_to_production", "_selected_action": [version.pk]}
    )
    assert ServingConfig.objects.get().encoder_version == version
    served = service.search(SearchRequest(text="red picture"), Viewer(user_key="anon:after-promotion-0000000"))
    assert served.encoder.version_id == version.pk  # production now searches the new version's vectors
    admin_client.post("/admin/searchapp/encoderversion/", {"action": "retire", "_selected_action": [version.pk]})
    version.refresh_from_db()
    assert version.status == EncoderVersion.Status.READY  # refused: it serves production


def test_a_fine_tune_below_the_margin_is_refused_and_nothing_new_serves(service, classes):
    click_three_windows(service, classes)
    versions = EncoderVersion.objects.count()
    run = fine_tune(service.version, small_run(margin=50.0))
    assert run.outcome == FineTuneRun.Outcome.REFUSED and "do not rise by 5000%" in run.message
    assert run.result is None and EncoderVersion.objects.count() == versions  # nothing new can serve
    gate = run.metrics["gate_estimate"]
    assert 0 < gate["after"] - gate["before"] < 50 * gate["before"]  # measured, and below that margin


def test_too_few_pairs_is_skipped(service, classes):
    run = fine_tune(service.version, FineTuneSettings(min_pairs=20))
    assert run.outcome == FineTuneRun.Outcome.SKIPPED


def test_an_interrupted_re_embedding_never_serves_and_is_finished_later(service, classes, monkeypatch):
    import ranking.finetune.service as finetune_service
    from collection.versions import service_encoder_choice
    from ranking.finetune.building import finish_building_versions

    click_three_windows(service, classes)
    original = finetune_service.reproject_collection

    def killed_half_way(version, image_ids, pooled, projections):
        original(version, image_ids[:30], pooled[:30], projections)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(finetune_service, "reproject_collection", killed_half_way)
    run = fine_tune(service.version, small_run())
    assert run.outcome == FineTuneRun.Outcome.FAILED and "worker killed" in run.message
    version = run.result
    assert version.status == EncoderVersion.Status.BUILDING
    assert ImageEmbedding.objects.filter(encoder_version=version).count() == 30
    assert service_encoder_choice(version.pk) is None  # half-embedded: cannot serve, not even in an arm
    monkeypatch.setattr(finetune_service, "reproject_collection", original)
    assert finish_building_versions() == [version]
    version.refresh_from_db()
    assert version.status == EncoderVersion.Status.READY
    assert ImageEmbedding.objects.filter(encoder_version=version).count() == 6 * PER_CLASS
    fresh = Encoder(version.model_ref, local_files_only=True)
    last = classes["grey"][-1]  # re-projected by the resumed run, not the interrupted one
    stored = np.asarray(ImageEmbedding.objects.get(encoder_version=version, image=last).vector)
    with PILImage.open(last.file.path) as handle:
        assert float(stored @ fresh.encode_images([handle.convert("RGB")])[0]) > 0.999
    assert service_encoder_choice(version.pk) is not None


def test_embedding_keeps_the_tower_outputs_fine_tuning_reads(service, classes):
    """Embedding the collection stores each image's pooled vision output from the same pass; projected, it is
    exactly the stored image vector, so a projection-only fine-tune never runs the tower again."""
    import torch

    tower = service.encoder.vision_tower_fingerprint
    outputs = dict(ImageTowerOutput.objects.filter(tower=tower).values_list("image_id", "pooled"))
    assert len(outputs) == 6 * PER_CLASS
    for image_id, vector in ImageEmbedding.objects.filter(encoder_version=service.version).values_list(
        "image_id", "vector"
    )[:10]:
        with torch.no_grad():
            projected = service.encoder.model.visual_projection(
                torch.tensor(np.asarray(outputs[image_id], np.float32)[None])
            )
        projected = (projected / projected.norm()).numpy()[0]
        assert float(projected @ np.asarray(vector)) > 0.9999


def test_fine_tuning_the_last_blocks_re_embeds_from_cached_states(service, classes):
    """layers=1: the last block of each tower trains too; images are re-embedded from the cached states (one
    block per image), and the stored vectors are what the saved model computes from the pixels."""
    from ranking.finetune.tower_inputs import frozen_vision_fingerprint, states_dir

    click_three_windows(service, classes)
    run = fine_tune(service.version, small_run(layers=1, learning_rate=0.01))
    assert run.outcome == FineTuneRun.Outcome.PROMOTED, run.message
    assert run.metrics["trained"].startswith("last 1 block")
    version = run.result
    fresh = Encoder(version.model_ref, local_files_only=True)
    assert fresh.vision_tower_fingerprint != service.encoder.vision_tower_fingerprint  # the vision block changed
    for image in (classes["red"][0], classes["grey"][-1]):
        stored = np.asarray(ImageEmbedding.objects.get(encoder_version=version, image=image).vector)
        with PILImage.open(image.file.path) as handle:
            assert float(stored @ fresh.encode_images([handle.convert("RGB")])[0]) > 0.999
    # The new tower's pooled outputs are cached for the next projection-only fine-tune of this version.
    assert ImageTowerOutput.objects.filter(tower=fresh.vision_tower_fingerprint).count() == 6 * PER_CLASS
    # The states are keyed by the frozen part, which the fine-tune did not change: the next one reuses them.
    assert frozen_vision_fingerprint(fresh.model, 1) == frozen_vision_fingerprint(service.encoder.model, 1)
    assert any(states_dir(frozen_vision_fingerprint(fresh.model, 1)).glob("part-*.npz"))


def test_the_state_cache_resumes_after_an_interrupted_fill(service, classes, monkeypatch):
    import ranking.finetune.tower_inputs as tower_inputs

    monkeypatch.setattr(tower_inputs, "CHUNK", 20)
    calls = {"n": 0}
    original = tower_inputs.image_states

    def killed_after_two_chunks(encoder, images, layers):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("worker killed")
        return original(encoder, images, layers)

    monkeypatch.setattr(tower_inputs, "image_states", killed_after_two_chunks)
    with pytest.raises(RuntimeError):
        tower_inputs.fill_state_cache(service.encoder, 1)
    folder = tower_inputs.states_dir(tower_inputs.frozen_vision_fingerprint(service.encoder.model, 1))
    assert len(list(folder.glob("part-*.npz"))) == 2 and not list(folder.glob(".*tmp*"))  # whole chunks only
    monkeypatch.setattr(tower_inputs, "image_states", original)
    ids, states = tower_inputs.load_state_cache(tower_inputs.fill_state_cache(service.encoder, 1))
    assert len(ids) == len(set(ids.tolist())) == 6 * PER_CLASS  # completed, nothing twice
    image = classes["blue"][3]
    with PILImage.open(image.file.path) as handle:
        direct = original(service.encoder, [handle.convert("RGB")], 1)[0]
    assert np.allclose(states[int(np.searchsorted(ids, image.pk))].numpy(), direct.astype(np.float32))
