"""The JSON API through Django's test client: every endpoint, permissions, bad input.

Authentication is in test_auth.py, the answers and usage records of the middleware in test_middleware.py.
"""

import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.http import http_date

from tokens.api.fields import TOKEN_FIELDS
from tokens.api.openapi import document
from tokens.constants import SELF_ROTATION_MAILS_PER_HOUR
from tokens.models import SitePolicy, Token, TokenEvent

from .helpers import _snapshot, bearer

pytestmark = pytest.mark.django_db


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
    # The fields, in order, are those the OpenAPI document requires and describes: one list.
    assert list(body) == list(TOKEN_FIELDS)
    schema = document()["components"]["schemas"]["Token"]
    assert schema["required"] == list(TOKEN_FIELDS) and list(schema["properties"]) == list(TOKEN_FIELDS)
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
    response = client.patch(
        f"/api/tokens/{token.pk}",
        json.dumps({"name": "  deploy bot  "}),
        content_type="application/json",
        **bearer(value),
    )
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


@pytest.mark.clock
def test_a_session_can_create_a_token_and_sees_the_value_once(client, user):
    client.force_login(user)
    response = client.post(
        "/api/tokens", {"name": "laptop", "purpose": "scripts"}, content_type="application/json"
    )
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
    response = client.post(
        "/api/tokens", {"name": "more"}, content_type="application/json", **bearer(issued[1])
    )
    assert response.status_code == 403 and Token.objects.count() == 1
    policy.bearer_can_create_tokens = True
    policy.save()
    response = client.post(
        "/api/tokens", {"name": "more"}, content_type="application/json", **bearer(issued[1])
    )
    assert response.status_code == 201


def test_no_expiry_is_only_allowed_where_the_policy_says(client, user, policy):
    client.force_login(user)
    refused = client.post(
        "/api/tokens", {"name": "forever", "expires_at": None}, content_type="application/json"
    )
    assert refused.status_code == 400 and "expires_at" in refused.json()["fields"]
    policy.no_expiry_allowed_for = SitePolicy.NoExpiry.EVERYONE
    policy.save()
    ok = client.post("/api/tokens", {"name": "forever", "expires_at": None}, content_type="application/json")
    assert ok.status_code == 201 and ok.json()["expires_at"] is None


def _in(days):
    return (timezone.now() + timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    "body, field",
    [
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
    ],
)
def test_bad_create_input_gets_400_with_field_messages_and_changes_nothing(client, user, body, field):
    if body.get("expires_at") == "PLACEHOLDER_TOO_SHORT":
        body["expires_at"] = (timezone.now() + timedelta(minutes=2)).isoformat()
    client.force_login(user)
    before = _snapshot(tokens_only=True)
    response = client.post("/api/tokens", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert _snapshot(tokens_only=True) == before


@pytest.mark.parametrize(
    "payload, content_type, status",
    [
        ("{not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ('"name"', "application/json", 400),
        ("name=x", "application/x-www-form-urlencoded", 415),
        ("\xff\xfe", "application/json", 400),
    ],
)
def test_non_json_bodies_are_refused_and_change_nothing(client, user, payload, content_type, status):
    client.force_login(user)
    before = _snapshot(tokens_only=True)
    response = client.post("/api/tokens", payload, content_type=content_type)
    assert response.status_code == status
    assert set(response.json()) >= {"error", "detail"}
    assert _snapshot(tokens_only=True) == before


def test_duplicate_active_names_are_refused_but_a_revoked_name_can_be_reused(client, user, issue):
    token, _ = issue(user, name="ci")
    client.force_login(user)
    duplicate = client.post("/api/tokens", {"name": "ci"}, content_type="application/json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()["fields"]
    token.revoke(actor=user)
    assert client.post("/api/tokens", {"name": "ci"}, content_type="application/json").status_code == 201


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


def test_no_cache_may_store_an_api_answer(client, issued):
    token, value = issued
    for path in ("/api/users/me", f"/api/tokens/{token.pk}", "/api/tokens?page=x"):
        assert client.get(path, **bearer(value))["Cache-Control"] == "no-store"


# --- least privilege ----------------------------------------------------------------------------------------


def test_nobody_can_grant_a_token_a_permission_its_owner_lacks(client, user, issued):
    token, _value = issued
    client.force_login(user)
    before = _snapshot(tokens_only=True)
    created = client.post(
        "/api/tokens", {"name": "x", "permissions": ["auth.view_user"]}, content_type="application/json"
    )
    assert created.status_code == 400
    assert "does not hold: auth.view_user" in created.json()["fields"]["permissions"][0]
    changed = client.patch(
        f"/api/tokens/{token.pk}", {"permissions": ["auth.delete_user"]}, content_type="application/json"
    )
    assert changed.status_code == 400
    assert "does not hold: auth.delete_user" in changed.json()["fields"]["permissions"][0]
    assert _snapshot(tokens_only=True) == before


def test_create_and_patch_accept_access_permissions_and_allowed_ips(client, viewer):
    client.force_login(viewer)
    created = client.post(
        "/api/tokens",
        {
            "name": "ro",
            "access": "read",
            "permissions": ["auth.view_user", "auth.view_user"],
            "allowed_ips": ["203.0.113.7/32", " 2001:DB8::/32 "],
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["access"], body["permissions"], body["allowed_ips"]) == (
        "read",
        ["auth.view_user"],
        ["203.0.113.7", "2001:db8::/32"],
    )
    changed = client.patch(
        f"/api/tokens/{body['id']}",
        {"access": "read_write", "permissions": None, "allowed_ips": []},
        content_type="application/json",
    )
    assert changed.status_code == 200
    assert (changed.json()["access"], changed.json()["permissions"], changed.json()["allowed_ips"]) == (
        "read_write",
        None,
        [],
    )
    kinds = set(TokenEvent.objects.filter(token_id=body["id"]).values_list("kind", flat=True))
    assert {"access_changed", "permissions_changed", "addresses_changed"} <= kinds
    assert set(
        TokenEvent.objects.filter(kind="access_changed").values_list("actor__username", flat=True)
    ) == {"victor"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"access": "write"}, "access"),
        ({"access": None}, "access"),
        ({"permissions": "auth.view_user"}, "permissions"),
        ({"permissions": [1]}, "permissions"),
        ({"permissions": ["auth.view_user\x00"]}, "permissions"),
        ({"allowed_ips": "203.0.113.1"}, "allowed_ips"),
        ({"allowed_ips": ["203.0.113.1/24"]}, "allowed_ips"),
        ({"allowed_ips": ["fe80::1%eth0"]}, "allowed_ips"),
        ({"allowed_ips": ["１.２.３.４"]}, "allowed_ips"),
        ({"allowed_ips": ["10.0.0.1\u202e"]}, "allowed_ips"),
        ({"allowed_ips": ["not an address"]}, "allowed_ips"),
        ({"allowed_ips": [f"10.0.0.{i}" for i in range(51)]}, "allowed_ips"),
        ({"allowed_ips": [[]]}, "allowed_ips"),
    ],
)
def test_bad_restrictions_get_400_with_the_field_and_change_nothing(client, user, issued, body, field):
    token, _value = issued
    client.force_login(user)
    before = _snapshot(tokens_only=True)
    for response in (
        client.post("/api/tokens", {"name": "new", **body}, content_type="application/json"),
        client.patch(f"/api/tokens/{token.pk}", {"name": "renamed", **body}, content_type="application/json"),
    ):
        assert response.status_code == 400, response.json()
        # The field is known, and refused for its value.
        assert field in response.json()["fields"] and response.json()["fields"][field] != ["Unknown field."]
    assert _snapshot(tokens_only=True) == before


def test_the_policy_can_require_an_allow_list_for_tokens_without_expiry(client, user, policy):
    policy.no_expiry_allowed_for = SitePolicy.NoExpiry.EVERYONE
    policy.require_allowed_ips_without_expiry = True
    policy.save()
    client.force_login(user)
    refused = client.post(
        "/api/tokens", {"name": "forever", "expires_at": None}, content_type="application/json"
    )
    assert refused.status_code == 400 and "allowed_ips" in refused.json()["fields"]
    made = client.post(
        "/api/tokens",
        {"name": "forever", "expires_at": None, "allowed_ips": ["192.0.2.1"]},
        content_type="application/json",
    )
    assert made.status_code == 201
    cleared = client.patch(
        f"/api/tokens/{made.json()['id']}", {"allowed_ips": []}, content_type="application/json"
    )
    assert cleared.status_code == 400 and "allowed_ips" in cleared.json()["fields"]


def test_the_policy_chooses_the_default_access_of_new_tokens(client, user, policy):
    policy.default_access = "read"
    policy.save()
    client.force_login(user)
    made = client.post("/api/tokens", {"name": "default"}, content_type="application/json")
    assert made.json()["access"] == "read"


# --- rotation ---------------------------------------------------------------------------------------------


def _rotate(client, url, body=None, **headers):
    data = json.dumps(body) if body is not None else ""
    return client.post(url, data, content_type="application/json", **headers)


def test_rotating_with_a_session_answers_201_with_the_new_value_once_and_links_both_tokens(
    client, user, issued
):
    token, old_value = issued
    client.force_login(user)
    response = _rotate(client, f"/api/tokens/{token.pk}/rotate", {"overlap": 3600})
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["token"].startswith("bpt_") and body["replaces"] == token.pk and body["status"] == "active"
    assert body["name"] == token.name and response["Location"] == f"/api/tokens/{body['id']}"
    old = client.get(f"/api/tokens/{token.pk}").json()
    assert old["status"] == "rotating" and old["replaced_by"] == body["id"] and old["rotation_ends_at"]
    # The new value works at once, the old one still does during the overlap; neither is ever shown again.
    client.logout()
    assert client.get("/api/users/me", **bearer(body["token"])).status_code == 200
    assert client.get("/api/users/me", **bearer(old_value)).status_code == 200
    assert "token" not in client.get(f"/api/tokens/{body['id']}", **bearer(body["token"])).json()


def test_a_rotating_tokens_lookup_is_still_one_query_and_its_responses_carry_deprecation_headers(
    client, issued
):
    token, old_value = issued
    new, new_value = token.rotate(overlap=timedelta(hours=1), actor=token.user)
    token.refresh_from_db()
    client.get("/api/users/me", **bearer(old_value))  # the first use's event
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/users/me", **bearer(old_value))
    assert response.status_code == 200 and len(queries) == 2
    assert response["Deprecation"] == f"@{int(token.rotated_at.timestamp())}"
    assert response["Sunset"] == http_date(token.rotation_ends_at.timestamp())
    page = f"/profile/integrations/authorizations/{token.pk}/"
    assert response["Link"] == f'<{page}>; rel="deprecation"; type="text/html"'
    # Refusals of the rotating token say so too; the new token's responses carry none of it.
    denied = client.delete(f"/api/tokens/{new.pk}", **bearer(old_value))
    assert "Sunset" in denied
    fresh = client.get("/api/users/me", **bearer(new_value))
    assert not {"Deprecation", "Sunset", "Link"} & set(fresh.headers)


def test_the_old_value_works_until_exactly_the_end_of_the_overlap_and_never_after(client, issued):
    token, old_value = issued
    token.rotate(overlap=timedelta(seconds=2), actor=token.user)
    token.refresh_from_db()
    ends = token.rotation_ends_at
    seen = set()
    while timezone.now() < ends + timedelta(milliseconds=500):
        before = timezone.now()
        response = client.get("/api/users/me", **bearer(old_value))
        after = timezone.now()
        if after < ends:
            assert response.status_code == 200 and "Sunset" in response
            seen.add("served")
        elif before >= ends:
            assert response.status_code == 401 and "Sunset" not in response
            assert "rotated" in response.json()["detail"]
            seen.add("refused")
        time.sleep(0.05)
    assert seen == {"served", "refused"}
    assert client.get(f"/api/tokens/{token.pk}", **bearer(old_value)).status_code == 401


@pytest.mark.parametrize("state", ["rotating", "expired", "revoked"])
def test_rotating_a_token_that_is_not_active_is_a_409_conflict_and_creates_nothing(
    client, user, issue, state
):
    token, _ = issue(user)
    if state == "rotating":
        token.rotate(overlap=timedelta(hours=1), actor=user)
    elif state == "expired":
        Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        token.revoke(actor=user)
    client.force_login(user)
    before = _snapshot()
    response = _rotate(client, f"/api/tokens/{token.pk}/rotate", {})
    assert response.status_code == 409
    assert response.json()["error"] == "conflict" and state in response.json()["detail"]
    assert _snapshot() == before


@pytest.mark.parametrize("overlap", [-1, True, 1.5, "3600", 10**40, 7 * 86400 + 1, None, [], {"s": 1}])
def test_a_bad_overlap_is_a_400_naming_the_field_and_changes_nothing(client, user, issued, overlap):
    client.force_login(user)
    before = _snapshot()
    response = _rotate(client, f"/api/tokens/{issued[0].pk}/rotate", {"overlap": overlap})
    assert response.status_code == 400 and "overlap" in response.json()["fields"]
    assert _snapshot() == before


def test_a_bearer_token_rotates_other_tokens_only_when_the_policy_lets_tokens_manage_tokens(
    client, user, issue
):
    target, _ = issue(user, name="target")
    _, value = issue(user, name="caller")
    refused = _rotate(client, f"/api/tokens/{target.pk}/rotate", {}, **bearer(value))
    assert refused.status_code == 403 and Token.objects.get(pk=target.pk).status == "active"
    policy = SitePolicy.load()
    policy.bearer_can_create_tokens = True
    policy.save()
    assert _rotate(client, f"/api/tokens/{target.pk}/rotate", {}, **bearer(value)).status_code == 201


def test_another_users_token_cannot_be_rotated(client, user, other_user, issue):
    theirs, _ = issue(other_user, name="theirs")
    client.force_login(user)
    assert _rotate(client, f"/api/tokens/{theirs.pk}/rotate", {}).status_code == 404
    assert Token.objects.get(pk=theirs.pk).status == "active"


def test_a_token_rotates_itself_with_its_callers_address_recorded_and_the_owner_mailed(client, user, issued):
    token, value = issued
    # No body at all, as `curl -X POST` sends it.
    response = client.generic("POST", "/api/tokens/self/rotate", **bearer(value), REMOTE_ADDR="198.51.100.7")
    assert response.status_code == 201 and response.json()["replaces"] == token.pk
    assert "no-store" in response["Cache-Control"]
    event = TokenEvent.objects.get(token=token, kind=TokenEvent.Kind.ROTATED)
    assert event.ip == "198.51.100.7"
    [message] = mail.outbox
    assert message.to == [user.email] and "198.51.100.7" in message.body
    assert value not in message.body and response.json()["token"] not in message.body
    # No body: no overlap, so the calling value stops at once; the new one works.
    assert client.get("/api/users/me", **bearer(value)).status_code == 401
    assert client.get("/api/users/me", **bearer(response.json()["token"])).status_code == 200


def test_self_rotation_can_be_switched_off_and_needs_a_read_write_bearer_token(client, user, issue):
    _, read_only = issue(user, name="ro", access="read")
    refused = client.generic("POST", "/api/tokens/self/rotate", **bearer(read_only))
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    client.force_login(user)
    assert client.generic("POST", "/api/tokens/self/rotate").status_code == 403  # a session is not a token
    client.logout()
    policy = SitePolicy.load()
    policy.self_rotation_allowed = False
    policy.save()
    _, value = issue(user, name="rw")
    before = _snapshot()
    assert client.generic("POST", "/api/tokens/self/rotate", **bearer(value)).status_code == 403
    assert _snapshot()[0] == before[0]


def test_the_token_list_filters_rotating_tokens(client, user, issue):
    token, _ = issue(user)
    token.rotate(overlap=timedelta(hours=1), actor=user)
    client.force_login(user)
    body = client.get("/api/tokens?status=rotating").json()
    assert [t["id"] for t in body["results"]] == [token.pk]


# --- a bearer token never grants more than it holds ---------------------------------------------------------


@pytest.fixture
def holder(make_user):
    """An owner who may list users and read the event feed: a token narrowed to one of them is narrower."""
    holder = make_user("hana")
    holder.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_user", "view_tokenevent"]),
    )
    return holder


def _refused_for_scope(response):
    assert response.status_code == 403, response.content
    assert response.json()["error"] == "insufficient_scope"
    assert response["WWW-Authenticate"].startswith('Bearer realm="api", error="insufficient_scope"')
    assert "cannot grant more than it holds" in response.json()["detail"]


def test_a_narrowed_token_can_widen_neither_itself_nor_its_siblings(client, holder, issue):
    caller, value = issue(holder, name="resource server", permissions=["auth.view_user"])
    read_only, _ = issue(holder, name="dashboard", access="read")
    bound, _ = issue(holder, name="deploy", allowed_ips=["192.0.2.0/24"])
    before = _snapshot(tokens_only=True)
    for target, body in [
        (caller, {"permissions": None}),
        (caller, {"permissions": ["auth.view_user", "tokens.view_tokenevent"]}),
        (read_only, {"access": "read_write"}),
        (bound, {"allowed_ips": []}),
        (bound, {"allowed_ips": ["0.0.0.0/0"]}),
        # A change within the caller's own limits still widens a sibling that can do more than it can.
        (bound, {"allowed_ips": ["192.0.2.0/24", "198.51.100.0/24"]}),
    ]:
        response = client.patch(
            f"/api/tokens/{target.pk}",
            {**body, "name": f"renamed {target.pk}"},
            content_type="application/json",
            **bearer(value),
        )
        _refused_for_scope(response)
    assert _snapshot(tokens_only=True) == before  # nothing changed, not even a name
    assert client.get("/api/events", **bearer(value)).status_code == 403
    # The owner's browser session may do anything the owner may.
    client.force_login(holder)
    widened = client.patch(f"/api/tokens/{caller.pk}", {"permissions": None}, content_type="application/json")
    assert widened.status_code == 200 and widened.json()["permissions"] is None


def test_an_address_bound_token_grants_only_a_non_empty_allow_list_inside_its_own(
    client, holder, issue, policy
):
    policy.bearer_can_create_tokens = True
    policy.save()
    _caller, value = issue(holder, name="bound", allowed_ips=["192.0.2.0/24", "2001:db8::/32"])
    sibling, _ = issue(holder, name="sibling", allowed_ips=["192.0.2.9"])
    inside = {"REMOTE_ADDR": "192.0.2.200"}

    def patch(body):
        return client.patch(
            f"/api/tokens/{sibling.pk}", body, content_type="application/json", **bearer(value), **inside
        )

    for allowed in ([], ["192.0.2.0/23"], ["198.51.100.1"], ["::ffff:192.0.2.1"], ["2001:db8::/31"]):
        _refused_for_scope(patch({"allowed_ips": allowed}))
    assert Token.objects.get(pk=sibling.pk).allowed_ips == ["192.0.2.9"]
    assert patch({"allowed_ips": ["192.0.2.0/25", "2001:db8:1::/48"]}).status_code == 200
    # Creating: an allow-list is required, inside the caller's own.
    created = []
    for allowed, status in ((None, 403), ([], 403), (["10.0.0.1"], 403), (["192.0.2.7"], 201)):
        body = {"name": f"made {len(created)}"} | ({} if allowed is None else {"allowed_ips": allowed})
        response = client.post(
            "/api/tokens", body, content_type="application/json", **bearer(value), **inside
        )
        assert response.status_code == status, response.content
        created.append(response)
    assert Token.objects.filter(name__startswith="made").count() == 1


def test_a_narrowed_token_creates_and_rotates_only_tokens_within_its_own_list(client, holder, issue, policy):
    policy.bearer_can_create_tokens = True
    policy.save()
    _caller, value = issue(holder, name="narrow", permissions=["auth.view_user"])
    wide, _ = issue(holder, name="wide")
    before = _snapshot()[:2]
    for body in (
        {"name": "all"},
        {"name": "all", "permissions": None},
        {"name": "more", "permissions": ["auth.view_user", "tokens.view_tokenevent"]},
    ):
        _refused_for_scope(client.post("/api/tokens", body, content_type="application/json", **bearer(value)))
    # Rotating a wider sibling would hand the caller a value that can do more than it can.
    _refused_for_scope(_rotate(client, f"/api/tokens/{wide.pk}/rotate", {}, **bearer(value)))
    assert _snapshot()[:2] == before and Token.objects.get(pk=wide.pk).status == "active"
    made = client.post(
        "/api/tokens", {"name": "less", "permissions": []}, content_type="application/json", **bearer(value)
    )
    assert made.status_code == 201 and made.json()["permissions"] == []
    same = client.post(
        "/api/tokens",
        {"name": "same", "permissions": ["auth.view_user"]},
        content_type="application/json",
        **bearer(value),
    )
    assert same.status_code == 201
    assert _rotate(client, f"/api/tokens/{same.json()['id']}/rotate", {}, **bearer(value)).status_code == 201
    # A token rotating itself keeps exactly what it had: within its own limits by definition.
    itself = client.generic("POST", "/api/tokens/self/rotate", **bearer(value))
    assert itself.status_code == 201 and itself.json()["permissions"] == ["auth.view_user"]


def test_tightening_is_always_allowed_even_on_a_wider_sibling(client, holder, issue):
    _caller, value = issue(
        holder, name="narrow", permissions=["auth.view_user"], allowed_ips=["192.0.2.0/24"]
    )
    wide, _ = issue(holder, name="wide")
    inside = {"REMOTE_ADDR": "192.0.2.5"}
    for body in (
        {"access": "read"},
        {"allowed_ips": ["198.51.100.0/24"]},
        {"permissions": ["auth.view_user"]},
    ):
        response = client.patch(
            f"/api/tokens/{wide.pk}", body, content_type="application/json", **bearer(value), **inside
        )
        assert response.status_code == 200, response.content
    wide.refresh_from_db()
    assert (wide.access, wide.permissions, wide.allowed_ips) == (
        "read",
        ["auth.view_user"],
        ["198.51.100.0/24"],
    )


# --- a rotation lineage has at most two live values ---------------------------------------------------------


def test_chained_self_rotation_keeps_two_live_values_within_the_cap_and_mails_a_few(
    client, user, issue, policy, mailoutbox
):
    policy.max_active_tokens = 1
    policy.save()
    _token, value = issue(user)
    values = [value]
    for _ in range(10):
        response = _rotate(client, "/api/tokens/self/rotate", {"overlap": 3600}, **bearer(values[-1]))
        assert response.status_code == 201, response.content
        values.append(response.json()["token"])
    working = [v for v in values if client.get("/api/users/me", **bearer(v)).status_code == 200]
    assert working == values[-2:]
    assert Token.objects.live().count() == 2
    # The pair counts as one token against the cap of one: nothing else can be created.
    client.force_login(user)
    refused = client.post("/api/tokens", {"name": "another"}, content_type="application/json")
    assert refused.status_code == 400 and "limit" in refused.json()["fields"]["non_field_errors"][0]
    # Mails are rate-limited per lineage: the last one says so; every rotation is in the Activity Stream.
    assert len(mailoutbox) == SELF_ROTATION_MAILS_PER_HOUR
    assert "not mailed" in mailoutbox[-1].body and "not mailed" not in mailoutbox[0].body
    assert (
        TokenEvent.objects.filter(kind=TokenEvent.Kind.ROTATED, detail__startswith="replaces").count() == 10
    )
    # Revoking the newest ends the one it replaced too: no value of the lineage is left.
    newest = Token.objects.get(replaced_by__isnull=True, replaces__isnull=False)
    assert client.delete(f"/api/tokens/{newest.pk}").status_code == 204
    client.logout()
    assert all(client.get("/api/users/me", **bearer(v)).status_code == 401 for v in values)


def test_self_rotation_mails_start_again_an_hour_later(client, user, issue, mailoutbox):
    _token, value = issue(user)
    for _ in range(SELF_ROTATION_MAILS_PER_HOUR + 1):
        value = _rotate(client, "/api/tokens/self/rotate", {}, **bearer(value)).json()["token"]
    assert len(mailoutbox) == SELF_ROTATION_MAILS_PER_HOUR
    Token.objects.update(created_at=F("created_at") - timedelta(minutes=61))
    assert _rotate(client, "/api/tokens/self/rotate", {}, **bearer(value)).status_code == 201
    assert len(mailoutbox) == SELF_ROTATION_MAILS_PER_HOUR + 1
