"""The cutover (PRODUCT.md, "The cutover"): security levels, the rehearsal, brownouts, owner notices, mapping.

Through the API as clients meet it, the migration overview as administrators use it, and the real
migration for the mapping of an existing site's settings.
"""

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tokens.auth import AuthError, authenticate_legacy
from tokens.models import (
    BrownoutWindow,
    LegacyApiKey,
    RehearsedSessionRequest,
    SitePolicy,
    TokenEvent,
    UsageRecord,
)

from .helpers import bearer

pytestmark = pytest.mark.django_db

ALICE_KEY = "a1b2c3d4e5f6-alice-legacy-key"
BOB_KEY = "f6e5d4c3b2a1-bob-legacy-key"
OVERVIEW = "/admin/tokens/legacyapikey/migration/"
NOTIFY = "/admin/tokens/legacyapikey/migration/notify/"


def _set_policy(**fields):
    SitePolicy.objects.filter(pk=1).update(**fields)


def _window(starts_at, ends_at, note=""):
    return BrownoutWindow.objects.create(policy_id=1, starts_at=starts_at, ends_at=ends_at, note=note)


@pytest.fixture
def alice_key(user, policy):
    return LegacyApiKey.objects.import_key(user=user, key=ALICE_KEY)[0]


def _legacy(client, key=ALICE_KEY, **extra):
    return client.get("/api/users/me", headers={"Rest-Api-Key": key}, **extra)


# --- security levels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "level, expected",
    [
        ("compatibility", {"bearer": 200, "legacy_key": 200, "session": 200}),
        ("high", {"bearer": 200, "legacy_key": 401, "session": 200}),
        ("bearer_only", {"bearer": 200, "legacy_key": 401, "session": 401}),
    ],
)
def test_each_security_level_admits_exactly_the_methods_it_names(
    client, user, issued, alice_key, level, expected
):
    _set_policy(security_level=level)
    _token, value = issued
    seen = {
        "bearer": client.get("/api/users/me", **bearer(value)).status_code,
        "legacy_key": _legacy(client).status_code,
    }
    client.force_login(user)
    session = client.get("/api/users/me")
    seen["session"] = session.status_code
    assert seen == expected
    if expected["session"] == 401:
        assert session.json()["error"] == "unauthorized"
        assert "needs a bearer token" in session.json()["detail"]
        assert session["WWW-Authenticate"] == 'Bearer realm="api"'
        # The portal's own pages do not call the API: they keep working.
        assert client.get("/profile/integrations/authorizations/").status_code == 200


def test_a_refused_legacy_key_under_high_points_to_the_migration_guide(client, alice_key):
    _set_policy(security_level="high")
    response = _legacy(client)
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Legacy API keys are switched off. Use a bearer token")
    assert response["Link"].startswith("</docs/migration/>")


def test_a_bearer_request_never_reads_the_policy_and_a_legacy_key_costs_one_lookup(client, issued, alice_key):
    _set_policy(security_level="compatibility", rehearsal_level="bearer_only")
    _window(timezone.now() + timedelta(days=1), timezone.now() + timedelta(days=2))
    _token, value = issued
    client.get("/api/users/me", **bearer(value))
    _legacy(client)
    with CaptureQueriesContext(connection) as bearer_queries:
        assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert not [q for q in bearer_queries if "sitepolicy" in q["sql"] or "brownout" in q["sql"]]
    with CaptureQueriesContext(connection) as legacy_queries:
        assert _legacy(client).status_code == 200
    selects = [q["sql"] for q in legacy_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    # The key, its owner, the policy and the window open now in one lookup; besides it only the read of
    # the client's failed-attempt counter that every legacy key pays before its lookup (tokens.throttle).
    lookups = [sql for sql in selects if "tokens_attemptcounter" not in sql]
    assert len(selects) == 2 and len(lookups) == 1 and "brownout" in lookups[0]


# --- rehearsal ----------------------------------------------------------------------------------------------


def test_a_high_rehearsal_refuses_nothing_and_counts_exactly_the_legacy_requests(
    client, staff_user, issued, alice_key
):
    SitePolicy.objects.filter(pk=1).update(rehearsal_level="high", rehearsal_started_at=timezone.now())
    _token, value = issued
    answers = [
        _legacy(client, HTTP_USER_AGENT="old-cron/1.0", REMOTE_ADDR="198.51.100.4").status_code
        for _ in range(3)
    ]
    answers += [client.get("/api/users/me", **bearer(value)).status_code for _ in range(2)]
    assert answers == [200] * 5
    assert UsageRecord.objects.filter(would_refuse=True).count() == 3
    assert set(UsageRecord.objects.filter(would_refuse=True).values_list("legacy_key_id", flat=True)) == {
        alice_key.pk
    }
    client.force_login(staff_user)
    page = client.get(OVERVIEW)
    report = page.context["rehearsal"]
    assert (report["requests"], report["clients_total"]) == (3, 1)
    assert [(row["legacy_key_id"], row["requests"]) for row in report["per_key"]] == [(alice_key.pk, 3)]
    assert [(c["ip"], c["user_agent"], c["requests"]) for c in report["clients"]] == [
        ("198.51.100.4", "old-cron/1.0", 3)
    ]
    assert "3 requests would fail" in page.content.decode()
    assert "Nothing would break" not in page.content.decode()


def test_a_bearer_only_rehearsal_also_counts_browser_sessions_on_the_api_and_serves_them(
    client, user, policy
):
    SitePolicy.objects.filter(pk=1).update(rehearsal_level="bearer_only", rehearsal_started_at=timezone.now())
    client.force_login(user)
    assert [client.get("/api/users/me").status_code for _ in range(2)] == [200, 200]
    assert RehearsedSessionRequest.objects.filter(user=user).count() == 2
    _set_policy(rehearsal_level="none")
    client.get("/api/users/me")
    assert RehearsedSessionRequest.objects.count() == 2


def test_the_overview_says_nothing_would_break_when_the_rehearsal_found_no_refusal(
    client, staff_user, issued
):
    SitePolicy.objects.filter(pk=1).update(rehearsal_level="high", rehearsal_started_at=timezone.now())
    client.get("/api/users/me", **bearer(issued[1]))
    client.force_login(staff_user)
    assert "Nothing would break" in client.get(OVERVIEW).content.decode()


# --- brownouts ----------------------------------------------------------------------------------------------


def test_a_brownout_refuses_legacy_keys_inside_its_window_to_the_second(alice_key):
    start = datetime(2031, 5, 4, 10, 0, 0, tzinfo=UTC)
    end = start + timedelta(hours=1)
    _window(start, end, note="first brownout")
    _set_policy(legacy_sunset_at=datetime(2031, 9, 1, tzinfo=UTC))
    second = timedelta(seconds=1)
    for moment, refused in ((start - second, False), (start, True), (end - second, True), (end, False)):
        if not refused:
            assert authenticate_legacy(ALICE_KEY, now=moment).method == "legacy_key"
            continue
        with pytest.raises(AuthError) as refusal:
            authenticate_legacy(ALICE_KEY, now=moment)
        assert refusal.value.description == (
            "Legacy API keys are refused during a scheduled brownout until 2031-05-04T11:00:00Z. "
            "They stop for good at 2031-09-01T00:00:00Z. Use a bearer token (Authorization: Bearer <token>)."
        )


@pytest.mark.clock
def test_during_a_brownout_the_api_answers_401_for_keys_and_keeps_serving_bearer_tokens(
    client, issued, alice_key
):
    now = timezone.now()
    _window(now - timedelta(minutes=1), now + timedelta(minutes=10))
    response = _legacy(client)
    assert response.status_code == 401
    assert "scheduled brownout" in response.json()["detail"]
    assert "not set yet" in response.json()["detail"]
    assert UsageRecord.objects.get(legacy_key=alice_key).accepted is False
    assert client.get("/api/users/me", **bearer(issued[1])).status_code == 200


# --- telling the owners -------------------------------------------------------------------------------------


@pytest.fixture
def keys_in_use(user, other_user, make_user, policy):
    now = timezone.now()
    alice_a = LegacyApiKey.objects.import_key(user=user, key=ALICE_KEY)[0]
    alice_b = LegacyApiKey.objects.import_key(user=user, key="second-alice-legacy-key")[0]
    bob_old = LegacyApiKey.objects.import_key(user=other_user, key=BOB_KEY)[0]
    carol = make_user("carol")
    carol_revoked = LegacyApiKey.objects.import_key(user=carol, key="carol-legacy-key-0001")[0]
    LegacyApiKey.objects.filter(pk=alice_a.pk).update(
        last_used_at=now - timedelta(hours=2), last_used_ip="203.0.113.9"
    )
    LegacyApiKey.objects.filter(pk=alice_b.pk).update(
        last_used_at=now - timedelta(days=29), last_used_ip="203.0.113.10"
    )
    LegacyApiKey.objects.filter(pk=bob_old.pk).update(last_used_at=now - timedelta(days=31))
    LegacyApiKey.objects.filter(pk=carol_revoked.pk).update(last_used_at=now, revoked_at=now)
    _set_policy(legacy_sunset_at=datetime(2031, 9, 1, tzinfo=UTC))
    _window(datetime(2031, 5, 4, 10, tzinfo=UTC), datetime(2031, 5, 4, 11, tzinfo=UTC), note="first brownout")
    return alice_a, alice_b


def test_the_owners_of_keys_used_in_the_last_30_days_are_mailed_once_a_day(client, staff_user, keys_in_use):
    alice_a, alice_b = keys_in_use
    client.force_login(staff_user)
    response = client.post(NOTIFY, follow=True)
    assert response.redirect_chain[-1][0] == OVERVIEW
    assert [str(m) for m in response.context["messages"]] == ["Mailed 1 owner about 2 legacy keys."]
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    body = mail.outbox[0].body
    for needle in (
        f"Legacy key #{alice_a.pk}",
        f"Legacy key #{alice_b.pk}",
        "203.0.113.9",
        "203.0.113.10",
        "2031-09-01 00:00",
        "2031-05-04 10:00",
        "first brownout",
        "Authorization: Bearer",
        "/docs/migration/",
    ):
        assert needle in body
    assert ALICE_KEY not in body and "second-alice-legacy-key" not in body
    events = TokenEvent.objects.filter(kind="legacy_notified")
    assert sorted(events.values_list("legacy_key_id", flat=True)) == sorted([alice_a.pk, alice_b.pk])
    assert {e.actor_id for e in events} == {staff_user.pk}

    again = client.post(NOTIFY, follow=True)
    assert "Nobody new to mail" in again.content.decode()
    assert len(mail.outbox) == 1


def test_notifying_owners_needs_a_post(client, staff_user, keys_in_use):
    client.force_login(staff_user)
    assert client.get(NOTIFY).status_code == 405
    assert mail.outbox == []


def test_a_failed_send_is_not_counted_as_sent_and_is_tried_again(client, staff_user, keys_in_use, settings):
    settings.EMAIL_BACKEND = "tests.test_cutover.BrokenBackend"
    client.force_login(staff_user)
    assert "Could not mail: alice" in client.post(NOTIFY, follow=True).content.decode()
    assert not TokenEvent.objects.filter(kind="legacy_notified").exists()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client.post(NOTIFY)
    assert len(mail.outbox) == 1


class BrokenBackend:
    """An e-mail server that is down (a stand-in for the outside world, not for our code)."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("smtp down")


# --- mapping an existing site's settings ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "accepted, sunset_days, expected",
    [(True, None, "compatibility"), (True, 30, "compatibility"), (False, None, "high"), (True, -1, "high")],
)
def test_migrating_gives_an_existing_site_the_level_it_was_effectively_at(accepted, sunset_days, expected):
    before, after = [("tokens", "0005_least_privilege")], [("tokens", "0006_cutover")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    Policy = executor.loader.project_state(before).apps.get_model(
        "tokens", "ExpirationPolicy"
    )  # its name until 0017
    now = timezone.now()
    Policy.objects.update_or_create(
        pk=1,
        defaults={
            "legacy_keys_accepted": accepted,
            "legacy_deprecated_at": now - timedelta(days=60),
            "legacy_sunset_at": None if sunset_days is None else now + timedelta(days=sunset_days),
        },
    )
    executor = MigrationExecutor(connection)
    # Through 0006 and every later migration: the current model reads the row afterwards.
    executor.migrate(after + [n for n in executor.loader.graph.leaf_nodes() if n[0] == "tokens"])
    policy = SitePolicy.objects.get()
    assert (policy.legacy_refusal() is None) is (expected == "compatibility")
