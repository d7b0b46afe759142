"""The pages in a real Chromium: create, copy, use, reload, rename, revoke, Activity Stream, legacy notice.

Each test is self-contained. Screenshots go to build/screenshots/ (`make screenshots` refreshes docs/).
"""

import json
import re
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Error as PlaywrightError

from tokens.models import LegacyApiKey, Token, UsageRecord
from tokens.usage.record import record as record_usage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LEGACY_KEY = "legacy-9f8e7d6c5b4a3210-key"


def call_api(live_server, path="/api/users/me", *, headers, agent="inventory-sync/2.1"):
    """Call the live server's API like an integration would; return (status, JSON body)."""
    request = urllib.request.Request(live_server.url + path, headers={"User-Agent": agent, **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def settled_content(page, attempts=20):
    """Return the page's HTML once Chromium has finished showing it (its error pages navigate twice)."""
    for _ in range(attempts):
        try:
            page.wait_for_load_state()
            return page.content()
        except PlaywrightError:
            page.wait_for_timeout(100)
    return page.content()


def backfill_usage(token, days):
    """Record older requests through the middleware's own write path, so the 30-day chart has history."""
    now = timezone.now()
    for day, count in days.items():
        for i in range(count):
            record_usage(
                token_id=token.pk,
                user_id=token.user_id,
                at=now - timedelta(days=day, minutes=i),
                accepted=i % 4 != 3,
                method="GET",
                path="/api/tokens",
                status=(401 if i % 4 == 3 else 200) if i % 5 else 404,
                ip=f"198.51.100.{day % 4 + 1}",
                user_agent="inventory-sync/2.0",
                duration_ms=4.0,
            )


def test_a_person_creates_copies_uses_renames_and_revokes_a_token(
    sign_in, user, page, live_server, screenshot
):
    sign_in(user)
    page.get_by_role("link", name="Authorizations").first.click()
    page.get_by_text("You have no tokens yet").wait_for()
    page.get_by_role("link", name="New token").click()

    page.get_by_label("Name").fill("Nightly backup")
    page.get_by_label("Purpose").fill("Backs up the wiki to nas01 every night.")
    assert page.get_by_label("30 days").is_checked()  # the policy default
    assert page.get_by_label("No expiry").count() == 0  # not allowed by the default policy
    page.get_by_label("7 days").check()
    screenshot(page, "token_new")
    page.get_by_role("button", name="Create token").click()

    page.get_by_role("heading", name="Copy your new token").wait_for()
    value = page.get_by_label("Value of “Nightly backup”").input_value()
    assert value.startswith("bpt_")
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == value
    screenshot(page, "token_reveal")

    status, body = call_api(live_server, headers={"Authorization": f"Bearer {value}"})
    assert (status, body["username"], body["auth"]["method"]) == (200, "alice", "bearer")

    # A reload resubmits the POST: the nonce makes it land on the token, without the value or a second token.
    page.reload()
    page.wait_for_url(re.compile(r"/authorizations/\d+/$"))
    page.get_by_text("cannot be shown again").wait_for()
    assert value not in page.content()
    assert Token.objects.count() == 1
    token = Token.objects.get()
    # Back goes to the create form, never to the value.
    page.go_back()
    assert value not in page.content()
    page.goto(f"/profile/integrations/authorizations/{token.pk}/")
    assert value not in page.content()

    page.get_by_label("New name").fill("Nightly wiki backup")
    page.get_by_role("button", name="Save name").click()
    page.get_by_text("Renamed “Nightly backup” to “Nightly wiki backup”.").wait_for()
    assert page.get_by_role("heading", level=1).inner_text().startswith("Nightly wiki backup")

    page.get_by_role("link", name="Revoke…").click()
    page.get_by_role("heading", name="Revoke “Nightly wiki backup”?").wait_for()
    page.get_by_role("button", name="Revoke token").click()
    page.get_by_text("Revoked “Nightly wiki backup”.").wait_for()
    assert "Revoked" in page.get_by_role("heading", level=1).inner_text()
    assert page.get_by_role("link", name="Revoke…").count() == 0
    assert call_api(live_server, headers={"Authorization": f"Bearer {value}"})[0] == 401

    page.get_by_role("link", name="Profile").first.click()
    stream = page.get_by_role("region", name="Activity Stream").inner_text()
    for step in (
        "Revoked Nightly wiki backup",
        "Renamed Nightly wiki backup",
        "First use of Nightly wiki backup",
        "Created Nightly wiki backup",
    ):
        assert step in stream, step
    assert (
        stream.index("Revoked")
        < stream.index("Renamed")
        < stream.index("First use")
        < stream.index("Created")
    )
    screenshot(page, "profile")
    assert value not in page.content()


def test_going_back_to_the_reveal_never_shows_the_value_again(sign_in, user, page):
    sign_in(user)
    page.goto("/profile/integrations/authorizations/new/")
    page.get_by_label("Name").fill("Back button")
    page.get_by_role("button", name="Create token").click()
    value = page.get_by_role("textbox", name="Value of “Back button”").input_value()
    page.get_by_role("link", name="I have copied it: go to the token").click()
    page.wait_for_url(re.compile(r"/authorizations/\d+/$"))
    # no-store: Chromium may not show the reveal from its cache; it offers to resubmit the form instead.
    try:
        page.go_back()
    except PlaywrightError as error:
        assert "ERR_CACHE_MISS" in error.message
    assert value not in settled_content(page)
    page.reload()  # resubmit: the nonce turns it into the token's page, not a second token
    page.wait_for_url(re.compile(r"/authorizations/\d+/$"))
    page.get_by_text("cannot be shown again").wait_for()
    assert value not in page.content()
    assert Token.objects.count() == 1


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_the_list_and_the_detail_page_show_tokens_and_their_usage(
    sign_in, user, issue, page, live_server, screenshot
):
    old, _ = issue(user, name="Old deploy key", days=1, purpose="Replaced by the CI token.")
    Token.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=40), expires_at=timezone.now() - timedelta(days=2)
    )
    retired, _ = issue(user, name="Laptop script", days=90)
    retired.revoke(actor=user)
    issue(user, name="Grafana", days=365, purpose="Dashboards read the API.")
    # 45 days is "in 1 month" from any day of the year (30 days is "4 weeks" across a 31-day month).
    token, value = issue(user, name="CI pipeline", days=45, purpose="Deploys from the main branch.")
    backfill_usage(token, {27: 4, 21: 9, 14: 6, 9: 12, 6: 7, 3: 15, 2: 5, 1: 10})
    for _ in range(6):
        assert (
            call_api(live_server, headers={"Authorization": f"Bearer {value}"}, agent="ci-runner/5.3")[0]
            == 200
        )
    assert (
        call_api(
            live_server, "/api/users", headers={"Authorization": f"Bearer {value}"}, agent="ci-runner/5.3"
        )[0]
        == 403
    )

    sign_in(user)
    page.goto("/profile/integrations/authorizations/")
    rows = page.locator("table tbody tr")
    assert rows.count() == 4
    assert rows.first.inner_text().startswith("CI pipeline")  # newest first
    newest, oldest = rows.first.inner_text().replace("\xa0", " "), rows.last.inner_text().replace("\xa0", " ")
    assert "Expired" in oldest and "2 days ago" in oldest
    assert "in 1 month" in newest
    screenshot(page, "token_list")
    page.get_by_role("link", name="Revoked 1").click()
    assert page.locator("table tbody tr").count() == 1
    assert "Laptop script" in page.locator("table tbody tr").inner_text()

    page.goto("/profile/integrations/authorizations/")
    page.get_by_role("link", name="CI pipeline").click()
    usage = page.get_by_role("region", name="Usage")
    assert "60 requests in total" in usage.locator(".stats").inner_text().replace(
        "\n", " "
    )  # 54 + 6 live, accepted; the 403 for a missing permission is a refused use
    chart = page.get_by_role("img", name="Requests per day, last 30 days")
    assert chart.is_visible()
    assert page.locator(".chart-bar").count() >= 9
    latest = page.get_by_role("table", name="Latest requests, newest first")
    assert "ci-runner/5.3" in latest.inner_text()
    assert latest.locator(".http-4xx").count() >= 1
    screenshot(page, "token_detail")
    assert value not in page.content()


def test_a_user_whose_legacy_key_is_still_used_is_told_how_to_migrate(
    sign_in, user, policy, page, live_server, screenshot
):
    # (policy: a transactional test before this one flushed the row the migration created.)
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    status, body = call_api(live_server, headers={"Rest-Api-Key": LEGACY_KEY}, agent="wiki-sync/0.9 (cron)")
    assert (status, body["auth"]["method"]) == (200, "legacy_key")

    sign_in(user)
    page.get_by_role("link", name="Authorizations").first.click()
    notice = page.get_by_role("region", name="Your legacy API key is deprecated and still in use")
    text = notice.inner_text()
    for expected in (
        "wiki-sync/0.9 (cron)",
        "127.0.0.1",
        "no sunset date set yet",
        "Authorization: Bearer",
        "Rest-Api-Key",
        "an administrator can revoke it",
    ):
        assert expected in text, expected
    notice.get_by_role("link", name="Create a token").wait_for()
    assert (
        notice.get_by_role("link", name=re.compile("migration guide")).get_attribute("href")
        == "/docs/migration/"
    )
    screenshot(page, "integrations_legacy_notice")
    assert LEGACY_KEY not in page.content()


@pytest.mark.no_javascript
def test_without_javascript_a_person_still_creates_reads_and_revokes_a_token(
    sign_in, user, page, live_server
):
    sign_in(user)
    page.goto("/profile/integrations/authorizations/new/")
    page.get_by_label("Name").fill("No-script client")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("heading", name="Copy your new token").wait_for()
    value = page.get_by_label("Value of “No-script client”").input_value()
    assert not page.get_by_role("button", name="Copy").is_visible()  # only JavaScript reveals it
    assert call_api(live_server, headers={"Authorization": f"Bearer {value}"})[0] == 200

    token = Token.objects.get(name="No-script client")
    page.goto(f"/profile/integrations/authorizations/{token.pk}/")
    page.get_by_role("link", name="Revoke…").click()
    page.get_by_role("button", name="Revoke token").click()
    page.get_by_text("Revoked “No-script client”.").wait_for()
    assert call_api(live_server, headers={"Authorization": f"Bearer {value}"})[0] == 401


def test_a_person_creates_a_read_only_token_bound_to_addresses_and_narrows_it_further(
    sign_in, user, page, live_server
):
    sign_in(user)
    page.goto(live_server.url + "/profile/integrations/authorizations/new/")
    page.get_by_label("Name", exact=True).fill("Dashboard")
    assert page.get_by_label("Read and write").is_checked()  # the policy default
    assert page.get_by_label("All my permissions").is_checked()
    page.get_by_label("Read only").check()
    page.get_by_label("Allowed addresses").fill("127.0.0.1\n2001:db8::/32")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("heading", name="Copy your new token").wait_for()
    value = page.get_by_label("Value of “Dashboard”").input_value()
    token = Token.objects.get(name="Dashboard")
    assert (token.access, token.permissions, token.allowed_ips) == (
        "read",
        None,
        ["127.0.0.1", "2001:db8::/32"],
    )

    auth = {"Authorization": f"Bearer {value}"}
    status, body = call_api(live_server, headers=auth)
    assert status == 200 and body["auth"]["access"] == "read"
    request = urllib.request.Request(
        f"{live_server.url}/api/tokens/{token.pk}", method="DELETE", headers=auth
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert 'scope="write"' in refused.value.headers["WWW-Authenticate"]

    # The list shows the limits at a glance; the token page says them in words and changes them.
    page.goto(live_server.url + "/profile/integrations/authorizations/")
    row = page.get_by_role("row").filter(has_text="Dashboard")
    assert "Read only" in row.inner_text() and "2 addresses" in row.inner_text()
    row.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(re.compile(r"/authorizations/\d+/$"))
    assert "Read only: it can look" in page.content()
    page.get_by_text("Change what it can do").click()
    page.get_by_label("Allowed addresses").fill("192.0.2.1")
    page.get_by_role("button", name="Save limits").click()
    page.get_by_text("Only these addresses:").wait_for()
    assert "192.0.2.1" in page.content()
    status, body = call_api(live_server, headers=auth)
    assert status == 403 and body["error"] == "ip_not_allowed" and "127.0.0.1" in body["detail"]
    assert UsageRecord.objects.filter(token=token, accepted=False).count() == 2


def test_a_person_rotates_a_token_with_an_overlap_and_both_values_work_until_it_ends(
    sign_in, user, page, live_server
):
    token, old_value = Token.objects.issue(
        user=user, name="Inventory sync", expires_at=timezone.now() + timedelta(days=30)
    )
    sign_in(user)
    page.goto(f"/profile/integrations/authorizations/{token.pk}/")
    page.get_by_role("link", name="Rotate…").click()
    page.get_by_role("heading", name="Rotate “Inventory sync”").wait_for()
    assert page.get_by_label("The same lifetime as now: 30 days").is_checked()
    page.get_by_role("group", name="Old value keeps working for").get_by_label("1 hour").check()
    page.get_by_role("button", name="Rotate token").click()

    page.get_by_role("heading", name="Copy your new token").wait_for()
    value = page.get_by_label("Value of “Inventory sync”").input_value()
    assert value.startswith("bpt_") and value != old_value
    page.get_by_text("keeps working until").wait_for()
    assert call_api(live_server, headers={"Authorization": f"Bearer {value}"})[0] == 200
    assert call_api(live_server, headers={"Authorization": f"Bearer {old_value}"})[0] == 200

    # A reload rotates nothing more and never shows the value again.
    page.reload()
    page.wait_for_url(re.compile(r"/authorizations/\d+/$"))
    page.get_by_text("cannot be shown again").wait_for()
    assert value not in page.content() and Token.objects.count() == 2
    new = Token.objects.get(replaces=token)
    assert page.get_by_role("link", name=re.compile("Inventory sync")).count() >= 1  # "Replaces" link
    page.goto(f"/profile/integrations/authorizations/{token.pk}/")
    assert "Rotating" in page.get_by_role("heading", level=1).inner_text()
    assert page.get_by_role("link", name="Rotate…").count() == 0
    page.get_by_role("link", name=re.compile(rf"…{new.last_characters}")).click()
    page.wait_for_url(re.compile(rf"/authorizations/{new.pk}/$"))

    page.get_by_role("link", name="Profile").first.click()
    assert "Rotated Inventory sync" in page.get_by_role("region", name="Activity Stream").inner_text()
