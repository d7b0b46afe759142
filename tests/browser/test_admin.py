"""The admin in a real Chromium, under the site's Content-Security-Policy, with screenshots for docs/."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tokens.models import BrownoutWindow, LegacyApiKey, SitePolicy, Token, TokenEvent
from tokens.usage.record import record as record_usage

from ..helpers import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def csp_violations(page):
    """Collect the browser's reports of anything the Content-Security-Policy blocked on the site's pages.

    axe-core, which the page fixture runs on every page, tries styles of its own while it measures;
    those reports come from code Playwright evaluates, which has no URL, and are left out.
    """
    seen = []

    def collect(message):
        if "Content Security Policy" in message.text and message.location.get("url"):
            seen.append(message.text)

    page.on("console", collect)
    return seen


@pytest.fixture
def admin_page(page, staff_user):
    page.goto("/admin/")
    page.get_by_label("Username").fill(staff_user.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    return page


def _record(*, day, token=None, key=None, count, ip, agent, would_refuse=False):
    at = timezone.now() - timedelta(days=day)
    owner = (token or key).user_id
    for _ in range(count):
        record_usage(
            token_id=token.pk if token else None,
            legacy_key_id=key.pk if key else None,
            user_id=owner,
            at=at,
            accepted=True,
            method="GET",
            path="/api/users/me",
            status=200,
            ip=ip,
            user_agent=agent,
            duration_ms=3.0,
            would_refuse=would_refuse,
        )


@pytest.fixture
def populated(make_user, staff_user):
    """A site in the middle of its migration: tokens in every state, keys still in use, a month of traffic."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    SitePolicy.load()  # the row, even after a live test flushed the database
    SitePolicy.objects.filter(pk=1).update(no_expiry_allowed_for="staff")
    now = timezone.now()

    def issue(user, name, days, **extra):
        return Token.objects.issue(
            user=user, name=name, expires_at=now + timedelta(days=days) if days else None, **extra
        )[0]

    deploy = issue(alice, "deploy-bot", 300)
    backup = issue(bob, "nightly-backup", 30, purpose="pg_dump upload")
    issue(carol, "laptop-cli", 5)
    issue(staff_user, "monitoring", None)
    issue(alice, "old-ci", 20).revoke(actor=staff_user)
    expired = issue(bob, "spring-import", 2)
    Token.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(days=3))
    alice_key = LegacyApiKey.objects.import_key(user=alice, key="alice-legacy-key-000000001")[0]
    bob_key = LegacyApiKey.objects.import_key(user=bob, key="bob-legacy-key-0000000002")[0]
    LegacyApiKey.objects.import_key(user=carol, key="carol-legacy-key-000000003")
    # Oldest day first, as real traffic arrives: legacy use fades while bearer use grows.
    for day in reversed(range(30)):
        _record(day=day, key=alice_key, count=2 + day // 2, ip="203.0.113.7", agent="legacy-sync/2.1")
        if day % 3 == 0:
            _record(day=day, key=bob_key, count=3, ip="198.51.100.20", agent="curl/7.88.1")
        if day < 20:
            _record(day=day, token=deploy, count=20 - day, ip="192.0.2.10", agent="python-requests/2.32")
        if day < 12:
            _record(day=day, token=backup, count=4, ip="192.0.2.11", agent="backup/1.4")
    # The maximum lowered after deploy-bot was made: it now exceeds the policy.
    SitePolicy.objects.filter(pk=1).update(maximum_lifetime=timedelta(days=90))


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_an_administrator_sees_the_token_list_policy_and_migration_overview(
    admin_page, populated, screenshot, csp_violations
):
    page = admin_page
    # Wide enough for every column of the token list beside the admin's navigation sidebar.
    page.set_viewport_size({"width": 1680, "height": 900})
    page.locator('#content-main a[href="/admin/tokens/token/"]').first.click()
    page.wait_for_url("**/admin/tokens/token/")
    expect(page.get_by_role("link", name="deploy-bot")).to_be_visible()
    expect(page.get_by_label("Find a token by its value")).to_be_visible()
    screenshot(page, "admin_tokens")

    page.get_by_role("link", name="active and living longer than the maximum").click()
    page.wait_for_url("**/admin/tokens/token/?exceeds=yes")
    expect(page.get_by_role("link", name="deploy-bot")).to_be_visible()
    expect(page.get_by_role("link", name="nightly-backup")).to_have_count(0)

    page.goto("/admin/")
    page.locator('#content-main a[href="/admin/tokens/sitepolicy/"]').first.click()
    page.wait_for_url("**/admin/tokens/sitepolicy/1/change/")
    expect(page.get_by_text("2 active tokens live longer than the maximum.")).to_be_visible()
    assert page.get_by_role("button", name="Delete").count() == 0
    screenshot(page, "admin_policy")

    page.goto("/admin/tokens/legacyapikey/")
    page.get_by_role("link", name="Migration overview").click()
    page.wait_for_url("**/admin/tokens/legacyapikey/migration/")
    expect(page.get_by_role("img", name="Accepted API requests per day, last 30 days")).to_be_visible()
    expect(page.locator(".migration-clients").get_by_text("203.0.113.7")).to_be_visible()
    screenshot(page, "admin_migration")

    # The read-only records load cleanly under the policy too.
    page.goto("/admin/tokens/usagerecord/?status_class=2xx")
    expect(page.locator("#result_list")).to_be_visible()
    page.goto("/admin/tokens/tokenevent/")
    expect(page.locator("#result_list")).to_be_visible()
    assert not csp_violations, csp_violations


@pytest.mark.clock
def test_an_administrator_rehearses_schedules_a_brownout_and_tells_the_owners(
    admin_page, populated, screenshot, csp_violations
):
    page = admin_page
    page.set_viewport_size({"width": 1680, "height": 900})
    # Two weeks of a High rehearsal: the keys' requests were served and marked "would be refused".
    SitePolicy.objects.filter(pk=1).update(
        rehearsal_level="high",
        rehearsal_started_at=timezone.now() - timedelta(days=14),
        maximum_lifetime=timedelta(days=365),
    )
    alice_key, bob_key = LegacyApiKey.objects.order_by("pk")[:2]
    for day in reversed(range(14)):
        _record(
            day=day,
            key=alice_key,
            count=2 + day // 3,
            ip="203.0.113.7",
            agent="legacy-sync/2.1",
            would_refuse=True,
        )
        if day % 4 == 0:
            _record(day=day, key=bob_key, count=3, ip="198.51.100.20", agent="curl/7.88.1", would_refuse=True)

    page.goto("/admin/tokens/sitepolicy/1/change/")
    # Lifetimes read as a person thinks: a number and a unit.
    expect(page.locator("input[name=default_lifetime_0]")).to_have_value("30")
    expect(page.locator("select[name=default_lifetime_1]")).to_have_value("days")
    expect(page.locator("input[name=maximum_lifetime_0]")).to_have_value("1")
    expect(page.locator("select[name=maximum_lifetime_1]")).to_have_value("years")
    expect(page.locator(".transition-numbers")).to_contain_text("Legacy keys used in the last 30 days")
    starts = timezone.now() + timedelta(days=7)
    page.locator("input[name=brownouts-0-starts_at_0]").fill(starts.strftime("%Y-%m-%d"))
    page.locator("input[name=brownouts-0-starts_at_1]").fill("10:00:00")
    page.locator("input[name=brownouts-0-ends_at_0]").fill(starts.strftime("%Y-%m-%d"))
    page.locator("input[name=brownouts-0-ends_at_1]").fill("11:00:00")
    page.locator("input[name=brownouts-0-note]").fill("first brownout")
    screenshot(page, "admin_policy_transition")
    page.get_by_role("button", name="Save and continue editing").click()
    expect(page.get_by_text("was changed successfully")).to_be_visible()
    assert BrownoutWindow.objects.get().note == "first brownout"
    assert TokenEvent.objects.filter(kind="brownout_changed").count() == 1

    page.goto("/admin/tokens/legacyapikey/migration/")
    expect(page.get_by_role("img", name="Requests the rehearsed level would refuse, per day")).to_be_visible()
    expect(page.locator(".rehearsal-verdict")).to_contain_text("requests would fail")
    expect(page.locator(".rehearsal-clients").get_by_text("legacy-sync/2.1")).to_be_visible()
    expect(page.locator(".brownouts").get_by_text("first brownout")).to_be_visible()
    screenshot(page, "admin_migration_rehearsal")
    page.get_by_role("button", name="E-mail the owners of keys still in use").click()
    expect(page.get_by_text("Mailed 2 owners about 2 legacy keys.")).to_be_visible()
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.com", "bob@example.com"]
    page.get_by_role("button", name="E-mail the owners of keys still in use").click()
    expect(page.get_by_text("Nobody new to mail")).to_be_visible()
    assert len(mail.outbox) == 2
    assert not csp_violations, csp_violations


def test_an_administrator_revokes_a_leaked_token_found_by_its_value(admin_page, make_user, csp_violations):
    owner = make_user("alice")
    token, value = Token.objects.issue(
        user=owner, name="deploy-bot", expires_at=timezone.now() + timedelta(days=9)
    )
    page = admin_page
    page.goto("/admin/tokens/token/")
    page.get_by_label("Find a token by its value").fill(value)
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(f"**/admin/tokens/token/?id__exact={token.pk}")
    assert value not in page.url and value not in page.content()
    expect(page.get_by_text("That value is token “deploy-bot” of alice (active)")).to_be_visible()
    page.locator("input[name=_selected_action]").check()
    page.locator("select[name=action]").select_option("revoke_selected")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_text("Revoked 1 token.")).to_be_visible()
    token.refresh_from_db()
    assert token.status == "revoked"
    assert not csp_violations, csp_violations


def test_an_administrator_adds_a_token_for_a_service_account_and_sees_the_value_once(
    admin_page, make_user, csp_violations
):
    service = make_user("backup-service")
    page = admin_page
    page.goto("/admin/tokens/token/add/")
    page.get_by_label("Owner").fill(str(service.pk))
    page.get_by_label("Name").fill("nightly-backup")
    page.get_by_role("button", name="Save", exact=True).click()
    value = page.get_by_label("Token value").input_value()
    assert value.startswith("bpt_")
    expect(page.get_by_text("will not be shown again")).to_be_visible()
    token = Token.objects.get(name="nightly-backup")
    assert token.user == service and Token.objects.find_by_value(value) == token
    page.get_by_role("link", name="Open the token").click()
    expect(page.get_by_text("backup-service")).to_be_visible()
    assert value not in page.content()
    # Back to the reveal: the browser kept no copy of it (no-store) and does not show the value again.
    with pytest.raises(PlaywrightError, match="ERR_CACHE_MISS"):
        page.go_back()
    expect(page.get_by_label("Token value")).to_have_count(0)
    expect(page.get_by_text(value)).to_have_count(0)
    assert Token.objects.count() == 1
    assert not csp_violations, csp_violations
