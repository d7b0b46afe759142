"""The Django admin through its own pages, as a signed-in staff user: policy, tokens, legacy keys, records."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from tokens.models import BrownoutWindow, LegacyApiKey, SitePolicy, Token, TokenEvent, UsageRecord
from tokens.usage.read import usage_totals

from .helpers import bearer

pytestmark = pytest.mark.django_db

LEGACY_KEY = "legacy-0123456789abcdef-KEY"
POLICY_URL = "/admin/tokens/sitepolicy/1/change/"
TOKENS_URL = "/admin/tokens/token/"
LEGACY_URL = "/admin/tokens/legacyapikey/"


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


LIFETIMES = ("default_lifetime", "minimum_lifetime", "maximum_lifetime")


def _policy_form(policy, **changes):
    """Return the policy change form's POST data for *policy*, with *changes* applied.

    Lifetimes are given as people type them, "30 days"; the form has a number and a unit for each.
    """
    data = {
        "default_lifetime": "30 days",
        "minimum_lifetime": "5 minutes",
        "maximum_lifetime": "1 years",
        "security_level": policy.security_level,
        "rehearsal_level": policy.rehearsal_level,
        "brownouts-TOTAL_FORMS": "0",
        "brownouts-INITIAL_FORMS": "0",
        "no_expiry_allowed_for": policy.no_expiry_allowed_for,
        "presets": list(policy.presets),
        "max_active_tokens": "",
        "expiry_notice_days": str(policy.expiry_notice_days),
        "usage_retention_days": str(policy.usage_retention_days),
        "legacy_deprecated_at_0": "2026-01-01",
        "legacy_deprecated_at_1": "00:00:00",
        "legacy_sunset_at_0": "",
        "legacy_sunset_at_1": "",
        "default_access": policy.default_access,
        "max_rotation_overlap": "7 days",
        "self_rotation_allowed": "on" if policy.self_rotation_allowed else None,
    }
    data.update(changes)
    for name in (*LIFETIMES, "max_rotation_overlap"):
        if name in data:
            data[f"{name}_0"], data[f"{name}_1"] = data.pop(name).split(" ", 1)
    return {key: value for key, value in data.items() if value is not None}


def _action(client, url, action, objects):
    return client.post(url, {"action": action, "_selected_action": [o.pk for o in objects]}, follow=True)


def _text(response):
    return response.content.decode()


# --- the policy ---------------------------------------------------------------------------------------------


def test_the_policy_list_goes_straight_to_the_one_policy_row(staff, policy):
    index = _text(staff.get("/admin/"))
    assert 'href="/admin/tokens/sitepolicy/"' in index
    response = staff.get("/admin/tokens/sitepolicy/")
    assert response.status_code == 302
    assert response["Location"] == POLICY_URL


def test_the_policy_can_be_neither_added_nor_deleted(staff, policy):
    assert staff.get("/admin/tokens/sitepolicy/add/").status_code == 403
    assert staff.get("/admin/tokens/sitepolicy/1/delete/").status_code == 403
    page = _text(staff.get(POLICY_URL))
    assert "/admin/tokens/sitepolicy/1/delete/" not in page
    assert "_addanother" not in page
    assert SitePolicy.objects.count() == 1


def test_the_policy_page_groups_its_fields_with_help_texts(staff, policy):
    page = _text(staff.get(POLICY_URL))
    for heading in ("Token lifetimes", "Limits", "Notices and retention", "Legacy API keys"):
        assert heading in page
    assert "Lowering it never changes existing tokens" in page
    assert 'type="checkbox" name="presets" value="7d"' in page


@pytest.mark.parametrize(
    "changes, field, message",
    [
        (
            {"minimum_lifetime": "2 days", "default_lifetime": "1 days"},
            "default_lifetime",
            "The default lifetime must lie between the minimum and the maximum.",
        ),
        (
            {"maximum_lifetime": "1 minutes"},
            "maximum_lifetime",
            "The maximum lifetime must not be shorter than the minimum.",
        ),
        (
            {"maximum_lifetime": "30 days"},
            "presets",
            "Every preset must lie between the minimum and the maximum lifetime.",
        ),
        (
            {"legacy_sunset_at_0": "2025-06-01", "legacy_sunset_at_1": "00:00:00"},
            "legacy_sunset_at",
            "The sunset must come after the deprecation date.",
        ),
        # Millions of days: "now + maximum" would pass the year 9999 (OverflowError, a 500).
        (
            {"maximum_lifetime": "1000000 days"},
            "maximum_lifetime",
            "A lifetime can be at most 100 years.",
        ),
        (
            {"maximum_lifetime": "1000000 years", "default_lifetime": "1000000 years"},
            "default_lifetime",
            "A lifetime can be at most 100 years.",
        ),
    ],
)
def test_an_inconsistent_policy_is_refused_with_the_error_on_the_form(staff, policy, changes, field, message):
    before = SitePolicy.objects.values().get()
    response = staff.post(POLICY_URL, _policy_form(policy, **changes))
    assert response.status_code == 200
    assert message in response.context["adminform"].form.errors[field]
    assert message in _text(response)
    assert SitePolicy.objects.values().get() == before


def test_a_consistent_policy_is_saved_and_existing_tokens_are_left_alone(staff, policy, user, issue):
    token, _value = issue(user, days=200)
    response = staff.post(
        POLICY_URL,
        _policy_form(
            policy,
            maximum_lifetime="90 days",
            presets=["1h", "1d", "7d", "30d", "90d"],
            max_active_tokens="5",
        ),
        follow=True,
    )
    assert response.redirect_chain[-1][0] == POLICY_URL
    policy.refresh_from_db()
    assert policy.maximum_lifetime == timedelta(days=90)
    assert policy.presets == ["1h", "1d", "7d", "30d", "90d"]
    assert policy.max_active_tokens == 5
    expires_before = token.expires_at
    token.refresh_from_db()
    assert token.expires_at == expires_before
    assert "1 active token lives longer than the maximum lifetime. It was not changed" in _text(response)


def test_the_policy_page_lists_tokens_exceeding_the_maximum_and_links_to_them(
    staff, policy, user, other_user, issue
):
    issue(user, name="long-lived", days=300)
    issue(other_user, name="short-lived", days=10)
    SitePolicy.objects.filter(pk=1).update(maximum_lifetime=timedelta(days=90))
    page = _text(staff.get(POLICY_URL))
    assert "1 active token lives longer than the maximum." in page
    assert "long-lived (alice)" in page
    assert "short-lived" not in page
    assert "/admin/tokens/token/?exceeds=yes" in page
    listed = _text(staff.get(TOKENS_URL + "?exceeds=yes"))
    assert "long-lived" in listed and "short-lived" not in listed


def test_the_policy_page_shows_lifetimes_as_a_number_and_a_unit(staff, policy):
    SitePolicy.objects.filter(pk=1).update(
        default_lifetime=timedelta(days=30),
        minimum_lifetime=timedelta(minutes=5),
        maximum_lifetime=timedelta(days=365),
    )
    form = staff.get(POLICY_URL).context["adminform"].form
    shown = {name: form[name].field.widget.decompress(form.initial[name]) for name in LIFETIMES}
    assert shown == {
        "default_lifetime": [30, "days"],
        "minimum_lifetime": [5, "minutes"],
        "maximum_lifetime": [1, "years"],
    }
    page = _text(staff.get(POLICY_URL))
    assert "30 00:00:00" not in page and "00:05:00" not in page
    assert 'name="default_lifetime_0" value="30"' in page
    assert '<option value="minutes" selected>' in page


def test_lifetimes_entered_as_a_number_and_a_unit_are_saved_as_that_duration(staff, policy):
    response = staff.post(
        POLICY_URL,
        _policy_form(
            policy,
            minimum_lifetime="2 hours",
            default_lifetime="7 days",
            maximum_lifetime="2 years",
            presets=["1d", "7d", "30d", "90d", "1y"],
        ),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    saved = SitePolicy.objects.get()
    assert (saved.minimum_lifetime, saved.default_lifetime, saved.maximum_lifetime) == (
        timedelta(hours=2),
        timedelta(days=7),
        timedelta(days=730),
    )


@pytest.mark.parametrize(
    "number", ["²", "1.5", "1e3", "-1", "0", "", "3\x00", "\u202e5", "9" * 40, "1000000000"]
)
def test_a_lifetime_that_is_not_a_sensible_whole_number_is_a_form_error_and_changes_nothing(
    staff, policy, number
):
    before = SitePolicy.objects.values().get()
    response = staff.post(POLICY_URL, _policy_form(policy, maximum_lifetime=f"{number} years"))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["maximum_lifetime"]
    assert SitePolicy.objects.values().get() == before


def test_a_lifetime_longer_than_a_hundred_years_is_refused_with_a_clear_error(staff, policy):
    response = staff.post(POLICY_URL, _policy_form(policy, maximum_lifetime="101 years"))
    errors = response.context["adminform"].form.errors
    assert errors["maximum_lifetime"] == ["A lifetime can be at most 100 years."]


def test_each_change_of_level_rehearsal_sunset_or_window_is_an_audited_event(staff, staff_user, policy):
    response = staff.post(
        POLICY_URL,
        _policy_form(
            policy,
            security_level="high",
            rehearsal_level="bearer_only",
            legacy_sunset_at_0="2031-09-01",
            legacy_sunset_at_1="00:00:00",
            new_address_alerts="on",
            **{
                "brownouts-TOTAL_FORMS": "1",
                "brownouts-0-starts_at_0": "2031-05-04",
                "brownouts-0-starts_at_1": "10:00:00",
                "brownouts-0-ends_at_0": "2031-05-04",
                "brownouts-0-ends_at_1": "11:00:00",
                "brownouts-0-note": "first brownout",
            },
        ),
    )
    assert response.status_code == 302
    events = {e.kind: e for e in TokenEvent.objects.all()}
    # The form also sends a deprecation date of its own: one "policy changed" event names it, and only it;
    # the transition's settings have their own events, not a second one.
    assert set(events) == {
        "level_changed",
        "rehearsal_changed",
        "sunset_changed",
        "brownout_changed",
        "policy_changed",
    }
    assert events["policy_changed"].detail == "legacy_deprecated_at"
    assert events["level_changed"].detail == "compatibility → high"
    assert events["rehearsal_changed"].detail == "none → bearer_only"
    assert events["sunset_changed"].detail == "- → 2031-09-01T00:00:00Z"
    assert events["brownout_changed"].detail == "+ 2031-05-04T10:00:00Z – 2031-05-04T11:00:00Z first brownout"
    assert {(e.user_id, e.actor_id) for e in events.values()} == {(staff_user.pk, staff_user.pk)}
    assert SitePolicy.objects.get().rehearsal_started_at is not None
    stream = _text(staff.get("/admin/tokens/tokenevent/"))
    labels = (
        "security level changed",
        "rehearsal changed",
        "brownout window changed",
        "legacy sunset changed",
    )
    for label in labels:
        assert label in stream
    # Saving again without a change writes nothing.
    window = BrownoutWindow.objects.get()
    staff.post(
        POLICY_URL,
        _policy_form(
            SitePolicy.objects.get(),
            legacy_sunset_at_0="2031-09-01",
            legacy_sunset_at_1="00:00:00",
            new_address_alerts="on",
            **{
                "brownouts-TOTAL_FORMS": "1",
                "brownouts-INITIAL_FORMS": "1",
                "brownouts-0-id": str(window.pk),
                "brownouts-0-policy": "1",
                "brownouts-0-starts_at_0": "2031-05-04",
                "brownouts-0-starts_at_1": "10:00:00",
                "brownouts-0-ends_at_0": "2031-05-04",
                "brownouts-0-ends_at_1": "11:00:00",
                "brownouts-0-note": "first brownout",
            },
        ),
    )
    assert TokenEvent.objects.count() == 5  # a save that changes nothing records nothing


def test_a_brownout_that_ends_before_it_starts_is_a_form_error(staff, policy):
    response = staff.post(
        POLICY_URL,
        _policy_form(
            policy,
            **{
                "brownouts-TOTAL_FORMS": "1",
                "brownouts-0-starts_at_0": "2031-05-04",
                "brownouts-0-starts_at_1": "11:00:00",
                "brownouts-0-ends_at_0": "2031-05-04",
                "brownouts-0-ends_at_1": "10:00:00",
            },
        ),
    )
    assert response.status_code == 200
    assert "A brownout must end after it starts." in _text(response)
    assert not BrownoutWindow.objects.exists() and not TokenEvent.objects.exists()


def test_the_transition_section_shows_keys_in_use_and_what_the_next_level_would_refuse(
    staff, policy, user, client
):
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    for _ in range(2):
        client.get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY)
    page = _text(staff.get(POLICY_URL))
    assert "Transition" in page
    numbers = re.search(r'<dl class="transition-numbers">.*?</dl>', page, re.S).group(0)
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", numbers)).split() == [
        "Level",
        "in",
        "force",
        "Compatibility:",
        "bearer",
        "tokens,",
        "legacy",
        "keys",
        "and",
        "browser",
        "sessions",
        "Legacy",
        "keys",
        "used",
        "in",
        "the",
        "last",
        "30",
        "days",
        "1",
        "Requests",
        "in",
        "the",
        "last",
        "30",
        "days",
        "that",
        "High",
        "would",
        "refuse",
        "2",
    ]


def test_shortening_brings_exceeding_tokens_to_the_maximum_and_tells_their_owners(
    staff, staff_user, policy, user, issue
):
    long_lived, _value = issue(user, name="long-lived", days=300)
    short_lived, _value = issue(user, name="short-lived", days=10)
    SitePolicy.objects.filter(pk=1).update(maximum_lifetime=timedelta(days=90))
    before = timezone.now()
    response = _action(staff, TOKENS_URL, "shorten_to_policy_maximum", [long_lived, short_lived])
    assert "Shortened 1 token to expire at" in _text(response)
    long_lived.refresh_from_db()
    assert before + timedelta(days=90) <= long_lived.expires_at <= timezone.now() + timedelta(days=90)
    expires_before = short_lived.expires_at
    short_lived.refresh_from_db()
    assert short_lived.expires_at == expires_before
    event = TokenEvent.objects.get(token=long_lived, kind="shortened")
    assert event.user == user and event.actor == staff_user
    assert not TokenEvent.objects.filter(token=short_lived, kind="shortened").exists()


# --- the token list -----------------------------------------------------------------------------------------


def test_the_token_list_shows_every_users_tokens_with_their_metadata(staff, user, other_user, issue, client):
    _token, value = issue(user, name="deploy-bot")
    issue(other_user, name="backup-job")
    client.get("/api/users/me", **bearer(value))
    page = _text(staff.get(TOKENS_URL))
    for text in (
        "deploy-bot",
        "backup-job",
        "alice",
        "bob",
        "active",
        "Pepper id",
        "Requests",
        "Last used at",
    ):
        assert text.lower() in page.lower()
    row = re.search(r"<tr>.*?deploy-bot.*?</tr>", page, re.S).group(0)
    assert '<td class="field-request_count">1</td>' in row


@pytest.mark.parametrize(
    "query, shown, hidden",
    [
        ("status=active", {"fresh"}, {"gone", "old"}),
        ("status=revoked", {"gone"}, {"fresh", "old"}),
        ("status=expired", {"old"}, {"fresh", "gone"}),
        ("expires=7d", {"soon"}, {"fresh", "forever"}),
        ("expires=30d", {"soon", "fresh"}, {"forever"}),
        ("expires=never", {"forever"}, {"fresh", "soon"}),
        ("expires=past", {"old"}, {"fresh"}),
        ("used=never", {"soon", "forever"}, {"fresh"}),
        ("used=yes", {"fresh"}, {"soon"}),
    ],
)
def test_the_token_list_filters_by_status_expiry_and_use(
    staff, user, issue, client, policy, query, shown, hidden
):
    SitePolicy.objects.filter(pk=1).update(no_expiry_allowed_for="everyone")
    _fresh, value = issue(user, name="fresh", days=20)
    client.get("/api/users/me", **bearer(value))
    issue(user, name="soon", days=3)
    issue(user, name="forever", days=None)
    gone, _value = issue(user, name="gone")
    gone.revoke(actor=user)
    old, _value = issue(user, name="old")
    Token.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=1))
    response = staff.get(f"{TOKENS_URL}?{query}")
    names = {t.name for t in response.context["cl"].result_list}
    assert shown <= names
    assert not hidden & names


def test_the_token_list_filters_by_owner_and_searches_owner_email_and_name(staff, user, other_user, issue):
    issue(user, name="deploy-bot")
    issue(other_user, name="backup-job")

    def names(url):
        return {t.name for t in staff.get(url).context["cl"].result_list}

    assert names(f"{TOKENS_URL}?user__id__exact={other_user.pk}") == {"backup-job"}
    assert names(f"{TOKENS_URL}?q=alice") == {"deploy-bot"}
    assert names(f"{TOKENS_URL}?q=bob%40example.com") == {"backup-job"}
    assert names(f"{TOKENS_URL}?q=backup") == {"backup-job"}


def test_a_value_pasted_in_the_search_box_is_not_looked_up_from_the_address(staff, user, other_user, issue):
    issue(user, name="deploy-bot")
    leaked, value = issue(other_user, name="backup-job")
    response = staff.get(TOKENS_URL, {"q": value})
    assert response.status_code == 302
    assert response["Location"] == TOKENS_URL
    text = _text(staff.get(response["Location"]))
    assert "not searched from the address" in text and "Find a token by its value" in text
    assert "backup-job" in text  # the plain list, which shows every token anyway
    assert "That value is token" not in text and "of bob" not in text
    assert value not in text and leaked.digest not in text


@pytest.mark.parametrize(
    "lookup", ["digest__startswith", "public_id__startswith", "digest", "public_id__exact"]
)
def test_the_token_list_refuses_filters_on_the_digest_or_the_public_id(staff, user, issue, lookup):
    token, _value = issue(user, name="deploy-bot")
    prefix = (token.digest if lookup.startswith("digest") else token.public_id)[:2]
    response = staff.get(TOKENS_URL, {lookup: prefix if "startswith" in lookup else prefix + "x"})
    assert response.status_code == 400
    assert "deploy-bot" not in _text(response)


@pytest.mark.parametrize(
    "url, lookup",
    [
        ("/admin/tokens/usagerecord/", "token__digest__startswith"),
        ("/admin/tokens/tokenevent/", "token__public_id__startswith"),
        ("/admin/tokens/legacyapikey/", "digest__startswith"),
    ],
)
def test_the_other_lists_refuse_filters_that_reach_a_digest_or_public_id(staff, url, lookup):
    assert staff.get(url, {lookup: "a"}).status_code == 400


def test_the_find_form_posts_the_value_so_it_is_in_no_address(staff, user, issue):
    _leaked, value = issue(user, name="deploy-bot")
    page = _text(staff.get(TOKENS_URL))
    assert 'action="/admin/tokens/token/find/"' in page and 'method="post"' in page
    response = staff.post(TOKENS_URL + "find/", {"value": value})
    assert response.status_code == 302
    assert value not in response["Location"]
    text = _text(staff.get(response["Location"]))
    assert "That value is token “deploy-bot” of alice" in text
    assert value not in text
    assert staff.get(TOKENS_URL + "find/").status_code == 405


@pytest.mark.parametrize("mangle", [lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"), lambda v: v[:20]])
def test_a_forged_or_broken_value_finds_nothing(staff, user, issue, mangle):
    _token, value = issue(user, name="deploy-bot")
    response = staff.post(TOKENS_URL + "find/", {"value": mangle(value)}, follow=True)
    assert "No token matches that value" in _text(response)


def test_the_revoke_action_revokes_and_records_who_revoked(staff, staff_user, user, issue, client):
    token, value = issue(user, name="deploy-bot")
    keep, _value = issue(user, name="keep")
    response = _action(staff, TOKENS_URL, "revoke_selected", [token])
    assert "Revoked 1 token." in _text(response)
    token.refresh_from_db()
    assert token.status == "revoked" and token.revoked_by == staff_user
    assert TokenEvent.objects.get(token=token, kind="revoked").actor == staff_user
    assert client.get("/api/users/me", **bearer(value)).status_code == 401
    keep.refresh_from_db()
    assert keep.status == "active"


def test_tokens_cannot_be_deleted_from_the_admin(staff, user, issue):
    token, _value = issue(user)
    assert staff.get(f"{TOKENS_URL}{token.pk}/delete/").status_code == 403
    assert "delete_selected" not in _text(staff.get(TOKENS_URL))


def test_renaming_in_the_admin_goes_through_rename_and_changes_nothing_else(
    staff, staff_user, user, issue, client
):
    token, value = issue(user, name="deploy-bot")
    client.get("/api/users/me", **bearer(value))
    form = staff.get(f"{TOKENS_URL}{token.pk}/change/")
    assert 'name="name"' in _text(form) and 'name="purpose"' in _text(form)
    for readonly in ("expires_at", "user", "revoked_at", "request_count", "last_used_at"):
        assert f'name="{readonly}' not in _text(form)
    response = staff.post(f"{TOKENS_URL}{token.pk}/change/", {"name": "  ci-runner  ", "purpose": "CI"})
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.name, token.purpose, usage_totals([token])[0].request_count) == ("ci-runner", "CI", 1)
    event = TokenEvent.objects.get(token=token, kind="renamed")
    assert event.actor == staff_user and event.detail == "deploy-bot → ci-runner"


def test_a_tampered_change_form_cannot_move_the_expiry_or_the_owner(staff, user, other_user, issue):
    token, _value = issue(user, name="deploy-bot", days=5)
    later = timezone.now() + timedelta(days=900)
    staff.post(
        f"{TOKENS_URL}{token.pk}/change/",
        {
            "name": "deploy-bot",
            "purpose": "",
            "user": other_user.pk,
            "request_count": 0,
            "expires_at_0": later.strftime("%Y-%m-%d"),
            "expires_at_1": "00:00:00",
            "revoked_at": "",
        },
    )
    before = token.expires_at
    token.refresh_from_db()
    assert (token.user, token.expires_at) == (user, before)


def test_a_rename_to_a_taken_name_is_refused_on_the_form(staff, user, issue):
    issue(user, name="taken")
    token, _value = issue(user, name="deploy-bot")
    response = staff.post(f"{TOKENS_URL}{token.pk}/change/", {"name": "taken", "purpose": ""})
    assert response.status_code == 200
    assert "An active token of this owner already has this name." in _text(response)
    token.refresh_from_db()
    assert token.name == "deploy-bot"


# --- adding a token shows its value once --------------------------------------------------------------------


def _add_form(staff):
    page = staff.get(TOKENS_URL + "add/")
    return _text(page), re.search(r'name="nonce" value="([^"]+)"', _text(page)).group(1)


def _add_data(client, owner, *, name="service", expires=None, **fields):
    """The admin's add form filled in for a token of *owner*: a fresh nonce, ten days to live, *fields*."""
    _page, nonce = _add_form(client)
    expires = expires or timezone.now() + timedelta(days=10)
    return {
        "user": owner.pk,
        "name": name,
        "purpose": "",
        "nonce": nonce,
        "expires_at_0": expires.strftime("%Y-%m-%d"),
        "expires_at_1": expires.strftime("%H:%M:%S"),
        **fields,
    }


def test_adding_a_token_shows_its_value_once_and_never_again(staff, staff_user, user):
    page, _nonce = _add_form(staff)
    assert 'name="user"' in page and 'name="expires_at_0"' in page
    data = _add_data(staff, user, purpose="nightly export")
    response = staff.post(TOKENS_URL + "add/", data)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    value = re.search(r'value="(bpt_[0-9A-Za-z]+)"', _text(response)).group(1)
    token = Token.objects.get(name="service")
    assert token.user == user and token.purpose == "nightly export"
    assert Token.objects.find_by_value(value) == token
    assert TokenEvent.objects.get(token=token, kind="created").actor == staff_user
    assert "will not be shown again" in _text(response)
    assert value not in str(staff.session.items())
    # Resubmitting the same form creates nothing and never shows the value again.
    again = staff.post(TOKENS_URL + "add/", data, follow=True)
    assert Token.objects.filter(name="service").count() == 1
    assert "already submitted" in _text(again)
    for url in (TOKENS_URL, f"{TOKENS_URL}{token.pk}/change/", "/admin/", f"{TOKENS_URL}?q=service"):
        assert value not in _text(staff.get(url))
    me = staff.get("/api/users/me", **bearer(value))
    assert me.json()["username"] == "alice"


def test_adding_a_token_follows_the_policy_with_errors_on_the_form(staff, user, policy):
    data = _add_data(staff, user, expires=timezone.now() + timedelta(days=400))
    response = staff.post(TOKENS_URL + "add/", data)
    assert response.status_code == 200
    assert "The longest lifetime allowed is 1 year." in _text(response)
    assert "bpt_" not in _text(response)
    response = staff.post(
        TOKENS_URL + "add/", {"user": user.pk, "name": "service", "nonce": data["nonce"] + "x"}
    )
    assert "Tokens without an expiry date are not allowed." in _text(response)
    assert not Token.objects.exists()


def test_adding_a_token_respects_the_active_token_limit(staff, user, issue, policy):
    SitePolicy.objects.filter(pk=1).update(max_active_tokens=1)
    issue(user, name="first")
    response = staff.post(TOKENS_URL + "add/", _add_data(staff, user, name="second"))
    assert "You have reached the limit of 1 active tokens." in _text(response)
    assert Token.objects.count() == 1


# --- legacy keys and the migration overview -----------------------------------------------------------------


@pytest.fixture
def legacy_key(user):
    return LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)[0]


def test_legacy_keys_are_listed_with_owner_and_last_use_and_cannot_be_added_or_edited(
    staff, legacy_key, client
):
    client.get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY, HTTP_USER_AGENT="old-cron/1.0")
    page = _text(staff.get(LEGACY_URL))
    for text in ("alice", "127.0.0.1", "old-cron/1.0", "Migration overview"):
        assert text in page
    assert staff.get(LEGACY_URL + "add/").status_code == 403
    detail = staff.get(f"{LEGACY_URL}{legacy_key.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in _text(detail) and 'name="_continue"' not in _text(detail)
    before = LegacyApiKey.objects.values().get()
    assert staff.post(f"{LEGACY_URL}{legacy_key.pk}/change/", {"user": 1}).status_code == 403
    assert staff.get(f"{LEGACY_URL}{legacy_key.pk}/delete/").status_code == 403
    assert LegacyApiKey.objects.values().get() == before


def test_the_legacy_revoke_action_revokes_the_key_at_once(staff, staff_user, legacy_key, client):
    response = _action(staff, LEGACY_URL, "revoke_selected", [legacy_key])
    assert "Revoked 1 legacy key." in _text(response)
    legacy_key.refresh_from_db()
    assert legacy_key.revoked_by == staff_user
    assert TokenEvent.objects.get(legacy_key=legacy_key, kind="legacy_revoked").actor == staff_user
    assert client.get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY).status_code == 401


def test_the_migration_overview_shows_who_still_uses_keys_from_where_and_the_daily_split(
    staff, legacy_key, other_user, issue, client
):
    LegacyApiKey.objects.import_key(user=other_user, key="idle-key-that-nobody-uses-0000")
    _token, value = issue(other_user)
    for _ in range(3):
        client.get(
            "/api/users/me",
            HTTP_REST_API_KEY=LEGACY_KEY,
            HTTP_USER_AGENT="old-cron/1.0",
            REMOTE_ADDR="203.0.113.7",
        )
    client.get("/api/users/me", **bearer(value))
    assert 'href="/admin/tokens/legacyapikey/migration/"' in _text(staff.get(LEGACY_URL))
    response = staff.get(LEGACY_URL + "migration/")
    assert response.status_code == 200
    counts = response.context["counts"]
    assert (counts["in_use"], counts["users_in_use"], counts["never_used"], counts["active"]) == (1, 1, 1, 2)
    page = _text(response)
    users = page.split('class="migration-users"')[1].split("</table>")[0]
    assert "alice" in users and "bob" not in users and "none yet" in users
    clients = page.split('class="migration-clients"')[1].split("</table>")[0]
    assert "203.0.113.7" in clients and "old-cron/1.0" in clients
    assert "3 with legacy keys, 1 with bearer tokens" in page
    chart = response.context["chart"]
    assert [row["values"] for row in chart["rows"]][-1] == [1, 3]
    assert "<svg" in page and "series-legacy" in page and "series-bearer" in page
    assert LEGACY_KEY not in page and legacy_key.digest not in page


# --- usage records and events: read-only --------------------------------------------------------------------


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_usage_records_are_read_only_and_filter_by_token_user_status_and_date(
    staff, user, other_user, issue, client
):
    token, value = issue(user, name="deploy-bot")
    _other, other_value = issue(other_user, name="backup-job")
    client.get("/api/users/me", **bearer(value))
    client.get("/api/tokens/999999", **bearer(value))
    client.get("/api/users/me", **bearer(other_value))
    url = "/admin/tokens/usagerecord/"

    def records(query):
        return list(staff.get(f"{url}?{query}").context["cl"].result_list)

    assert len(records("")) == 3
    assert {r.token_id for r in records(f"token__id__exact={token.pk}")} == {token.pk}
    assert {r.user_id for r in records(f"user__id__exact={other_user.pk}")} == {other_user.pk}
    assert [r.status for r in records("status_class=404")] == [404]
    assert len(records("status_class=2xx")) == 2
    today = timezone.now()
    assert len(records(f"at__year={today.year}&at__month={today.month}&at__day={today.day}")) == 3
    record = UsageRecord.objects.first()
    assert staff.get(f"{url}add/").status_code == 403
    assert staff.get(f"{url}{record.pk}/change/").status_code == 200
    assert staff.post(f"{url}{record.pk}/change/", {"status": 500}).status_code == 403
    assert staff.get(f"{url}{record.pk}/delete/").status_code == 403
    assert UsageRecord.objects.count() == 3


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_activity_events_of_every_user_are_read_only_and_filterable(staff, user, other_user, issue):
    token, _value = issue(user, name="deploy-bot")
    issue(other_user, name="backup-job")
    token.rename("ci-runner", actor=user)
    url = "/admin/tokens/tokenevent/"

    def kinds(query):
        return sorted(e.kind for e in staff.get(f"{url}?{query}").context["cl"].result_list)

    assert kinds("") == ["created", "created", "renamed"]
    assert kinds("kind__exact=renamed") == ["renamed"]
    assert kinds("q=bob") == ["created"]
    assert kinds("q=ci-runner") == ["created", "renamed"]
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert kinds(f"at__gte={midnight.date()}+00:00:00%2B00:00") == ["created", "created", "renamed"]
    assert kinds(f"at__lt={midnight.date()}+00:00:00%2B00:00") == []
    event = TokenEvent.objects.first()
    assert staff.get(f"{url}add/").status_code == 403
    assert staff.post(f"{url}{event.pk}/change/", {"kind": "revoked"}).status_code == 403
    assert staff.get(f"{url}{event.pk}/delete/").status_code == 403


def test_no_admin_page_carries_a_token_value_a_legacy_key_or_a_digest(staff, user, issue, legacy_key, client):
    token, value = issue(user, name="deploy-bot")
    client.get("/api/users/me", **bearer(value))
    client.get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY)
    record = UsageRecord.objects.filter(token=token).get()
    event = TokenEvent.objects.filter(token=token).first()
    pages = [
        "/admin/",
        POLICY_URL,
        TOKENS_URL,
        f"{TOKENS_URL}{token.pk}/change/",
        f"{TOKENS_URL}{token.pk}/history/",
        LEGACY_URL,
        f"{LEGACY_URL}{legacy_key.pk}/change/",
        LEGACY_URL + "migration/",
        "/admin/tokens/usagerecord/",
        f"/admin/tokens/usagerecord/{record.pk}/change/",
        "/admin/tokens/tokenevent/",
        f"/admin/tokens/tokenevent/{event.pk}/change/",
    ]
    secrets = [value, value[4:16], token.digest, LEGACY_KEY, legacy_key.digest]
    for url in pages:
        response = staff.get(url)
        assert response.status_code == 200, url
        text = _text(response)
        for secret in secrets:
            assert secret not in text, (url, secret[:6])


def test_the_admin_needs_a_staff_sign_in(client, user, policy):
    client.force_login(user)
    response = client.get(TOKENS_URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert client.post(TOKENS_URL + "find/", {"value": "bpt_x"}).status_code == 302


def _staff_with(make_user, client, *codenames):
    member = make_user("stella", is_staff=True)
    member.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="tokens", codename__in=codenames)
    )
    client.force_login(member)
    return member


def test_only_a_superuser_can_create_a_token_for_another_user(make_user, client, user):
    member = _staff_with(make_user, client, "add_token", "view_token")
    data = _add_data(client, user, name="takeover")
    refused = client.post(TOKENS_URL + "add/", data)
    assert refused.status_code == 200
    assert "Only superusers can create a token for another user" in _text(refused)
    assert not Token.objects.exists()
    data["user"] = member.pk
    assert "will not be shown again" in _text(client.post(TOKENS_URL + "add/", data))
    assert Token.objects.get().user == member


def test_staff_without_token_permissions_cannot_learn_whose_a_value_is(make_user, client, user, issue):
    _staff_with(make_user, client)
    _token, value = issue(user)
    response = client.get(TOKENS_URL, {"q": value}, follow=True)
    assert response.status_code == 403
    assert "alice" not in _text(response)


def test_staff_who_may_only_add_tokens_cannot_read_another_users_name_through_the_add_form(
    make_user, client, user
):
    _staff_with(make_user, client, "add_token")
    page = _text(client.get(TOKENS_URL + f"add/?user={user.pk}"))
    assert user.get_username() not in page
    refused = client.post(TOKENS_URL + "add/", _add_data(client, user, name="probe"))
    assert "Only superusers can create a token for another user" in _text(refused)
    assert user.get_username() not in _text(refused)
    assert not Token.objects.exists()


def test_a_superuser_can_still_preselect_the_owner_of_a_new_token(staff, make_user):
    service = make_user("backup-service")
    assert "backup-service" in _text(staff.get(TOKENS_URL + f"add/?user={service.pk}"))


# --- least privilege ----------------------------------------------------------------------------------------


def _view_user():
    return Permission.objects.get(codename="view_user", content_type__app_label="auth")


def test_the_token_list_filters_by_access_and_shows_it(staff, user, issue):
    issue(user, name="reader", access="read")
    issue(user, name="writer")
    page = _text(staff.get(TOKENS_URL + "?access__exact=read"))
    assert "reader" in page and "writer" not in page
    assert "Read only" in page


def test_the_change_page_shows_and_changes_the_limits_through_set_restrictions(
    staff, staff_user, user, issue
):
    user.user_permissions.add(_view_user())
    token, _value = issue(user, access="read", permissions=["auth.view_user"], allowed_ips=["192.0.2.0/24"])
    page = _text(staff.get(f"{TOKENS_URL}{token.pk}/change/"))
    assert "auth.view_user" in page and "192.0.2.0/24" in page
    response = staff.post(
        f"{TOKENS_URL}{token.pk}/change/",
        {
            "name": token.name,
            "purpose": "",
            "access": "read_write",
            "permissions_text": "auth.view_user",
            "allowed_ips_text": "192.0.2.0/24\n2001:db8::1",
        },
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.access, token.allowed_ips) == ("read_write", ["192.0.2.0/24", "2001:db8::1"])
    kinds = set(TokenEvent.objects.filter(token=token, actor=staff_user).values_list("kind", flat=True))
    assert kinds == {"access_changed", "addresses_changed"}


def test_a_superuser_cannot_grant_a_token_more_than_its_owner_holds(staff, user, issue):
    token, _value = issue(user)
    response = staff.post(
        f"{TOKENS_URL}{token.pk}/change/",
        {
            "name": token.name,
            "purpose": "",
            "access": "read_write",
            "permissions_text": "auth.delete_user",
            "allowed_ips_text": "",
        },
    )
    assert response.status_code == 200
    assert "The owner does not hold: auth.delete_user" in _text(response)
    token.refresh_from_db()
    assert token.permissions is None
    data = _add_data(staff, user, access="read", permissions_text="auth.delete_user", allowed_ips_text="")
    response = staff.post(TOKENS_URL + "add/", data)
    assert "The owner does not hold: auth.delete_user" in _text(response)
    assert not Token.objects.filter(name="service").exists()


def test_adding_a_token_in_the_admin_takes_its_limits(staff, user):
    data = _add_data(staff, user, access="read", permissions_text="", allowed_ips_text="203.0.113.0/24")
    response = staff.post(TOKENS_URL + "add/", data)
    assert response.status_code == 200
    token = Token.objects.get(name="service")
    assert (token.access, token.permissions, token.allowed_ips) == ("read", None, ["203.0.113.0/24"])


def test_staff_who_are_not_superusers_cannot_change_another_users_token_limits(
    make_user, client, user, issue
):
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="tokens", codename__endswith="token")
    )
    client.force_login(clerk)
    token, _value = issue(user, allowed_ips=["192.0.2.1"])
    response = client.post(
        f"{TOKENS_URL}{token.pk}/change/",
        {
            "name": token.name,
            "purpose": "",
            "access": "read_write",
            "permissions_text": "",
            "allowed_ips_text": "",
        },
    )
    assert response.status_code == 200
    assert "Only superusers can change the limits" in _text(response)
    token.refresh_from_db()
    assert token.allowed_ips == ["192.0.2.1"]


def test_the_policy_page_sets_the_default_access_and_the_allow_list_rule(staff, policy):
    response = staff.post(
        POLICY_URL, _policy_form(policy, default_access="read", require_allowed_ips_without_expiry="on")
    )
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.default_access == "read" and policy.require_allowed_ips_without_expiry


# --- every admin change is an event (the event feed exports them) -------------------------------------------


def test_saving_the_policy_records_who_changed_which_settings(staff, staff_user, policy):
    staff.post(POLICY_URL, _policy_form(policy, expiry_notice_days="3", new_address_alerts="on"))
    event = TokenEvent.objects.get(kind=TokenEvent.Kind.POLICY_CHANGED)
    assert (event.user, event.actor) == (staff_user, staff_user)
    assert "expiry_notice_days" in event.detail.split(", ")
    assert event.ip == "127.0.0.1"


def test_switching_new_address_alerts_off_in_the_policy_is_saved_and_recorded(staff, policy):
    staff.post(POLICY_URL, _policy_form(policy))  # the box unticked
    policy.refresh_from_db()
    assert policy.new_address_alerts is False
    assert "new_address_alerts" in TokenEvent.objects.get(kind=TokenEvent.Kind.POLICY_CHANGED).detail


def test_changing_a_purpose_in_the_admin_is_an_event_the_owner_sees(staff, staff_user, user, issue):
    token, _value = issue(user, name="deploy-bot")
    staff.post(f"{TOKENS_URL}{token.pk}/change/", {"name": "deploy-bot", "purpose": "Nightly deploys"})
    event = TokenEvent.objects.get(token=token, kind=TokenEvent.Kind.PURPOSE_CHANGED)
    assert (event.user, event.actor, event.detail) == (user, staff_user, "Nightly deploys")


# --- rotation -----------------------------------------------------------------------------------------------


def test_the_rotate_action_takes_one_token_to_its_rotate_page_and_reveals_the_new_value_once(
    staff, staff_user
):
    soon = timezone.now() + timedelta(days=9)
    token, _ = Token.objects.issue(user=staff_user, name="ops", expires_at=soon)
    other, _ = Token.objects.issue(user=staff_user, name="two", expires_at=timezone.now() + timedelta(days=9))
    refused = _action(staff, TOKENS_URL, "rotate_one", [token, other])
    assert "Select exactly one token" in _text(refused) and Token.objects.count() == 2
    page = _action(staff, TOKENS_URL, "rotate_one", [token])
    assert page.redirect_chain[-1][0] == f"{TOKENS_URL}{token.pk}/rotate/"
    nonce = re.search(r'name="nonce" value="([^"]+)"', _text(page)).group(1)
    data = {"overlap": "1h", "expiry": "same", "custom_expiry": "", "nonce": nonce}
    revealed = staff.post(f"{TOKENS_URL}{token.pk}/rotate/", data)
    assert revealed.status_code == 200 and "no-store" in revealed["Cache-Control"]
    new = Token.objects.get(replaces=token)
    value = revealed.context["value"]
    assert Token.objects.find_by_value(value) == new and "keeps working until" in _text(revealed)
    again = staff.post(f"{TOKENS_URL}{token.pk}/rotate/", data, follow=True)
    assert value not in _text(again) and Token.objects.count() == 3
    # Both tokens show the link to the other on their admin page.
    assert f"{TOKENS_URL}{new.pk}/change/" in _text(staff.get(f"{TOKENS_URL}{token.pk}/change/"))
    assert f"{TOKENS_URL}{token.pk}/change/" in _text(staff.get(f"{TOKENS_URL}{new.pk}/change/"))


def test_only_a_superuser_rotates_another_users_token_in_the_admin(client, make_user, user):
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["change_token", "view_token"]))
    client.force_login(clerk)
    token, _ = Token.objects.issue(user=user, name="alice's", expires_at=timezone.now() + timedelta(days=9))
    response = client.get(f"{TOKENS_URL}{token.pk}/rotate/", follow=True)
    assert "Only superusers can rotate" in _text(response)
    assert (
        client.post(
            f"{TOKENS_URL}{token.pk}/rotate/", {"overlap": "none", "expiry": "same", "nonce": "n" * 43}
        ).status_code
        == 302
    )
    assert Token.objects.count() == 1 and Token.objects.get().status == "active"


def test_the_policy_sets_the_longest_overlap_including_none_and_the_self_rotation_switch(staff, policy):
    response = staff.post(
        POLICY_URL, _policy_form(policy, max_rotation_overlap="0 hours", self_rotation_allowed=None)
    )
    assert response.status_code == 302, _text(response)
    policy.refresh_from_db()
    assert policy.max_rotation_overlap == timedelta(0) and policy.self_rotation_allowed is False
