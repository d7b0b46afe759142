"""Service accounts in the admin (tokens/admin/service_accounts.py): apart from people, by the same rules."""

import pytest
from django.contrib.auth.models import Group

from tokens.models import ManagerRole, ServiceAccount, SitePolicy, Token, TokenEvent

from .helpers import bearer, make_manager
from .test_admin import _policy_form

pytestmark = pytest.mark.django_db

LIST = "/admin/tokens/serviceaccount/"


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


def test_an_administrator_creates_a_service_account_with_no_password_and_an_event(staff, staff_user, team):
    response = staff.post(
        f"{LIST}add/", {"username": "payments-sync", "team": team.pk, "description": "Nightly ledger sync"}
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    account = ServiceAccount.objects.get()
    assert (account.user.username, account.team, account.created_by) == ("payments-sync", team, staff_user)
    assert not account.user.has_usable_password()
    assert TokenEvent.objects.get(user=account.user).kind == "account_created"


def test_a_taken_username_is_refused_with_a_message_on_the_form(staff, team, user):
    response = staff.post(f"{LIST}add/", {"username": "alice", "team": team.pk, "description": ""})
    assert response.status_code == 200
    assert "exists already" in response.content.decode()
    assert not ServiceAccount.objects.exists()


def test_service_accounts_are_listed_apart_from_people(staff, service_account, user):
    people = staff.get("/admin/auth/user/").content.decode()
    assert "alice" in people and "payments-sync" not in people
    accounts = staff.get(LIST).content.decode()
    assert "payments-sync" in accounts and "Nightly ledger sync" in accounts
    # The token list can show either.
    tokens = staff.get("/admin/tokens/token/?owner=service_accounts")
    assert tokens.status_code == 200


def test_an_account_with_no_active_manager_is_flagged_on_the_list(staff, service_account, user):
    assert staff.get(f"{LIST}?managed=no").context["cl"].result_count == 1
    make_manager(user, service_account.team)
    assert staff.get(f"{LIST}?managed=no").context["cl"].result_count == 0
    assert staff.get(f"{LIST}?managed=yes").context["cl"].result_count == 1
    page = staff.get(f"{LIST}{service_account.pk}/change/").content.decode()
    assert "alice" in page  # the managers now
    user.is_active = False
    user.save()
    assert staff.get(f"{LIST}?managed=no").context["cl"].result_count == 1


def test_moving_to_another_team_and_deactivating_in_the_admin_are_recorded_and_take_effect(
    staff, staff_user, service_account, issue, client
):
    token, value = issue(service_account.user)
    ops = Group.objects.create(name="ops")
    response = staff.post(
        f"{LIST}{service_account.pk}/change/", {"team": ops.pk, "description": "moved", "is_active": ""}
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    service_account.refresh_from_db()
    assert (service_account.team, service_account.description) == (ops, "moved")
    assert not service_account.user.is_active
    kinds = set(
        TokenEvent.objects.filter(user=service_account.user, actor=staff_user).values_list("kind", flat=True)
    )
    assert {"team_changed", "account_deactivated"} <= kinds
    staff.logout()
    assert client.get("/api/users/me", **bearer(value)).status_code == 401
    assert Token.objects.get(pk=token.pk).revoked_at is None  # deactivated, not revoked: it can come back


def test_the_manager_role_is_granted_on_the_teams_page(staff, service_account, user):
    team = service_account.team
    user.groups.add(team)
    page = staff.get(f"/admin/auth/group/{team.pk}/change/").content.decode()
    assert "Managers of this team" in page and "manager_roles-TOTAL_FORMS" in page
    data = {
        "name": team.name,
        "manager_roles-TOTAL_FORMS": "1",
        "manager_roles-INITIAL_FORMS": "0",
        "manager_roles-0-user": str(user.pk),
        "manager_roles-0-granted_at_0": "2030-01-01",
        "manager_roles-0-granted_at_1": "00:00:00",
    }
    response = staff.post(f"/admin/auth/group/{team.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert ManagerRole.objects.filter(team=team, user=user).exists()
    assert list(ServiceAccount.objects.managed_by(user)) == [service_account]


def test_the_policy_page_sets_service_account_lifetimes_apart_or_leaves_them_empty(staff, policy):
    url = f"/admin/tokens/sitepolicy/{policy.pk}/change/"
    page = staff.get(url).content.decode()
    assert "service_account_maximum_lifetime" in page and "service_account_no_expiry" in page
    # As a browser sends the untouched field: no number, the unit preselected.
    empty = {"service_account_maximum_lifetime_0": "", "service_account_maximum_lifetime_1": "days"}
    assert staff.post(url, _policy_form(policy, **empty)).status_code == 302
    assert SitePolicy.load().service_account_maximum_lifetime is None
    longer = {
        "service_account_maximum_lifetime_0": "2",
        "service_account_maximum_lifetime_1": "years",
        "service_account_no_expiry": "on",
    }
    assert staff.post(url, _policy_form(policy, **longer)).status_code == 302
    saved = SitePolicy.load()
    assert (saved.service_account_maximum_lifetime.days, saved.service_account_no_expiry) == (730, True)
