"""tokens/middleware.py: how an API request is answered and what is recorded of it.

The RFC 6750 challenge and JSON body of a 401, JSON errors for unknown URLs and wrong methods, 503 when the
database is down, CSRF for sessions only, the Deprecation, Sunset and Link headers of legacy keys, and
every use of a credential recorded, accepted or refused, with exact counts.
"""

import json
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone

from tokens.models import Token, TokenEvent, UsageRecord
from tokens.usage.read import usage_totals

from .helpers import ALICE_KEY, LINK, _set_policy, bearer, me

pytestmark = pytest.mark.django_db


# --- answers: challenges, JSON errors, 503, CSRF ------------------------------------------------------------


def test_no_credentials_get_401_with_a_bearer_challenge_and_json(client):
    response = client.get("/api/users/me")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.parametrize(
    "value, detail",
    [
        ("nonsense", "malformed"),
        ("bpt_" + "A" * 52, "malformed"),
    ],
)
def test_malformed_tokens_get_invalid_token(client, value, detail):
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert "error_description=" in response["WWW-Authenticate"]
    assert detail in response.json()["detail"]


def test_a_failed_token_never_falls_back_to_the_session(client, user, issued):
    client.force_login(user)
    assert client.get("/api/users/me").json()["auth"]["method"] == "session"
    assert client.get("/api/users/me", **bearer("bpt_garbage")).status_code == 401


def test_bearer_requests_need_no_csrf_token_but_session_writes_do(user, issued):
    strict = Client(enforce_csrf_checks=True)
    token, value = issued
    assert (
        strict.patch(
            f"/api/tokens/{token.pk}",
            json.dumps({"name": "x"}),
            content_type="application/json",
            **bearer(value),
        ).status_code
        == 200
    )
    strict.force_login(user)
    refused = strict.patch(
        f"/api/tokens/{token.pk}", json.dumps({"name": "y"}), content_type="application/json"
    )
    assert refused.status_code == 403
    assert Token.objects.get(pk=token.pk).name == "x"


def test_unknown_api_urls_and_wrong_methods_answer_json(client, issued):
    missing = client.get("/api/nothing-here", **bearer(issued[1]))
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.put("/api/tokens", **bearer(issued[1]))
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert "GET" in wrong["Allow"]


def test_api_errors_are_json_503_when_the_database_is_down(client, issued, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("server closed the connection")

    value = issued[1]
    connection.close()
    monkeypatch.setattr(connection, "get_new_connection", refuse)
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"


# --- legacy keys: Deprecation, Sunset and the migration guide -----------------------------------------------


@pytest.mark.clock
def test_every_legacy_response_is_marked_deprecated_with_a_sunset_and_a_link(client, alice_key):
    deprecated = timezone.now().replace(microsecond=0) - timedelta(days=10)
    sunset = (timezone.now() + timedelta(days=60)).replace(microsecond=0)
    _set_policy(legacy_deprecated_at=deprecated, legacy_sunset_at=sunset)
    for response in (
        me(client, ALICE_KEY),
        client.get("/api/tokens/999", headers={"Rest-Api-Key": ALICE_KEY}),
    ):
        assert response.status_code in (200, 404)
        assert response["Deprecation"] == f"@{int(deprecated.timestamp())}"
        assert response["Sunset"].endswith(" GMT")
        assert parsedate_to_datetime(response["Sunset"]) == sunset
        assert response["Link"] == LINK


def test_without_a_sunset_date_no_sunset_header_is_sent(client, alice_key):
    _set_policy(legacy_sunset_at=None)
    response = me(client, ALICE_KEY)
    assert response.status_code == 200
    assert "Sunset" not in response
    assert response["Deprecation"].startswith("@") and response["Link"] == LINK


def test_the_link_points_to_the_migration_guide(client, alice_key):
    target = me(client, ALICE_KEY)["Link"].split(">")[0].lstrip("<")
    guide = client.get(target)
    assert guide.status_code == 200
    text = guide.content.decode()
    for needle in (
        "Authorization: Bearer",
        "Rest-Api-Key",
        "curl",
        "import requests",
        "Sunset",
        "Deprecation",
    ):
        assert needle in text


def test_an_unknown_or_malformed_key_is_pointed_to_the_migration_guide(client, policy):
    for key in ("not-a-key-anyone-was-given", "tab\tinside"):
        response = me(client, key)
        assert response.status_code == 401
        assert response["Link"] == LINK
        assert "bearer token" in response.json()["detail"] or "malformed" in response.json()["detail"]
    assert "Link" not in client.get("/api/users/me", HTTP_AUTHORIZATION="Bearer bpt_nope")


# --- every use recorded -------------------------------------------------------------------------------------


def test_every_use_is_recorded_with_its_details(client, issued):
    token, value = issued
    client.get(
        "/api/users/me", HTTP_USER_AGENT="deploy-script/1.0", REMOTE_ADDR="203.0.113.9", **bearer(value)
    )
    client.get("/api/tokens/999", **bearer(value))
    records = list(UsageRecord.objects.order_by("pk"))
    assert [(r.method, r.path, r.status, r.accepted) for r in records] == [
        ("GET", "/api/users/me", 200, True),
        ("GET", "/api/tokens/999", 404, True),
    ]
    assert records[0].ip == "203.0.113.9" and records[0].user_agent == "deploy-script/1.0"
    token.refresh_from_db()
    usage_totals([token])
    assert token.request_count == 2 and token.last_used_ip == "127.0.0.1"
    assert TokenEvent.objects.filter(token=token, kind="first_used").count() == 1


def test_refused_attempts_with_a_well_formed_token_are_recorded_but_not_counted_as_use(client, user, issued):
    token, value = issued
    token.revoke(actor=user)
    client.get("/api/users/me", **bearer(value))
    record = UsageRecord.objects.get()
    assert (record.status, record.accepted) == (401, False)
    token.refresh_from_db()
    assert token.request_count == 0 and token.last_used_at is None


def test_a_missing_permission_is_recorded_as_a_refused_use(client, user, issued):
    _token, value = issued
    assert client.get("/api/users", **bearer(value)).status_code == 403
    record = UsageRecord.objects.get()
    assert (record.status, record.accepted) == (403, False)


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_every_use_is_recorded_with_client_details_and_one_activity_event_a_day(client, alice_key, user):
    for _ in range(3):
        me(client, ALICE_KEY, HTTP_USER_AGENT="old-cron/1.0", REMOTE_ADDR="198.51.100.4")
    records = UsageRecord.objects.filter(legacy_key=alice_key)
    assert records.count() == 3
    assert {(r.user_id, r.accepted, r.status, r.ip, r.user_agent, r.path) for r in records} == {
        (user.pk, True, 200, "198.51.100.4", "old-cron/1.0", "/api/users/me")
    }
    alice_key.refresh_from_db()
    usage_totals([alice_key])
    assert alice_key.request_count == 3
    assert (alice_key.last_used_ip, alice_key.last_used_user_agent) == ("198.51.100.4", "old-cron/1.0")
    assert alice_key.last_used_at is not None
    events = TokenEvent.objects.filter(legacy_key=alice_key, kind="legacy_used")
    assert events.count() == 1
    assert events.get().user == user and events.get().detail == timezone.now().date().isoformat()
