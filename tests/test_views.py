"""The HTML pages through the test client and the real database: what a signed-in person sees and does."""

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tokens.models import BrownoutWindow, LegacyApiKey, SitePolicy, Token, TokenEvent, UsageRecord
from tokens.usage.record import record as record_usage

from .helpers import PASSWORD, bearer

pytestmark = pytest.mark.django_db

LIST = reverse("tokens:list")
NEW = reverse("tokens:new")
LEGACY_KEY = "legacy-key-0123456789abcdef"


def detail(token):
    return reverse("tokens:detail", args=[token.pk])


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def new_form(client):
    """GET the create form and return its fields as POST data (the nonce included)."""
    html = client.get(NEW).content.decode()
    nonce = re.search(r'name="nonce" value="([^"]+)"', html).group(1)
    return {
        "name": "deploy bot",
        "purpose": "CI deploys",
        "expiry": "30d",
        "custom_expiry": "",
        "nonce": nonce,
    }


def record(token, *, status=200, ip="192.0.2.10", at=None, path="/api/users/me"):
    """Write one usage record through the same call the API middleware makes."""
    record_usage(
        token_id=token.pk,
        user_id=token.user_id,
        at=at or timezone.now(),
        accepted=status < 400 or status >= 500,
        method="GET",
        path=path,
        status=status,
        ip=ip,
        user_agent="curl/8.5",
        duration_ms=3.2,
    )


# --- sign-in and ownership ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/profile/",
        LIST,
        NEW,
        "/profile/integrations/authorizations/1/",
        "/profile/integrations/authorizations/1/revoke/",
    ],
)
def test_every_page_asks_an_anonymous_visitor_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_another_users_token_is_404_on_every_page_and_action(signed_in, other_user, issue):
    token, _value = issue(other_user, name="bob's")
    assert signed_in.get(detail(token)).status_code == 404
    assert signed_in.get(detail(token) + "revoke/").status_code == 404
    assert signed_in.post(detail(token) + "revoke/").status_code == 404
    assert signed_in.post(detail(token) + "rename/", {"name": "mine now"}).status_code == 404
    token.refresh_from_db()
    assert token.name == "bob's" and token.revoked_at is None
    assert not TokenEvent.objects.filter(token=token).exclude(kind="created").exists()


def test_a_missing_token_is_404_like_another_users(signed_in):
    assert signed_in.get("/profile/integrations/authorizations/999999/").status_code == 404


@pytest.mark.parametrize("action", ["create", "rename", "revoke"])
def test_every_form_refuses_a_post_without_the_csrf_token(user, issue, action):
    token, _value = issue(user)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    url, data = {
        "create": (NEW, {"name": "x", "expiry": "1d", "nonce": "n" * 43}),
        "rename": (detail(token) + "rename/", {"name": "renamed"}),
        "revoke": (detail(token) + "revoke/", {}),
    }[action]
    assert browser.post(url, data).status_code == 403
    token.refresh_from_db()
    assert token.name == "ci" and token.revoked_at is None
    assert Token.objects.count() == 1


def test_every_form_on_the_pages_carries_a_csrf_token(signed_in, issue, user):
    token, _value = issue(user)
    for url in (NEW, detail(token), detail(token) + "revoke/"):
        html = signed_in.get(url).content.decode()
        forms = html.count("<form")
        assert forms and html.count('name="csrfmiddlewaretoken"') == forms, url


def test_pages_send_a_strict_csp_and_carry_no_inline_script_or_style(signed_in, issue, user):
    token, _value = issue(user)
    for url in ("/profile/", LIST, NEW, detail(token), detail(token) + "revoke/"):
        response = signed_in.get(url)
        assert "script-src 'self'" in response["Content-Security-Policy"]
        html = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert " style=" not in html and "<style" not in html, url


# --- the list -----------------------------------------------------------------------------------------------


def test_the_empty_list_says_what_to_do(signed_in):
    html = signed_in.get(LIST).content.decode()
    assert "You have no tokens yet" in html
    assert f'href="{NEW}"' in html


def test_the_list_shows_each_token_newest_first_with_hints_and_status(signed_in, user, issue):
    older, _ = issue(user, name="older", days=3)
    Token.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(days=2))
    newer, _ = issue(user, name="newer", days=90)
    newer.revoke(actor=user)
    html = signed_in.get(LIST).content.decode()
    assert html.index("newer") < html.index("older")
    assert "in 2\xa0days" in html or "in 3\xa0days" in html  # "older" expires in about 3 days
    assert "2\xa0days ago" in html  # ...and was created 2 days ago
    assert "Revoked" in html and "Active" in html
    assert "New token" in html


def test_the_status_filters_show_only_matching_tokens(signed_in, user, issue):
    issue(user, name="alive")
    gone, _ = issue(user, name="gone")
    gone.revoke(actor=user)
    dead, _ = issue(user, name="dead", days=1)
    Token.objects.filter(pk=dead.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    for status, shown in (("active", "alive"), ("revoked", "gone"), ("expired", "dead")):
        html = signed_in.get(LIST, {"status": status}).content.decode()
        names = set(re.findall(r'class="token-name"[^>]*>([^<]+)<', html))
        assert names == {shown}, status


def test_an_empty_filter_tells_the_user_and_links_back_to_all(signed_in, user, issue):
    issue(user)
    html = signed_in.get(LIST, {"status": "revoked"}).content.decode()
    assert "No revoked tokens." in html and "Show all tokens" in html


def test_the_list_is_paginated(signed_in, user, issue):
    for i in range(23):
        issue(user, name=f"t{i:02d}")
    first = signed_in.get(LIST).content.decode()
    second = signed_in.get(LIST, {"page": 2}).content.decode()
    assert "t22" in first and "t02" not in first
    assert "t02" in second and "Page 2 of 2" in second


def test_the_list_costs_the_same_queries_for_1_or_50_tokens(signed_in, user, issue):
    issue(user, name="first")
    with CaptureQueriesContext(connection) as one:
        assert signed_in.get(LIST).status_code == 200
    for i in range(49):
        issue(user, name=f"more {i}")
    with CaptureQueriesContext(connection) as fifty:
        assert signed_in.get(LIST).status_code == 200
    assert len(fifty) == len(one), [q["sql"] for q in fifty]


# --- the create form ----------------------------------------------------------------------------------------


def test_the_form_offers_the_policy_presets_with_the_default_selected_and_no_never(signed_in, policy):
    html = signed_in.get(NEW).content.decode()
    for key in ("1h", "1d", "7d", "30d", "90d", "1y", "custom"):
        assert f'value="{key}"' in html
    assert re.search(r'value="30d"[^>]*checked', html)
    assert 'value="never"' not in html
    assert 'type="datetime-local"' in html


def test_the_form_offers_no_expiry_only_while_the_policy_allows_it(client, user, staff_user, policy):
    policy.no_expiry_allowed_for = SitePolicy.NoExpiry.STAFF
    policy.save()
    client.force_login(user)
    assert 'value="never"' not in client.get(NEW).content.decode()
    client.force_login(staff_user)
    assert 'value="never"' in client.get(NEW).content.decode()


def test_a_default_that_is_no_preset_preselects_a_prefilled_custom_date(signed_in, policy):
    policy.default_lifetime = timedelta(days=14)
    policy.save()
    html = signed_in.get(NEW).content.decode()
    assert re.search(r'value="custom"[^>]*checked', html)
    expected = timezone.localtime(timezone.now() + timedelta(days=14)).strftime("%Y-%m-%dT")
    assert re.search(rf'name="custom_expiry" value="{expected}\d\d:\d\d"', html)


def test_a_forged_never_is_refused_and_creates_nothing(signed_in):
    data = new_form(signed_in) | {"expiry": "never"}
    response = signed_in.post(NEW, data)
    assert response.status_code == 400
    assert Token.objects.count() == 0
    assert "Select a valid choice" in response.content.decode()


@pytest.mark.parametrize("offset", [timedelta(minutes=2), timedelta(days=400), -timedelta(days=1)])
def test_a_custom_date_outside_the_policy_is_refused_next_to_the_field(signed_in, offset):
    when = timezone.localtime(timezone.now() + offset).strftime("%Y-%m-%dT%H:%M")
    response = signed_in.post(NEW, new_form(signed_in) | {"expiry": "custom", "custom_expiry": when})
    assert response.status_code == 400
    assert Token.objects.count() == 0
    html = response.content.decode()
    error = re.search(r'name="custom_expiry".*?<p class="field-error">([^<]+)</p>', html, re.S)
    assert error and ("lifetime" in error.group(1) or "future" in error.group(1))


def test_a_custom_date_is_read_in_the_site_time_zone(signed_in, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    when = (
        (timezone.now() + timedelta(days=10))
        .astimezone(ZoneInfo("Europe/Berlin"))
        .replace(second=0, microsecond=0)
    )
    response = signed_in.post(
        NEW, new_form(signed_in) | {"expiry": "custom", "custom_expiry": when.strftime("%Y-%m-%dT%H:%M")}
    )
    assert response.status_code == 200
    assert Token.objects.get().expires_at == when


def test_a_custom_choice_without_a_date_asks_for_one(signed_in):
    response = signed_in.post(NEW, new_form(signed_in) | {"expiry": "custom"})
    assert response.status_code == 400
    assert "Pick the date and time" in response.content.decode()


def test_a_name_already_in_use_is_refused_next_to_the_name(signed_in, user, issue):
    issue(user, name="deploy bot")
    response = signed_in.post(NEW, new_form(signed_in))
    assert response.status_code == 400
    assert re.search(
        r'name="name".*?field-error"[^>]*>An active token of this owner already has this name',
        response.content.decode(),
        re.S,
    )
    assert Token.objects.count() == 1


def test_the_token_limit_shows_as_a_form_error(signed_in, user, issue, policy):
    policy.max_active_tokens = 1
    policy.save()
    issue(user, name="only one")
    response = signed_in.post(NEW, new_form(signed_in))
    assert response.status_code == 400
    assert 'class="alert alert-error"' in response.content.decode()
    assert "limit of 1 active tokens" in response.content.decode()


# --- the reveal ---------------------------------------------------------------------------------------------


@pytest.mark.clock
def test_creating_answers_with_the_reveal_once_and_never_stores_the_value(signed_in, user):
    response = signed_in.post(NEW, new_form(signed_in))
    assert response.status_code == 200
    assert "tokens/token_reveal.html" in [t.name for t in response.templates]
    assert "no-store" in response["Cache-Control"]
    token = Token.objects.get()
    value = response.context["plaintext"]
    html = response.content.decode()
    assert value.endswith(token.last_characters) and f'value="{value}"' in html
    assert "only time the value is shown" in html
    assert (token.name, token.purpose, token.user) == ("deploy bot", "CI deploys", user)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert TokenEvent.objects.filter(token=token, kind="created", actor=user).exists()
    # Nowhere on the server: not in the session, not in a message waiting for the next page.
    for session in Session.objects.all():
        assert value not in str(session.get_decoded())
    for url in (detail(token), LIST, "/profile/", detail(token) + "revoke/", NEW):
        assert value not in signed_in.get(url).content.decode(), url
    # ...and it works, once, for the API.
    assert Client().get("/api/users/me", **bearer(value)).json()["username"] == user.username


def test_resubmitting_the_create_form_creates_nothing_and_lands_on_the_token(signed_in):
    data = new_form(signed_in)
    first = signed_in.post(NEW, data)
    value = first.context["plaintext"]
    again = signed_in.post(NEW, data, follow=True)
    token = Token.objects.get()
    assert again.redirect_chain == [(detail(token), 303)]
    html = again.content.decode()
    assert value not in html
    assert "cannot be shown again" in html
    assert Token.objects.count() == 1
    assert TokenEvent.objects.filter(kind="created").count() == 1


def test_another_users_nonce_never_reveals_or_redirects_to_their_token(client, user, other_user):
    client.force_login(user)
    data = new_form(client)
    client.post(NEW, data)
    client.force_login(other_user)
    response = client.post(NEW, data)
    assert response.status_code == 200  # a new token of their own, not a redirect to alice's
    assert Token.objects.filter(user=other_user).count() == 1


def test_a_post_without_its_nonce_is_refused_and_creates_nothing(signed_in):
    data = new_form(signed_in)
    del data["nonce"]
    response = signed_in.post(NEW, data)
    assert response.status_code == 400
    assert "This form is out of date" in response.content.decode()
    assert Token.objects.count() == 0


def test_a_second_form_gets_a_fresh_nonce(signed_in):
    assert new_form(signed_in)["nonce"] != new_form(signed_in)["nonce"]


# --- detail, rename, revoke ---------------------------------------------------------------------------------


def test_the_detail_page_shows_all_metadata_but_not_the_value(signed_in, user, issue):
    token, value = issue(user, name="metrics", purpose="Grafana scraper")
    record(token, ip="198.51.100.7")
    html = signed_in.get(detail(token)).content.decode()
    for text in (
        "metrics",
        "Grafana scraper",
        "Active",
        "…" + token.last_characters,
        "198.51.100.7",
        "curl/8.5",
    ):
        assert text in html, text
    assert value not in html


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_the_detail_page_shows_usage_chart_counts_and_latest_requests(signed_in, user, issue):
    token, _value = issue(user)
    now = timezone.now()
    record(token, ip="192.0.2.1", at=now - timedelta(days=3))
    record(token, ip="192.0.2.2", status=404, path="/api/users/9")
    record(token, ip="192.0.2.2", status=500, path="/api/boom")
    response = signed_in.get(detail(token))
    html = response.content.decode()
    assert re.search(r'<svg[^>]*role="img"', html) and '<title id="usage-chart-title">' in html
    assert html.count('class="chart-bar series-accepted"') == 2  # today and three days ago
    assert html.count('class="chart-bar series-refused"') == 1
    assert "3 requests from" in html  # the summary screen readers get
    assert response.context["address_count"] == 2
    assert (
        'class="http http-4xx"' in html
        and 'class="http http-5xx"' in html
        and 'class="http http-2xx"' in html
    )
    assert html.index("/api/boom") < html.index("/api/users/9")  # newest first


def test_older_requests_are_reached_by_the_older_link(signed_in, user, issue):
    token, _value = issue(user)
    start = timezone.now() - timedelta(hours=1)
    for i in range(30):
        record(token, path=f"/api/r{i:02d}", at=start + timedelta(seconds=i))
    first = signed_in.get(detail(token))
    html = first.content.decode()
    assert "/api/r29" in html and "/api/r05" in html and "/api/r04" not in html
    older = re.search(r'href="\?before=(\d+)#recent"', html).group(1)
    html = signed_in.get(detail(token), {"before": older}).content.decode()
    assert "/api/r04" in html and "/api/r00" in html and "/api/r05" not in html
    assert "?before=" not in html  # nothing older


def test_an_older_page_cursor_from_another_token_is_404(signed_in, user, issue):
    mine, _ = issue(user, name="mine")
    other, _ = issue(user, name="other")
    record(other)
    cursor = UsageRecord.objects.get(token=other).pk
    assert signed_in.get(detail(mine), {"before": cursor}).status_code == 404


def test_the_detail_page_costs_the_same_queries_for_1_or_200_usage_records(signed_in, user, issue):
    token, _value = issue(user)
    record(token)
    with CaptureQueriesContext(connection) as one:
        assert signed_in.get(detail(token)).status_code == 200
    for i in range(199):
        record(token, ip=f"10.0.{i // 250}.{i % 250}", at=timezone.now() - timedelta(days=i % 40))
    with CaptureQueriesContext(connection) as many:
        assert signed_in.get(detail(token)).status_code == 200
    assert len(many) == len(one), [q["sql"] for q in many]
    older = re.search(r"\?before=(\d+)", signed_in.get(detail(token)).content.decode()).group(1)
    with CaptureQueriesContext(connection) as paged:
        assert signed_in.get(detail(token), {"before": older}).status_code == 200
    assert len(paged) == len(one) + 1  # the cursor row's time


def test_renaming_changes_the_name_and_writes_an_event(signed_in, user, issue):
    token, _value = issue(user, name="old name")
    response = signed_in.post(detail(token) + "rename/", {"name": "  new name  "}, follow=True)
    assert response.redirect_chain == [(detail(token), 303)]
    assert "Renamed “old name” to “new name”." in response.content.decode()
    token.refresh_from_db()
    assert token.name == "new name"
    assert TokenEvent.objects.get(token=token, kind="renamed").detail == "old name → new name"


def test_a_bad_new_name_is_refused_next_to_the_field_and_changes_nothing(signed_in, user, issue):
    token, _value = issue(user, name="keep")
    issue(user, name="taken")
    for name, message in (
        ("", "This field is required."),
        ("taken", "An active token of this owner already has this name"),
    ):
        response = signed_in.post(detail(token) + "rename/", {"name": name})
        assert response.status_code == 400
        assert message in response.content.decode()
    token.refresh_from_db()
    assert token.name == "keep"
    assert not TokenEvent.objects.filter(kind="renamed").exists()


def test_revoking_asks_first_then_shows_revoked_at_once_and_the_api_refuses(signed_in, user, issue):
    token, value = issue(user, name="to revoke")
    confirm = signed_in.get(detail(token) + "revoke/").content.decode()
    assert "Revoke “to revoke”?" in confirm and 'method="post"' in confirm
    token.refresh_from_db()
    assert token.revoked_at is None  # looking at the confirm page changes nothing
    response = signed_in.post(detail(token) + "revoke/", follow=True)
    assert response.redirect_chain == [(detail(token), 303)]
    html = response.content.decode()
    assert "Revoked “to revoke”." in html and "badge-revoked" in html and "by alice" in html
    assert TokenEvent.objects.filter(token=token, kind="revoked", actor=user).count() == 1
    assert Client().get("/api/users/me", **bearer(value)).status_code == 401
    again = signed_in.post(detail(token) + "revoke/", follow=True)
    assert "already revoked" in again.content.decode()
    assert TokenEvent.objects.filter(token=token, kind="revoked").count() == 1


# --- the profile and its Activity Stream --------------------------------------------------------------------


def test_the_activity_stream_lists_events_newest_first_with_links_and_actors(
    signed_in, user, staff_user, issue
):
    token, value = issue(user, name="stream")
    Client().get("/api/users/me", **bearer(value))
    token.rename("streamed", actor=user)
    token.revoke(actor=staff_user)
    html = signed_in.get("/profile/").content.decode()
    positions = [html.index(word) for word in ("Revoked", "Renamed", "First use of", "Created")]
    assert positions == sorted(positions)
    assert f'href="{detail(token)}"' in html
    assert "by sam" in html  # revoked by an administrator, not the owner
    assert f'href="{LIST}"' in html


def test_the_profile_records_and_shows_expiries(signed_in, user, issue):
    token, _value = issue(user, name="short lived", days=1)
    Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(minutes=5))
    html = signed_in.get("/profile/").content.decode()
    assert "Expired:" in html
    assert TokenEvent.objects.filter(token=token, kind="expired").count() == 1


def test_the_empty_activity_stream_says_what_to_do(signed_in):
    assert "Nothing yet. Create a token under Authorizations" in signed_in.get("/profile/").content.decode()


# --- the legacy-key notice ----------------------------------------------------------------------------------


def test_a_used_legacy_key_shows_a_deprecation_notice_without_its_value(signed_in, user, policy):
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    assert "legacy API key is deprecated" not in signed_in.get(LIST).content.decode()  # not used yet
    api = Client(HTTP_USER_AGENT="old-sync/1.4", REMOTE_ADDR="203.0.113.9")
    assert api.get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY).status_code == 200
    html = signed_in.get(LIST).content.decode()
    assert "legacy API key is deprecated" in html
    for text in (
        "203.0.113.9",
        "old-sync/1.4",
        "no sunset date set yet",
        "Authorization: Bearer",
        "Rest-Api-Key",
        'href="/docs/migration/"',
        "an administrator can revoke it",
    ):
        assert text in html, text
    assert LEGACY_KEY not in html
    assert "Your legacy API key was used" in signed_in.get("/profile/").content.decode()
    policy.legacy_sunset_at = datetime(2031, 3, 1, 12, 0, tzinfo=ZoneInfo("UTC"))
    policy.save()
    assert "legacy keys stop working on Mar 1, 2031, 12:00 UTC" in signed_in.get(LIST).content.decode()


def test_the_legacy_notice_shows_the_upcoming_brownout_windows_to_the_keys_owner(signed_in, user, policy):
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    Client().get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY)
    past = BrownoutWindow.objects.create(
        policy=policy,
        starts_at=datetime(2020, 1, 1, tzinfo=ZoneInfo("UTC")),
        ends_at=datetime(2020, 1, 1, 1, tzinfo=ZoneInfo("UTC")),
        note="long over",
    )
    BrownoutWindow.objects.create(
        policy=policy,
        starts_at=datetime(2031, 5, 4, 10, tzinfo=ZoneInfo("UTC")),
        ends_at=datetime(2031, 5, 4, 11, tzinfo=ZoneInfo("UTC")),
        note="first brownout",
    )
    html = signed_in.get(LIST).content.decode()
    assert "Scheduled brownouts" in html
    assert "May 4, 2031, 10:00 UTC" in html and "May 4, 2031, 11:00 UTC" in html and "first brownout" in html
    assert past.note not in html


def test_a_revoked_legacy_key_shows_no_notice(signed_in, user, staff_user):
    key, _created = LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    Client().get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY)
    key.revoke(actor=staff_user)
    assert "legacy API key is deprecated" not in signed_in.get(LIST).content.decode()


def test_signing_in_through_the_form_lands_on_the_profile(client, user):
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == "/profile/"


# --- least privilege ----------------------------------------------------------------------------------------


def _perm(codename):
    return Permission.objects.get(codename=codename, content_type__app_label="auth")


def test_the_create_form_offers_access_and_the_owners_permissions_in_words(signed_in, user, policy):
    user.user_permissions.add(_perm("view_user"))
    policy.default_access = "read"
    policy.save()
    html = signed_in.get(NEW).content.decode()
    assert "Read and write" in html and "Read only" in html
    assert re.search(r'<input type="radio" name="access" value="read"[^>]*checked', html)
    assert "All my permissions" in html and "Only these" in html
    assert "Can view user" in html and 'value="auth.view_user"' in html
    # Only what the owner holds is offered.
    assert "Can delete user" not in html
    assert 'name="allowed_ips"' in html


def test_creating_a_read_only_narrowed_address_bound_token_from_the_form(signed_in, user):
    user.user_permissions.add(_perm("view_user"))
    data = {
        **new_form(signed_in),
        "access": "read",
        "permission_scope": "only",
        "permissions": ["auth.view_user"],
        "allowed_ips": "203.0.113.7\r\n\r\n 2001:db8::/32 \r\n",
    }
    response = signed_in.post(NEW, data)
    assert response.status_code == 200
    token = Token.objects.get()
    assert (token.access, token.permissions, token.allowed_ips) == (
        "read",
        ["auth.view_user"],
        ["203.0.113.7", "2001:db8::/32"],
    )


@pytest.mark.parametrize(
    "extra, where",
    [
        ({"allowed_ips": "203.0.113.7\nnot-an-address"}, 'name="allowed_ips"'),
        ({"permission_scope": "only", "permissions": ["auth.delete_user"]}, "permission-list"),
        ({"access": "admin"}, "restriction-access"),
    ],
)
def test_bad_limits_on_the_create_form_are_refused_next_to_the_field_and_create_nothing(
    signed_in, extra, where
):
    response = signed_in.post(NEW, {**new_form(signed_in), **extra})
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(rf'{where}[^<]*(?:<(?!/fieldset)[^<]*)*?class="field-error"', html, re.S)
    assert not Token.objects.exists()


def test_the_token_page_says_what_it_can_do_in_words(signed_in, user, issue):
    user.user_permissions.add(_perm("view_user"), _perm("view_group"))
    token, _value = issue(
        user,
        access="read",
        permissions=["auth.view_group", "auth.view_user"],
        allowed_ips=["198.51.100.0/24"],
    )
    user.user_permissions.remove(_perm("view_group"))
    html = signed_in.get(detail(token)).content.decode()
    assert "Read only: it can look" in html
    assert "Can view user" in html
    assert re.search(r"no longer yours.*?Can view group", html, re.S)
    assert "198.51.100.0/24" in html


def test_the_token_page_changes_the_limits_and_the_activity_stream_names_who_and_what(signed_in, user, issue):
    token, _value = issue(user)
    response = signed_in.post(
        reverse("tokens:restrict", args=[token.pk]),
        {"access": "read", "permission_scope": "only", "allowed_ips": "192.0.2.1"},
    )
    assert response.status_code == 303
    token.refresh_from_db()
    assert (token.access, token.permissions, token.allowed_ips) == ("read", [], ["192.0.2.1"])
    events = {e.kind: e for e in TokenEvent.objects.filter(token=token)}
    assert events["access_changed"].actor == user
    assert events["access_changed"].detail == "Read and write → Read only"
    assert events["addresses_changed"].detail == "anywhere → 192.0.2.1"
    html = signed_in.get("/profile/").content.decode()
    assert "Access changed for" in html and "Read and write → Read only" in html
    assert "Allowed addresses changed for" in html and "Permissions changed for" in html


def test_a_bad_change_on_the_token_page_is_refused_and_changes_nothing(signed_in, user, issue):
    token, _value = issue(user)
    response = signed_in.post(
        reverse("tokens:restrict", args=[token.pk]),
        {"access": "read", "permission_scope": "all", "allowed_ips": "10.0.0.1/8"},
    )
    assert response.status_code == 400
    assert "did you mean 10.0.0.0/8" in response.content.decode()
    token.refresh_from_db()
    assert (token.access, token.allowed_ips) == ("read_write", [])
    assert not TokenEvent.objects.exclude(kind="created").exists()


def test_another_users_token_limits_cannot_be_changed(signed_in, other_user, issue):
    token, _value = issue(other_user)
    assert signed_in.post(reverse("tokens:restrict", args=[token.pk]), {"access": "read"}).status_code == 404
    token.refresh_from_db()
    assert token.access == "read_write"


def test_the_list_badges_read_only_limited_and_address_bound_tokens(signed_in, user, issue):
    issue(user, name="plain")
    issue(user, name="tight", access="read", permissions=[], allowed_ips=["192.0.2.1", "192.0.2.2"])
    html = signed_in.get(LIST).content.decode()
    tight = html[html.index("tight") :]
    plain = (
        html[html.index("plain") : html.index("tight")]
        if html.index("plain") < html.index("tight")
        else html[html.index("plain") :]
    )
    assert (
        "Read only" in tight[:1500]
        and "Limited permissions" in tight[:1500]
        and "2 addresses" in tight[:1500]
    )
    assert "badge-limit" not in plain[:800]


# --- rotation -----------------------------------------------------------------------------------------------


def rotate_url(token):
    return reverse("tokens:rotate", args=[token.pk])


def rotate_form(client, token, **choices):
    html = client.get(rotate_url(token)).content.decode()
    nonce = re.search(r'name="nonce" value="([^"]+)"', html).group(1)
    return {"overlap": "1d", "expiry": "same", "custom_expiry": "", "nonce": nonce, **choices}


def test_the_token_page_offers_rotate_and_the_form_offers_overlaps_within_the_policy(
    signed_in, issued, policy
):
    token, _ = issued
    assert f'href="{rotate_url(token)}"' in signed_in.get(detail(token)).content.decode()
    policy.max_rotation_overlap = timedelta(days=1)
    policy.save()
    form = signed_in.get(rotate_url(token)).context["form"]
    assert [key for key, _label in form.fields["overlap"].choices] == ["none", "1h", "1d"]
    assert form.fields["expiry"].initial == "same"


def test_rotating_on_the_page_answers_with_the_reveal_once_and_never_stores_the_value(
    signed_in, user, issued
):
    token, old_value = issued
    response = signed_in.post(rotate_url(token), rotate_form(signed_in, token))
    assert response.status_code == 200
    assert "tokens/token_reveal.html" in [t.name for t in response.templates]
    assert "no-store" in response["Cache-Control"]
    value = response.context["plaintext"]
    new = Token.objects.get(replaces=token)
    html = response.content.decode()
    assert f'value="{value}"' in html and "replaces the old one" in html
    for session in Session.objects.all():
        assert value not in str(session.get_decoded())
    for url in (detail(new), detail(token), LIST, "/profile/", rotate_url(token)):
        assert value not in signed_in.get(url).content.decode(), url
    assert Client().get("/api/users/me", **bearer(value)).status_code == 200
    assert Client().get("/api/users/me", **bearer(old_value)).status_code == 200  # one day of overlap
    old_page = signed_in.get(detail(token)).content.decode()
    assert "Rotating" in old_page and f'href="{detail(new)}"' in old_page
    assert f'href="{detail(token)}"' in signed_in.get(detail(new)).content.decode()


def test_resubmitting_the_rotate_form_rotates_nothing_more_and_lands_on_the_new_token(signed_in, issued):
    token, _ = issued
    data = rotate_form(signed_in, token)
    value = signed_in.post(rotate_url(token), data).context["plaintext"]
    again = signed_in.post(rotate_url(token), data, follow=True)
    new = Token.objects.get(replaces=token)
    assert again.redirect_chain == [(detail(new), 303)]
    assert value not in again.content.decode() and "cannot be shown again" in again.content.decode()
    assert Token.objects.count() == 2


def test_a_token_that_is_not_active_is_not_offered_rotation_and_a_forged_post_creates_nothing(
    signed_in, issued
):
    token, _ = issued
    data = rotate_form(signed_in, token)
    token.revoke(actor=token.user)
    assert f'href="{rotate_url(token)}"' not in signed_in.get(detail(token)).content.decode()
    page = signed_in.get(rotate_url(token), follow=True)
    assert page.redirect_chain == [(detail(token), 303)] and "Only an active token" in page.content.decode()
    posted = signed_in.post(rotate_url(token), data, follow=True)
    assert "Only an active token" in posted.content.decode() and Token.objects.count() == 1


def test_a_forged_overlap_beyond_the_policy_is_a_form_error_and_changes_nothing(signed_in, issued, policy):
    token, _ = issued
    policy.max_rotation_overlap = timedelta(hours=1)
    policy.save()
    response = signed_in.post(rotate_url(token), rotate_form(signed_in, token, overlap="7d"))
    assert response.status_code == 400 and response.context["form"].errors["overlap"]
    assert Token.objects.count() == 1 and Token.objects.get().status == "active"


def test_another_users_token_has_no_rotate_page(signed_in, other_user):
    soon = timezone.now() + timedelta(days=1)
    theirs, _ = Token.objects.issue(user=other_user, name="theirs", expires_at=soon)
    assert signed_in.get(rotate_url(theirs)).status_code == 404
    forged = {"overlap": "none", "expiry": "same", "nonce": "x" * 43}
    assert signed_in.post(rotate_url(theirs), forged).status_code == 404
