"""A manager's whole path in Chromium: an administrator makes a service account, a manager runs its token."""

import re

import pytest
from django.contrib.auth.models import Group

from tokens.models import ServiceAccount, Token, TokenEvent

from ..helpers import PASSWORD
from .test_pages import call_api

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_administrator_creates_a_service_account_and_a_manager_creates_uses_and_rotates_its_token(
    page, staff_user, make_user, live_server, screenshot
):
    team = Group.objects.create(name="payments")
    manager = make_user("alice")
    manager.groups.add(team)

    # The administrator: the account, then the manager role on the team's page.
    page.goto("/admin/")
    page.get_by_label("Username").fill(staff_user.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto("/admin/tokens/serviceaccount/add/")
    page.get_by_label("Username").fill("payments-sync")
    page.get_by_label("Team").select_option(label="payments")
    page.get_by_label("Description").fill("Nightly ledger sync to the accounting system.")
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text("was added successfully").wait_for()
    account = ServiceAccount.objects.get()
    # Nobody manages it yet: the list says so.
    assert page.locator("td.field-has_manager img[alt='False']").count() == 1
    screenshot(page, "admin_service_accounts")

    page.goto(f"/admin/auth/group/{team.pk}/change/")
    page.locator("input[name='manager_roles-0-user']").fill(str(manager.pk))
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text("was changed successfully").wait_for()
    assert list(account.managers()) == [manager]
    page.goto("/admin/tokens/serviceaccount/")
    assert page.locator("td.field-has_manager img[alt='True']").count() == 1
    page.get_by_role("button", name="Log out").click()

    # The manager: Integrations shows the account; its token is made with the usual form.
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/profile/")
    page.get_by_role("link", name="Authorizations").first.click()
    section = page.get_by_role("region", name="Service account payments-sync")
    section.get_by_text("No token of this service account is in use").wait_for()
    section.get_by_role("link", name="New token for payments-sync").click()
    page.get_by_role("heading", name="New token for the service account payments-sync").wait_for()
    page.get_by_label("Name").fill("ledger-export")
    page.get_by_role("button", name="Create token").click()

    page.get_by_role("heading", name="Copy your new token").wait_for()
    page.get_by_text("belongs to the service account").wait_for()
    value = page.get_by_label("Value of “ledger-export”").input_value()
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == value
    screenshot(page, "service_account_token_reveal")
    status, body = call_api(live_server, headers={"Authorization": f"Bearer {value}"})
    assert (status, body["username"]) == (200, "payments-sync")

    # Reloading the reveal shows the token, never the value again.
    page.reload()
    page.wait_for_url(re.compile(r"/authorizations/\d+/$"))
    page.get_by_text("cannot be shown again").wait_for()
    assert value not in page.content()
    token = Token.objects.get(name="ledger-export")
    assert token.user == account.user

    # Rotate from its page, with the same form as one's own tokens.
    page.get_by_role("link", name="Rotate…").click()
    page.get_by_role("group", name="Old value keeps working for").get_by_label("1 hour").check()
    page.get_by_role("button", name="Rotate token").click()
    page.get_by_role("heading", name="Copy your new token").wait_for()
    new_value = page.get_by_label("Value of “ledger-export”").input_value()
    assert new_value != value
    assert call_api(live_server, headers={"Authorization": f"Bearer {new_value}"})[0] == 200
    page.reload()
    page.wait_for_url(re.compile(r"/authorizations/\d+/$"))
    assert new_value not in page.content()

    page.get_by_role("link", name="Authorizations").first.click()
    section = page.get_by_role("region", name="Service account payments-sync")
    assert section.get_by_role("link", name="ledger-export").count() == 2  # the new one and the rotating one
    screenshot(page, "integrations_service_accounts")
    section.get_by_role("link", name="Activity").click()
    stream = page.get_by_role("region", name="Activity Stream").inner_text()
    assert "Rotated ledger-export" in stream and "by alice" in stream
    screenshot(page, "service_account_activity")
    assert set(
        TokenEvent.objects.filter(user=account.user, token__isnull=False, kind__in=["created", "rotated"])
        .values_list("actor__username", flat=True)
        .distinct()
    ) == {"alice"}
