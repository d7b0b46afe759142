"""RFC 7662 introspection (POST /api/introspect) through Django's test client."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from tokens.models import LegacyApiKey, SitePolicy, Token, UsageRecord
from tokens.usage.read import usage_totals

from .helpers import bearer

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def resource_server(make_user, issue):
    """The bearer value of a resource server whose owner may introspect tokens."""
    owner = make_user("orders-api")
    permission = Permission.objects.get(codename="introspect_token", content_type__app_label="tokens")
    owner.user_permissions.add(permission)
    return issue(owner, name="introspection")[1]


def introspect(client, caller, body):
    body = body if isinstance(body, str) else urlencode(body)
    return client.post("/api/introspect", body, content_type=FORM, **bearer(caller))


def test_an_active_token_is_described_as_rfc_7662_shows(client, user, issue, resource_server):
    token, value = issue(user, access="read")
    response = introspect(client, resource_server, f"token={value}&token_type_hint=access_token")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json() == {
        "active": True,
        "scope": "read",
        "username": "alice",
        "sub": str(user.pk),
        "token_type": "Bearer",
        "exp": int(token.expires_at.timestamp()),
        "iat": int(token.created_at.timestamp()),
        "jti": str(token.pk),
    }


def test_a_read_write_token_without_expiry_has_both_scopes_and_no_exp(client, user, issue, resource_server):
    policy = SitePolicy.load()
    policy.no_expiry_allowed_for = SitePolicy.NoExpiry.EVERYONE
    policy.save()
    _, value = issue(user, days=None)
    body = introspect(client, resource_server, f"token={value}").json()
    assert body["scope"] == "read write"
    assert "exp" not in body


@pytest.mark.parametrize(
    "case",
    [
        "revoked",
        "expired",
        "owner deactivated",
        "unknown",
        "malformed",
        "legacy key",
        "bound to addresses",
    ],
)
def test_anything_not_active_is_answered_active_false_and_nothing_more(
    client, user, issue, resource_server, case
):
    token, value = issue(user)
    if case == "revoked":
        token.revoke(actor=user, ip=None)
    elif case == "expired":
        Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "owner deactivated":
        user.is_active = False
        user.save()
    elif case == "unknown":
        value = value[:8] + ("x" if value[8] != "x" else "y") + value[9:]
    elif case == "malformed":
        value = None  # NUL, "²", a lone surrogate and a bidi override, as a form sends them
    elif case == "legacy key":
        value = "legacy-introspect-key-0123456789"
        LegacyApiKey.objects.import_key(user=user, key=value)
    elif case == "bound to addresses":
        # The portal cannot see the resource server's client, so it cannot hold the token to its addresses.
        token, value = issue(user, name="bound", allowed_ips=["127.0.0.1"])
    body = {"token": value} if value else "token=bpt_%00%C2%B2%ED%A0%80%E2%80%AE"
    response = introspect(client, resource_server, body)
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_each_answer_is_recorded_as_a_use_of_the_introspected_token(client, user, issue, resource_server):
    token, value = issue(user)
    introspect(client, resource_server, {"token": value})
    record = UsageRecord.objects.get(token=token)
    assert (record.method, record.path, record.status) == ("POST", "/api/introspect", 200)
    assert record.accepted
    token.revoke(actor=user, ip=None)
    introspect(client, resource_server, {"token": value})
    assert UsageRecord.objects.filter(token=token, accepted=False).count() == 1
    token.refresh_from_db()
    usage_totals([token])
    assert token.request_count == 1  # accepted uses; the refused one is on the token's page


def test_a_caller_without_the_permission_is_refused_403_and_learns_nothing(client, user, issue, other_user):
    _, value = issue(user)
    _, caller = issue(other_user, name="no permission")
    response = introspect(client, caller, {"token": value})
    assert response.status_code == 403
    assert set(response.json()) == {"error", "detail"}
    assert not UsageRecord.objects.filter(user=user).exists()


def test_a_token_narrowed_away_from_the_permission_is_refused(client, user, issue, resource_server):
    owner = Token.objects.get(name="introspection").user
    _, narrowed = issue(owner, name="narrowed", permissions=[])
    _, value = issue(user)
    assert introspect(client, narrowed, {"token": value}).status_code == 403


def test_a_session_or_a_legacy_key_cannot_introspect(client, user, issue, resource_server):
    owner = Token.objects.get(name="introspection").user
    _, value = issue(user)
    key = "legacy-introspector-key-0123456789"
    LegacyApiKey.objects.import_key(user=owner, key=key)
    form = urlencode({"token": value})
    legacy = client.post("/api/introspect", form, content_type=FORM, HTTP_REST_API_KEY=key)
    assert legacy.status_code == 403
    session = Client(enforce_csrf_checks=False)
    session.force_login(owner)
    assert session.post("/api/introspect", form, content_type=FORM).status_code == 403
    assert client.post("/api/introspect", form, content_type=FORM).status_code == 401


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        ("", FORM, 400),
        ("token=", FORM, 400),
        ("token=a&token=b", FORM, 400),
        ('{"token": "x"}', "application/json", 415),
        ("token=" + "x" * 20000, FORM, 413),
    ],
)
def test_bad_requests_are_clear_json_errors(client, resource_server, body, content_type, status):
    response = client.post("/api/introspect", body, content_type=content_type, **bearer(resource_server))
    assert response.status_code == status
    assert set(response.json()) >= {"error", "detail"}


def test_only_post_is_allowed(client, resource_server):
    assert client.get("/api/introspect", **bearer(resource_server)).status_code == 405
