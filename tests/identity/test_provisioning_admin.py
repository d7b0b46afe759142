"""The admin shows whether SCIM manages a person, and what it knows of them (tokens/admin/provisioning.py)."""

import pytest
from django.contrib.auth.models import Group

from tokens.models import ProvisionedGroup, ProvisionedUser


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def managed(make_user, provider):
    person = make_user("carol")
    ProvisionedUser.record(person, external_id="00u1carol", provider=provider, was_active=True)
    return person


def test_the_user_list_says_who_scim_manages_and_filters_on_it(admin_client, managed, user):
    page = admin_client.get("/admin/auth/user/", {"scim": "yes"})
    assert page.status_code == 200
    shown = [row.username for row in page.context["cl"].result_list]
    assert shown == ["carol"]
    assert "managed by SCIM" in page.content.decode()
    unmanaged = admin_client.get("/admin/auth/user/", {"scim": "no"}).context["cl"].result_list
    assert "carol" not in [row.username for row in unmanaged]


def test_a_persons_page_shows_the_providers_id_read_only(admin_client, managed, user):
    page = admin_client.get(f"/admin/auth/user/{managed.pk}/change/").content.decode()
    assert "SCIM provisioning" in page
    assert "external id: 00u1carol" in page
    assert "provider: okta-scim" in page
    local = admin_client.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert "No: a local account." in local and "00u1carol" not in local


def test_the_scim_lists_are_read_only(admin_client, managed):
    ProvisionedGroup.objects.create(group=Group.objects.create(name="staff"), external_id="g1")
    people = admin_client.get("/admin/tokens/provisioneduser/")
    assert people.status_code == 200 and "00u1carol" in people.content.decode()
    assert admin_client.get("/admin/tokens/provisionedgroup/").status_code == 200
    assert admin_client.get("/admin/tokens/provisioneduser/add/").status_code == 403
    assert admin_client.post(f"/admin/tokens/provisioneduser/{managed.pk}/delete/").status_code == 403
    assert ProvisionedUser.objects.filter(user=managed).exists()
