"""Issue 19, finding 4: staff who may only view must not run write actions or custom admin views.

The walks are generic on purpose: they read ``admin.site._registry``, so an action or an admin URL added
later without a permission check fails here without anyone remembering to list it.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse

from feedback.models import ApiKey
from ranking.models import Experiment, Variant

pytestmark = pytest.mark.django_db

# Django's own delete action asks for the delete permission, which the "editor" below does not get; so
# do erasing users' feedback (feedback.admin.erase_users) and taking images down (collection.admin.take_down).
NEEDS_DELETE = {"delete_selected", "erase_users", "take_down"}


def _staff(username: str, *actions: str):
    user = get_user_model().objects.create_user(username, password="a-long-test-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__regex=rf"^({'|'.join(actions)})_"))
    return get_user_model().objects.get(pk=user.pk)  # a fresh object: no cached permissions


@pytest.fixture
def viewer():
    return _staff("viewer", "view")


@pytest.fixture
def editor():
    return _staff("editor", "view", "change")


def _request(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def _every_action():
    for model, model_admin in admin.site._registry.items():
        for _func, name, _description in model_admin._get_base_actions():
            yield model, model_admin, name


def test_the_walk_sees_the_write_actions():
    names = {name for _, _, name in _every_action()}
    expected = {"fine_tune_now", "start_ab_test", "promote_to_production", "retire", "refresh_now", "revoke"}
    assert expected | {"promote_selected", "roll_back", "delete_selected"} <= names


def test_no_registered_action_is_offered_to_view_only_staff(viewer):
    offered = [
        f"{model._meta.label}.{name}"
        for model, model_admin, name in _every_action()
        if name in model_admin.get_actions(_request(viewer))
    ]
    assert offered == []


def test_staff_with_change_permission_may_run_every_write_action(editor):
    missing = [
        f"{model._meta.label}.{name}"
        for model, model_admin, name in _every_action()
        if name not in NEEDS_DELETE and name not in model_admin.get_actions(_request(editor))
    ]
    assert missing == []


def _custom_urls():
    """URL patterns a ModelAdmin adds beyond Django's own (changelist, add, change, history, delete)."""
    for model, model_admin in admin.site._registry.items():
        own = {p.name for p in admin.ModelAdmin.get_urls(model_admin)}
        for pattern in model_admin.get_urls():
            if pattern.name not in own and pattern.name is not None:
                yield model, pattern


def test_every_custom_admin_view_refuses_view_only_staff(client, viewer):
    experiment = Experiment.objects.create(name="guarded")
    variant = Variant.objects.create(experiment=experiment, name="control", is_control=True)
    found = list(_custom_urls())
    assert {p.name for _, p in found} >= {"ranking_experiment_start", "ranking_experiment_stop"}
    client.force_login(viewer)
    for _model, pattern in found:
        kwargs = {name: variant.pk if "variant" in name else experiment.pk for name in pattern.pattern.converters}
        url = reverse(f"admin:{pattern.name}", kwargs=kwargs)
        assert client.get(url).status_code == 403, url
        assert client.post(url).status_code == 403, url
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"


def test_a_view_only_user_cannot_revoke_a_key_by_posting_the_action(client, viewer, editor):
    key = ApiKey.objects.create(name="partner", prefix="abcd1234", hashed_secret="x" * 64, scopes=["search"])
    changelist = reverse("admin:feedback_apikey_changelist")
    form = {"action": "revoke", "_selected_action": [key.pk], "index": 0}
    client.force_login(viewer)
    client.post(changelist, form)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    client.force_login(editor)
    assert client.post(changelist, form).status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


def test_the_experiment_page_offers_start_only_to_editors(client, viewer, editor):
    experiment = Experiment.objects.create(name="shown")
    Variant.objects.create(experiment=experiment, name="control", is_control=True)
    page = reverse("admin:ranking_experiment_change", args=[experiment.pk])
    start = reverse("admin:ranking_experiment_start", args=[experiment.pk])
    client.force_login(viewer)
    assert start not in client.get(page).content.decode()
    client.force_login(editor)
    assert start in client.get(page).content.decode()
