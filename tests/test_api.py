"""The JSON API through Django's test client: authentication, errors, every endpoint, bad input."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tokens.models import ExpirationPolicy, Token, TokenEvent, UsageRecord
from tokens.models.usage import usage_totals

from .conftest import bearer

pytestmark = pytest.mark.django_db


def _snapshot():
    return (
        list(Token.objects.order_by("pk").values()),
        list(TokenEvent.objects.order_by("pk").values()),
    )


# --- authentication ---------------------------------------------------------------------------------------


def test_a_valid_token_authenticates_as_its_owner(client, user, issued):
    token, value = issued
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert body["auth"] == {"method": "bearer", "token_id": token.pk, "legacy_key_id": None}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(client, issued, scheme):
    assert client.get("/api/users/me", HTTP_AUTHORIZATION=f"{scheme} {issued[1]}").status_code == 200


def test_no_credentials_get_401_with_a_bearer_challenge_and_json(client):
    response = client.get("/api/users/me")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.parametrize("value, detail", [
    ("nonsense", "malformed"),
    ("bpt_" + "A" * 52, "malformed"),
])
def test_malformed_tokens_get_invalid_token(client, value, detail):
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert "error_description=" in response["WWW-Authenticate"]
    assert detail in response.json()["detail"]


def test_a_forged_token_is_refused_without_any_query(client, issued):
    value = issued[1]
    forged = value[:-8] + ("A" * 8 if not value.endswith("A" * 8) else "B" * 8)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/users/me", **bearer(forged))
    assert response.status_code == 401
    assert len(queries) == 0


def test_a_valid_token_costs_one_lookup_and_one_usage_insert(client, issued):
    client.get("/api/users/me", **bearer(issued[1]))  # first use writes the first_used event once
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/users/me", **bearer(issued[1]))
    assert response.status_code == 200
    sql = [q["sql"] for q in queries]
    assert len(sql) == 2, sql
    assert sql[0].startswith("SELECT") and "public_id" in sql[0]
    assert sql[1].startswith("INSERT INTO tokens_usagerecord")


def test_a_known_id_with_a_wrong_secret_answers_like_an_unknown_id(client, user, issue, settings):
    token, value = issue(user)
    Token.objects.filter(pk=token.pk).update(digest="0" * 64)
    wrong = client.get("/api/users/me", **bearer(value))
    token.delete()
    unknown = client.get("/api/users/me", **bearer(value))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_a_revoked_token_fails_on_the_very_next_request(client, user, issued):
    token, value = issued
    assert client.get("/api/users/me", **bearer(value)).status_code == 200
    token.revoke(actor=user)
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_an_expired_token_fails(client, user, issued):
    token, value = issued
    Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_a_deactivated_owners_tokens_stop_at_once(client, user, issued):
    user.is_active = False
    user.save()
    response = client.get("/api/users/me", **bearer(issued[1]))
    assert response.status_code == 401 and "deactivated" in response.json()["detail"]


def test_a_failed_token_never_falls_back_to_the_session(client, user, issued):
    client.force_login(user)
    assert client.get("/api/users/me").json()["auth"]["method"] == "session"
    assert client.get("/api/users/me", **bearer("bpt_garbage")).status_code == 401


def test_other_authorization_schemes_count_as_no_credentials(client):
    response = client.get("/api/users/me", HTTP_AUTHORIZATION="Basic YWxpY2U6c2VjcmV0")
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_bearer_requests_need_no_csrf_token_but_session_writes_do(user, issued):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    token, value = issued
    assert strict.patch(f"/api/tokens/{token.pk}", json.dumps({"name": "x"}), content_type="application/json",
                        **bearer(value)).status_code == 200
    strict.force_login(user)
    refused = strict.patch(f"/api/tokens/{token.pk}", json.dumps({"name": "y"}), content_type="application/json")
    assert refused.status_code == 403
    assert Token.objects.get(pk=token.pk).name == "x"


# --- permissions --------------------------------------------------------------------------------------------


def test_tokens_inherit_the_owners_permissions_both_ways(client, user, viewer, issue):
    _, plain = issue(user)
    _, privileged = issue(viewer)
    denied = client.get("/api/users", **bearer(plain))
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied["WWW-Authenticate"]
    assert denied.json()["error"] == "insufficient_scope"
    allowed = client.get("/api/users", **bearer(privileged))
    assert allowed.status_code == 200
    assert {u["username"] for u in allowed.json()["results"]} == {"alice", "victor"}
    assert client.get(f"/api/users/{user.pk}", **bearer(privileged)).json()["username"] == "alice"
    assert client.get(f"/api/users/{user.pk}", **bearer(plain)).status_code == 403


def test_a_staff_token_can_do_what_its_staff_owner_can(client, staff_user, user, issue):
    _, value = issue(staff_user)
    assert client.get(f"/api/users/{user.pk}", **bearer(value)).status_code == 200


# --- tokens endpoints ---------------------------------------------------------------------------------------


def test_the_token_list_holds_only_the_callers_tokens_paginated(client, user, other_user, issue):
    for i in range(5):
        issue(user, name=f"t{i}")
    issue(other_user, name="theirs")
    _, value = issue(user, name="caller")
    body = client.get("/api/tokens?page_size=2", **bearer(value)).json()
    assert body["count"] == 6 and len(body["results"]) == 2 and body["previous"] is None
    assert "page=2" in body["next"]
    names = [t["name"] for t in client.get("/api/tokens?page_size=100", **bearer(value)).json()["results"]]
    assert "theirs" not in names and names[0] == "caller"
    last = client.get("/api/tokens?page_size=2&page=3", **bearer(value)).json()
    assert last["next"] is None and len(last["results"]) == 2


@pytest.mark.parametrize("query", ["page=0", "page=x", "page_size=101", "page_size=0", "status=gone"])
def test_bad_list_parameters_get_400(client, issued, query):
    response = client.get(f"/api/tokens?{query}", **bearer(issued[1]))
    assert response.status_code == 400 and "fields" in response.json()


def test_a_page_past_the_end_is_404(client, issued):
    assert client.get("/api/tokens?page=9", **bearer(issued[1])).status_code == 404


def test_token_json_never_carries_the_value_or_digest(client, issued):
    token, value = issued
    body = client.get(f"/api/tokens/{token.pk}", **bearer(value)).json()
    assert set(body) == {"id", "name", "purpose", "status", "created_at", "expires_at", "revoked_at", "last_used_at",
                         "last_used_ip", "last_used_user_agent", "request_count", "last_characters"}
    text = json.dumps(body)
    assert value not in text and token.digest not in text
    assert body["last_characters"] == value[-4:]
    assert body["created_at"].endswith("+00:00")


def test_another_users_token_is_404_like_a_missing_one(client, user, other_user, issue):
    theirs, _ = issue(other_user)
    _, value = issue(user, name="mine")
    for method in ("get", "delete"):
        assert getattr(client, method)(f"/api/tokens/{theirs.pk}", **bearer(value)).status_code == 404
        assert getattr(client, method)("/api/tokens/999999", **bearer(value)).status_code == 404
    assert Token.objects.get(pk=theirs.pk).revoked_at is None


def test_rename_changes_the_name_and_records_an_event(client, issued):
    token, value = issued
    response = client.patch(f"/api/tokens/{token.pk}", json.dumps({"name": "  deploy bot  "}),
                            content_type="application/json", **bearer(value))
    assert response.status_code == 200 and response.json()["name"] == "deploy bot"
    assert TokenEvent.objects.filter(token=token, kind="renamed").exists()


def test_delete_revokes_and_a_second_delete_is_harmless(client, user, issue):
    token, _ = issue(user, name="victim")
    _, value = issue(user, name="admin")
    first = client.delete(f"/api/tokens/{token.pk}", **bearer(value))
    assert first.status_code == 204 and first.content == b""
    assert client.delete(f"/api/tokens/{token.pk}", **bearer(value)).status_code == 204
    assert Token.objects.get(pk=token.pk).status == "revoked"
    assert TokenEvent.objects.filter(token=token, kind="revoked").count() == 1


def test_a_session_can_create_a_token_and_sees_the_value_once(client, user):
    client.force_login(user)
    response = client.post("/api/tokens", {"name": "laptop", "purpose": "scripts"}, content_type="application/json")
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    value = body.pop("token")
    assert value.startswith("bpt_") and body["status"] == "active"
    expires = timezone.datetime.fromisoformat(body["expires_at"])
    assert abs((expires - timezone.now()) - timedelta(days=30)) < timedelta(minutes=1)
    assert value not in json.dumps(client.get(f"/api/tokens/{body['id']}").json())
    assert client.get("/api/users/me", **bearer(value)).status_code == 200


def test_a_bearer_token_cannot_mint_tokens_unless_the_policy_allows_it(client, issued, policy):
    response = client.post("/api/tokens", {"name": "more"}, content_type="application/json", **bearer(issued[1]))
    assert response.status_code == 403 and Token.objects.count() == 1
    policy.bearer_can_create_tokens = True
    policy.save()
    response = client.post("/api/tokens", {"name": "more"}, content_type="application/json", **bearer(issued[1]))
    assert response.status_code == 201


def test_no_expiry_is_only_allowed_where_the_policy_says(client, user, policy):
    client.force_login(user)
    refused = client.post("/api/tokens", {"name": "forever", "expires_at": None}, content_type="application/json")
    assert refused.status_code == 400 and "expires_at" in refused.json()["fields"]
    policy.no_expiry_allowed_for = ExpirationPolicy.NoExpiry.EVERYONE
    policy.save()
    ok = client.post("/api/tokens", {"name": "forever", "expires_at": None}, content_type="application/json")
    assert ok.status_code == 201 and ok.json()["expires_at"] is None


def _in(days):
    return (timezone.now() + timedelta(days=days)).isoformat()


@pytest.mark.parametrize("body, field", [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "nul\x00byte"}, "name"),
    ({"name": 42}, "name"),
    ({}, "name"),
    ({"name": "ok", "color": "red"}, "color"),
    ({"name": "ok", "purpose": ["list"]}, "purpose"),
    ({"name": "ok", "purpose": "p" * 501}, "purpose"),
    ({"name": "ok", "expires_at": "yesterday"}, "expires_at"),
    ({"name": "ok", "expires_at": 12}, "expires_at"),
    ({"name": "ok", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
    ({"name": "ok", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "ok", "expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "ok", "expires_at": "PLACEHOLDER_TOO_SHORT"}, "expires_at"),
])
def test_bad_create_input_gets_400_with_field_messages_and_changes_nothing(client, user, body, field):
    if body.get("expires_at") == "PLACEHOLDER_TOO_SHORT":
        body["expires_at"] = (timezone.now() + timedelta(minutes=2)).isoformat()
    client.force_login(user)
    before = _snapshot()
    response = client.post("/api/tokens", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert _snapshot() == before


@pytest.mark.parametrize("payload, content_type, status", [
    ("{not json", "application/json", 400),
    ("[1, 2]", "application/json", 400),
    ('"name"', "application/json", 400),
    ("name=x", "application/x-www-form-urlencoded", 415),
    ("\xff\xfe", "application/json", 400),
])
def test_non_json_bodies_are_refused_and_change_nothing(client, user, payload, content_type, status):
    client.force_login(user)
    before = _snapshot()
    response = client.post("/api/tokens", payload, content_type=content_type)
    assert response.status_code == status
    assert set(response.json()) >= {"error", "detail"}
    assert _snapshot() == before


def test_duplicate_active_names_are_refused_but_a_revoked_name_can_be_reused(client, user, issue):
    token, _ = issue(user, name="ci")
    client.force_login(user)
    duplicate = client.post("/api/tokens", {"name": "ci"}, content_type="application/json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()["fields"]
    token.revoke(actor=user)
    assert client.post("/api/tokens", {"name": "ci"}, content_type="application/json").status_code == 201


def test_unknown_api_urls_and_wrong_methods_answer_json(client, issued):
    missing = client.get("/api/nothing-here", **bearer(issued[1]))
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.put("/api/tokens", **bearer(issued[1]))
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert "GET" in wrong["Allow"]


def test_api_errors_are_json_503_when_the_database_is_down(client, issued, monkeypatch):
    from django.db import OperationalError

    def refuse(*args, **kwargs):
        raise OperationalError("server closed the connection")

    value = issued[1]
    connection.close()
    monkeypatch.setattr(connection, "get_new_connection", refuse)
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"


def test_every_use_is_recorded_with_its_details(client, issued):
    token, value = issued
    client.get("/api/users/me", HTTP_USER_AGENT="deploy-script/1.0", REMOTE_ADDR="203.0.113.9", **bearer(value))
    client.get("/api/tokens/999", **bearer(value))
    records = list(UsageRecord.objects.order_by("pk"))
    assert [(r.method, r.path, r.status, r.accepted) for r in records] == [
        ("GET", "/api/users/me", 200, True), ("GET", "/api/tokens/999", 404, True)]
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


def test_the_client_ip_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(client, issued, settings):
    token, value = issued
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    client.get("/api/users/me", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="1.2.3.4", **bearer(value))
    client.get("/api/users/me", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 10.2.2.2", **bearer(value))
    client.get("/api/users/me", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="evil", **bearer(value))
    assert list(UsageRecord.objects.order_by("pk").values_list("ip", flat=True)) == [
        "198.51.100.7", "1.2.3.4", "10.1.1.1"]


def test_the_usage_endpoint_returns_daily_counts_and_recent_requests(client, issued):
    token, value = issued
    for _ in range(3):
        client.get("/api/users/me", **bearer(value))
    body = client.get(f"/api/tokens/{token.pk}/usage", **bearer(value)).json()
    assert body["request_count"] == 3  # the usage request itself is recorded after it answers
    assert len(body["daily"]) == 30 and body["daily"][-1]["accepted"] == 3
    assert body["count"] == 3 and body["results"][0]["path"] == "/api/users/me"
    assert body["client_ips"][0]["ip"] == "127.0.0.1"


def test_the_active_token_limit_is_enforced_with_a_clear_message(client, user, issue, policy):
    policy.max_active_tokens = 2
    policy.save()
    first, _ = issue(user, name="one")
    issue(user, name="two")
    client.force_login(user)
    refused = client.post("/api/tokens", {"name": "three"}, content_type="application/json")
    assert refused.status_code == 400
    assert "limit of 2 active tokens" in refused.json()["fields"]["non_field_errors"][0]
    assert Token.objects.count() == 2
    first.revoke(actor=user)  # revoked tokens do not count
    assert client.post("/api/tokens", {"name": "three"}, content_type="application/json").status_code == 201


@pytest.mark.parametrize("header", ["Bearer\t\tbpt_x y", "Token bpt_abc", "Bearer,bpt_abc", "bearer", "Bearer  "])
def test_a_malformed_bearer_header_is_refused_even_with_a_session(client, user, header):
    client.force_login(user)
    response = client.get("/api/users/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_tab_may_separate_the_scheme_from_the_token(client, issued):
    assert client.get("/api/users/me", HTTP_AUTHORIZATION=f"Bearer\t{issued[1]}").status_code == 200


def test_no_cache_may_store_an_api_answer(client, issued):
    token, value = issued
    for path in ("/api/users/me", f"/api/tokens/{token.pk}", "/api/tokens?page=x"):
        assert client.get(path, **bearer(value))["Cache-Control"] == "no-store"
