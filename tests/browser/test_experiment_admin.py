"""An admin starts an experiment, users search, and the experiment's admin page shows the table and the chart."""

import pytest
from django.contrib.auth import get_user_model

from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from ranking.models import Experiment, ExperimentAudit, Variant
from searchapp.search import SearchRequest
from tests.conftest import build_collection

pytestmark = pytest.mark.browser


@pytest.fixture
def live_collection(transactional_db, service):
    return build_collection(service)


def test_admin_starts_an_experiment_and_reads_its_results(live_server, live_collection, service, page, screenshot):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "a-long-test-password")
    experiment = Experiment.objects.create(name="reranker vs embedding", min_users_per_arm=5)
    Variant.objects.create(experiment=experiment, name="control", is_control=True, use_reranker=False)
    Variant.objects.create(experiment=experiment, name="treatment", rerank_depth=50)

    page.goto(live_server.url + "/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/ranking/experiment/{experiment.pk}/change/")
    page.get_by_role("link", name="Start").click()
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("text=is running")
    assert Experiment.objects.get(pk=experiment.pk).status == "running"
    assert ExperimentAudit.objects.get(experiment=experiment).user == "boss"

    for n in range(24):  # users search; treatment users click more
        viewer = Viewer(user_key=f"anon:browser-exp-{n:03d}-0000000", surface="web")
        response = service.search(SearchRequest(text="a test picture", page_size=12), viewer)
        if response.arm == "treatment" or n % 4 == 0:
            record_click(viewer, ClickInput(str(response.event_id), response.hits[0].image.pk, 1, f"b{n}"))

    page.goto(f"{live_server.url}/admin/ranking/experiment/{experiment.pk}/change/")
    table = page.locator("table.loupe-arms")
    assert table.is_visible()
    assert table.locator("tbody tr").count() == 2
    assert "95% always-valid CI" in table.locator("tr[data-arm=treatment]").inner_text()
    chart = page.locator("svg.loupe-chart")
    assert chart.is_visible() and chart.locator("polyline").count() == 2
    assert "Sample ratio" in page.locator(".loupe-srm").inner_text()
    assert "Verdict" in page.locator(".loupe-verdict").inner_text()
    treatment = table.locator("tr[data-arm=treatment]").inner_text()
    assert "q = " in treatment and "of control" in page.locator("tr[data-arm=treatment] td.loupe-mde").inner_text()
    # The answer leads: verdict, sample ratio and chart above the experiment's settings; arms' settings folded.
    top = {name: page.locator(selector).first.bounding_box()["y"] for name, selector in {
        "verdict": ".loupe-verdict", "srm": ".loupe-srm", "chart": "svg.loupe-chart", "settings": "fieldset",
        "arms": "details.loupe-arms-settings"}.items()}  # fmt: skip
    assert top["verdict"] < top["srm"] < top["chart"] < top["settings"] < top["arms"], top
    assert not page.locator("#variants-group").is_visible()
    screenshot("experiment-results")
    page.locator("details.loupe-arms-settings summary").click()
    assert page.locator("#variants-group").is_visible()

    page.get_by_role("link", name="Stop").click()
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("text=is stopped")
    assert Experiment.objects.get(pk=experiment.pk).status == "stopped"
