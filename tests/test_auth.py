"""tokens/auth.py through Django's test client: who a request authenticates as, and when it does not.

The bearer and legacy-key lookups (scheme, signature, revoked, expired, deactivated owner, sunset, pepper
rotation), the restrictions checked from the lookup's one row (read-only access, narrowed permissions,
the address allow-list), and what the lookup costs in queries.
"""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tokens import credentials
from tokens.auth import AuthError, authenticate_bearer, narrow_permissions
from tokens.models import LegacyApiKey, Token, TokenStatus, UsageRecord

from .helpers import ALICE_KEY, BOB_KEY, LINK, _set_policy, _snapshot, bearer, me

pytestmark = pytest.mark.django_db


# --- bearer tokens ------------------------------------------------------------------------------------------


def test_a_valid_token_authenticates_as_its_owner(client, user, issued):
    token, value = issued
    response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert body["auth"] == {
        "method": "bearer",
        "token_id": token.pk,
        "legacy_key_id": None,
        "access": "read_write",
    }


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(client, issued, scheme):
    assert client.get("/api/users/me", HTTP_AUTHORIZATION=f"{scheme} {issued[1]}").status_code == 200


def test_a_tab_may_separate_the_scheme_from_the_token(client, issued):
    assert client.get("/api/users/me", HTTP_AUTHORIZATION=f"Bearer\t{issued[1]}").status_code == 200


def test_other_authorization_schemes_count_as_no_credentials(client):
    response = client.get("/api/users/me", HTTP_AUTHORIZATION="Basic YWxpY2U6c2VjcmV0")
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "header", ["Bearer\t\tbpt_x y", "Token bpt_abc", "Bearer,bpt_abc", "bearer", "Bearer  "]
)
def test_a_malformed_bearer_header_is_refused_even_with_a_session(client, user, header):
    client.force_login(user)
    response = client.get("/api/users/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


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


# --- the status rule, written three times ------------------------------------------------------------------

HOUR = timedelta(hours=1)

# Each row: the token's columns relative to now, and the status they make. Every status is here, and
# every order in which its conditions can combine (a revocation and an expiry, a rotation past the
# token's expiry, a rotation whose overlap ended).
STATES = [
    ("active", {"expires_at": HOUR}, TokenStatus.ACTIVE),
    ("never expires", {"expires_at": None}, TokenStatus.ACTIVE),
    ("expired", {"expires_at": -HOUR}, TokenStatus.EXPIRED),
    ("revoked", {"expires_at": HOUR, "revoked_at": -HOUR}, TokenStatus.REVOKED),
    ("revoked and expired", {"expires_at": -HOUR, "revoked_at": -2 * HOUR}, TokenStatus.REVOKED),
    (
        "rotating",
        {"expires_at": 2 * HOUR, "rotated_at": -HOUR, "rotation_ends_at": HOUR},
        TokenStatus.ROTATING,
    ),
    (
        "rotating, never expires",
        {"expires_at": None, "rotated_at": -HOUR, "rotation_ends_at": HOUR},
        TokenStatus.ROTATING,
    ),
    (
        "rotating past its expiry",
        {"expires_at": -HOUR, "rotated_at": -HOUR, "rotation_ends_at": HOUR},
        TokenStatus.EXPIRED,
    ),
    (
        "overlap ended",
        {"expires_at": HOUR, "rotated_at": -2 * HOUR, "rotation_ends_at": -HOUR},
        TokenStatus.REVOKED,
    ),
    (
        "overlap ended, expired",
        {"expires_at": -HOUR, "rotated_at": -2 * HOUR, "rotation_ends_at": -HOUR},
        TokenStatus.REVOKED,
    ),
    (
        "rotating, revoked",
        {"expires_at": HOUR, "rotated_at": -HOUR, "rotation_ends_at": HOUR, "revoked_at": -HOUR},
        TokenStatus.REVOKED,
    ),
]

# What the request path answers for each status, and the reasons it may give for a refusal.
REFUSALS = {
    TokenStatus.ACTIVE: None,
    TokenStatus.ROTATING: None,
    TokenStatus.EXPIRED: {"expired"},
    TokenStatus.REVOKED: {"revoked", "rotated"},
}


@pytest.mark.parametrize(
    ("columns", "status"), [state[1:] for state in STATES], ids=[state[0] for state in STATES]
)
def test_the_lookup_status_at_and_the_querysets_status_condition_agree_on_every_status(
    user, issue, columns, status
):
    # auth.py reads the columns from its own SQL and applies the rule itself (it is the hot path);
    # Token.status_at and TokenQuerySet.status_condition are the rule everywhere else.
    token, value = issue(user)
    now = timezone.now()
    Token.objects.filter(pk=token.pk).update(
        **{column: None if offset is None else now + offset for column, offset in columns.items()}
    )
    token.refresh_from_db()
    assert token.status_at(timezone.now()) == status
    matching = {
        s for s in TokenStatus if Token.objects.filter(Token.objects.status_condition(s), pk=token.pk)
    }
    assert matching == {status}
    try:
        authenticate_bearer(value)
        reason = None
    except AuthError as refusal:
        reason = refusal.reason
    expected = REFUSALS[status]
    assert reason is None if expected is None else reason in expected


# --- least privilege: access, narrowed permissions, the address allow-list ----------------------------------


def _perm(codename, app_label="auth"):
    return Permission.objects.get(codename=codename, content_type__app_label=app_label)


@pytest.fixture
def trusted_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]


def test_a_read_only_token_can_read(client, user, issue):
    token, value = issue(user, access="read")
    assert client.get("/api/users/me", **bearer(value)).json()["auth"]["access"] == "read"
    assert client.get("/api/tokens", **bearer(value)).status_code == 200
    # HEAD and OPTIONS pass the access check and reach the views (which answer them with 405 today).
    for response in (
        client.head(f"/api/tokens/{token.pk}", **bearer(value)),
        client.options("/api/tokens", **bearer(value)),
    ):
        assert response.status_code != 403
    assert not UsageRecord.objects.filter(accepted=False).exists()


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/api/tokens", {"name": "minted"}),
        ("patch", "/api/tokens/{pk}", {"name": "renamed"}),
        ("patch", "/api/tokens/{pk}", {"access": "read_write"}),
        ("delete", "/api/tokens/{pk}", None),
        ("put", "/api/tokens/{pk}", {"name": "x"}),
        ("post", "/api/users/me", {}),
    ],
)
def test_a_read_only_token_cannot_write_on_any_unsafe_endpoint_and_the_attempt_is_recorded(
    client, user, issue, policy, method, path, body
):
    policy.bearer_can_create_tokens = True
    policy.save()
    token, value = issue(user, access="read")
    before = _snapshot(tokens_only=True)
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    response = getattr(client, method)(path.format(pk=token.pk), **kwargs, **bearer(value))
    assert response.status_code == 403
    assert response["WWW-Authenticate"] == 'Bearer realm="api", error="insufficient_scope", scope="write"'
    assert response.json()["error"] == "insufficient_scope"
    assert _snapshot(tokens_only=True) == before
    record = UsageRecord.objects.get()
    assert (record.method, record.status, record.accepted) == (method.upper(), 403, False)
    token.refresh_from_db()
    assert token.request_count == 0 and token.revoked_at is None


def test_a_narrowed_token_loses_a_permission_the_moment_the_owner_does(client, viewer, issue):
    _, value = issue(viewer, permissions=["auth.view_user"])
    assert client.get("/api/users", **bearer(value)).status_code == 200
    viewer.user_permissions.remove(_perm("view_user"))
    denied = client.get("/api/users", **bearer(value))
    assert denied.status_code == 403
    assert denied.json()["error"] == "insufficient_scope"


def test_a_narrowed_token_never_gains_a_permission_given_to_the_owner_later(client, user, issue):
    user.user_permissions.add(_perm("view_group"))
    _, value = issue(user, permissions=["auth.view_group"])
    user.user_permissions.add(_perm("view_user"))
    response = client.get("/api/users", **bearer(value))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]
    # The same owner's unnarrowed token has it: the token, not the owner, is what is limited.
    _, full = issue(user, name="full")
    assert client.get("/api/users", **bearer(full)).status_code == 200


def test_a_superusers_narrowed_token_holds_only_its_list(client, staff_user, user, issue):
    _, value = issue(staff_user, permissions=["auth.view_group"])
    assert client.get(f"/api/users/{user.pk}", **bearer(value)).status_code == 403
    _, viewer_token = issue(staff_user, name="v", permissions=["auth.view_user"])
    assert client.get(f"/api/users/{user.pk}", **bearer(viewer_token)).status_code == 200


def test_a_narrowed_user_has_only_the_intersection_of_its_list_and_its_own_permissions(staff_user, user):
    user.user_permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    user = type(user).objects.get(pk=user.pk)
    narrow_permissions(user, ["auth.view_user", "auth.view_group"])
    assert user.has_perm("auth.view_user") and not user.has_perm("auth.view_group")
    assert user.has_perms(["auth.view_user"]) and not user.has_perm("auth.delete_user")
    assert user.get_all_permissions() == {"auth.view_user"}
    assert user.has_module_perms("auth") and not user.has_module_perms("tokens")
    narrow_permissions(staff_user, ["auth.view_group"])
    assert staff_user.has_perm("auth.view_group") and not staff_user.has_perm("auth.view_user")


@pytest.mark.parametrize(
    "remote, forwarded, allowed",
    [
        ("203.0.113.9", None, ["203.0.113.0/24"]),
        ("2001:db8::7", None, ["2001:db8::/32"]),
        ("10.1.1.1", "203.0.113.9", ["203.0.113.9"]),
        ("fd00::1", "2001:db8::7, fd00::2", ["2001:db8::7"]),
    ],
)
def test_an_allow_listed_address_may_use_the_token_directly_and_behind_a_trusted_proxy(
    client, user, issue, trusted_proxy, remote, forwarded, allowed
):
    _, value = issue(user, allowed_ips=allowed)
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    assert client.get("/api/users/me", REMOTE_ADDR=remote, **extra, **bearer(value)).status_code == 200


@pytest.mark.parametrize(
    "remote, forwarded, seen",
    [
        ("198.51.100.1", None, "198.51.100.1"),
        ("2001:db8:ffff::1", None, "2001:db8:ffff::1"),
        ("10.1.1.1", "198.51.100.1", "198.51.100.1"),
        ("fd00::1", "2001:db8:ffff::1", "2001:db8:ffff::1"),
        # An untrusted peer cannot claim an allowed address in X-Forwarded-For.
        ("198.51.100.1", "203.0.113.9", "198.51.100.1"),
    ],
)
def test_an_address_outside_the_allow_list_is_refused_and_recorded(
    client, user, issue, trusted_proxy, remote, forwarded, seen
):
    token, value = issue(user, allowed_ips=["203.0.113.0/24", "2001:db8::/48"])
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    response = client.get("/api/users/me", REMOTE_ADDR=remote, **extra, **bearer(value))
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "ip_not_allowed" and seen in body["detail"]
    record = UsageRecord.objects.get()
    assert (record.status, record.accepted, record.ip) == (403, False, seen)
    token.refresh_from_db()
    assert token.request_count == 0 and token.last_used_at is None


def test_an_ipv4_client_on_an_ipv6_socket_matches_its_ipv4_entry(client, user, issue):
    _, value = issue(user, allowed_ips=["203.0.113.9"])
    assert client.get("/api/users/me", REMOTE_ADDR="::ffff:203.0.113.9", **bearer(value)).status_code == 200


def test_restrictions_are_checked_from_the_one_lookup_row(client, user, issue):
    user.user_permissions.add(_perm("view_user"))
    _, value = issue(user, access="read", permissions=["auth.view_user"], allowed_ips=["127.0.0.1"])
    client.get("/api/users/me", **bearer(value))  # first use writes the first_used event once
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/users/me", **bearer(value))
    assert response.status_code == 200
    assert len(queries) == 2, [q["sql"] for q in queries]


# --- legacy keys --------------------------------------------------------------------------------------------


def test_legacy_keys_keep_full_access(client, user):
    LegacyApiKey.objects.import_key(user=user, key="legacy-key-0123456789abcdef")
    response = client.get("/api/users/me", HTTP_REST_API_KEY="legacy-key-0123456789abcdef")
    assert response.json()["auth"]["access"] == "read_write"


@pytest.mark.parametrize("header", ["Rest-Api-Key", "rest-api-key", "REST-API-KEY", "rEsT-aPi-KeY"])
def test_a_legacy_key_authenticates_as_its_owner_in_any_header_case(client, alice_key, header):
    response = client.get("/api/users/me", headers={header: ALICE_KEY})
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert body["auth"]["method"] == "legacy_key"


def test_the_owner_acts_with_its_own_permissions_through_a_legacy_key(client, alice_key, viewer):
    assert client.get("/api/users", headers={"Rest-Api-Key": ALICE_KEY}).status_code == 403
    LegacyApiKey.objects.import_key(user=viewer, key=BOB_KEY)
    assert client.get("/api/users", headers={"Rest-Api-Key": BOB_KEY}).status_code == 200


def test_bearer_wins_when_both_headers_are_sent(client, alice_key, other_user, issue):
    token, value = issue(other_user)
    response = client.get("/api/users/me", headers={"Rest-Api-Key": ALICE_KEY, **_auth(value)})
    assert response.json()["username"] == "bob"
    assert response.json()["auth"]["method"] == "bearer"
    for header in ("Deprecation", "Sunset", "Link"):
        assert header not in response
    assert list(UsageRecord.objects.values_list("token_id", "legacy_key_id")) == [(token.pk, None)]
    # A bad bearer token is refused even with a good key beside it: no fallback to the weaker credential.
    refused = client.get(
        "/api/users/me",
        headers={"Rest-Api-Key": ALICE_KEY, **_auth(value[:-1] + ("x" if value[-1] != "x" else "y"))},
    )
    assert refused.status_code == 401


def _auth(value):
    return {"Authorization": f"Bearer {value}"}


def test_an_unknown_key_and_a_deactivated_owner_are_refused(client, alice_key, user):
    assert me(client, "not-a-key-anyone-was-given").status_code == 401
    user.is_active = False
    user.save()
    assert me(client, ALICE_KEY).status_code == 401


def test_a_revoked_key_is_answered_exactly_like_an_unknown_key_and_still_recorded(
    client, alice_key, staff_user
):
    assert me(client, ALICE_KEY).status_code == 200
    alice_key.revoke(actor=staff_user)
    revoked, unknown = me(client, ALICE_KEY), me(client, "never-issued-key-0000-abcdef")
    assert revoked.status_code == unknown.status_code == 401
    assert "bearer token" in revoked.json()["detail"]
    # Byte-identical: nothing tells a guesser that the value was once a key.
    assert revoked.content == unknown.content
    # Every header alike but the request's own id.
    assert {k: v for k, v in revoked.headers.items() if k != "X-Request-ID"} == {
        k: v for k, v in unknown.headers.items() if k != "X-Request-ID"
    }
    # The owner and the administrators still see the refused use of the revoked key.
    assert UsageRecord.objects.filter(legacy_key=alice_key, accepted=False, status=401).count() == 1


@pytest.mark.parametrize(
    "policy_change, detail",
    [
        ({"legacy_sunset_at": "past"}, "Legacy API keys reached their sunset. Use a bearer token"),
        ({"security_level": "high"}, "Legacy API keys are switched off. Use a bearer token"),
    ],
)
def test_after_the_sunset_or_when_switched_off_a_key_gets_401_telling_to_use_a_bearer_token(
    client, alice_key, policy_change, detail
):
    if policy_change.get("legacy_sunset_at") == "past":
        _set_policy(
            legacy_deprecated_at=timezone.now() - timedelta(days=90),
            legacy_sunset_at=timezone.now() - timedelta(seconds=1),
        )
    else:
        _set_policy(**policy_change)
    response = me(client, ALICE_KEY)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.json()["detail"].startswith(detail)
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert "Use a bearer token" in response["WWW-Authenticate"]
    assert response["Link"] == LINK
    record = UsageRecord.objects.get()
    assert (record.legacy_key_id, record.accepted, record.status) == (alice_key.pk, False, 401)
    alice_key.refresh_from_db()
    assert alice_key.request_count == 0


def test_a_sunset_in_the_future_still_lets_keys_in(client, alice_key):
    _set_policy(legacy_sunset_at=timezone.now() + timedelta(minutes=5))
    assert me(client, ALICE_KEY).status_code == 200


def test_a_legacy_key_survives_pepper_rotation_by_being_re_digested_on_use(client, user, settings):
    old = dict(settings.TOKEN_PEPPERS)
    LegacyApiKey.objects.import_key(user=user, key=ALICE_KEY)
    settings.TOKEN_PEPPERS = {**old, "9": "n" * 40}  # step 1 of the rotation: a newer pepper
    assert me(client, ALICE_KEY).status_code == 200
    row = LegacyApiKey.objects.get()
    assert row.pepper_id == 9 and row.digest == credentials.digest(ALICE_KEY, credentials.peppers()[0])
    settings.TOKEN_PEPPERS = {"9": "n" * 40}  # step 3: the old pepper retired
    assert me(client, ALICE_KEY).status_code == 200
