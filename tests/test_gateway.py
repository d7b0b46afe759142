"""/forward-auth through Django's test client: the API's checks, applied to the original request.

The proxy is 127.0.0.1 (the test client's address), trusted unless a test says otherwise. Real nginx in
front of a real gunicorn: tests/live/test_gateway.py.
"""

import pytest
from django.contrib.auth.models import Permission
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from tokens import credentials
from tokens.models import LegacyApiKey, RefusedClient, UsageRecord
from tokens.usage.read import usage_totals

from .helpers import bearer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def trusted_proxy(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]


def nginx(method="GET", uri="/orders/42", client_address=None):
    """The headers nginx's auth_request sends with the configuration in docs/gateways.md."""
    headers = {"HTTP_X_ORIGINAL_METHOD": method, "HTTP_X_ORIGINAL_URI": uri}
    if client_address:
        headers["HTTP_X_FORWARDED_FOR"] = client_address
    return headers


def test_a_valid_token_is_allowed_and_the_proxy_is_told_who_it_is(client, user, issued):
    token, value = issued
    response = client.get("/forward-auth", **nginx(), **bearer(value))
    assert response.status_code == 200
    assert response["X-Auth-User-Id"] == str(user.pk)
    assert response["X-Auth-Username"] == "alice"
    assert response["X-Auth-Token-Id"] == str(token.pk)
    assert response["X-Auth-Method"] == "bearer"
    assert response["X-Auth-Access"] == "read_write"
    assert response["Cache-Control"] == "no-store"


def test_no_credentials_get_401_with_the_rfc_6750_challenge(client):
    response = client.get("/forward-auth", **nginx())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert UsageRecord.objects.count() == 0


def test_an_unknown_token_gets_401_and_is_counted_against_the_forwarded_client_address(client):
    unknown, _parsed = credentials.generate()  # well signed, never issued: it reaches the lookup
    response = client.get("/forward-auth", **nginx(client_address="203.0.113.9"), **bearer(unknown))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert list(RefusedClient.objects.values_list("ip", flat=True)) == ["203.0.113.9"]
    assert UsageRecord.objects.count() == 0


def test_a_revoked_token_is_refused_on_the_next_call_and_the_refusal_recorded_with_the_original_path(
    client, user, issued
):
    token, value = issued
    assert client.get("/forward-auth", **nginx(), **bearer(value)).status_code == 200
    token.revoke(actor=user, ip=None)
    response = client.get("/forward-auth", **nginx(uri="/orders/43"), **bearer(value))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    refused = UsageRecord.objects.get(token=token, accepted=False)
    assert (refused.method, refused.path, refused.status) == ("GET", "/orders/43", 401)


def test_a_read_only_token_is_refused_an_unsafe_original_method_though_the_proxy_asks_with_get(
    client, user, issue
):
    token, value = issue(user, access="read")
    allowed = client.get("/forward-auth", **nginx(method="HEAD"), **bearer(value))
    assert allowed.status_code == 200
    assert allowed["X-Auth-Access"] == "read"
    response = client.get("/forward-auth", **nginx(method="POST", uri="/orders"), **bearer(value))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'scope="write"' in response["WWW-Authenticate"]
    refused = UsageRecord.objects.get(token=token, accepted=False)
    assert (refused.method, refused.path, refused.status) == ("POST", "/orders", 403)


def test_traefik_and_caddy_headers_state_the_original_method_and_uri_too(client, user, issue):
    token, value = issue(user, access="read")
    headers = {"HTTP_X_FORWARDED_METHOD": "DELETE", "HTTP_X_FORWARDED_URI": "/orders/7?force=1"}
    response = client.get("/forward-auth", **headers, **bearer(value))
    assert response.status_code == 403
    record = UsageRecord.objects.get(token=token)
    assert (record.method, record.path) == ("DELETE", "/orders/7")


@pytest.mark.parametrize(
    "stated",
    [
        # Caddy or Traefik set X-Forwarded-Method and pass the client's own X-Original-Method on.
        {"HTTP_X_FORWARDED_METHOD": "POST", "HTTP_X_ORIGINAL_METHOD": "GET"},
        # nginx sets X-Original-Method and passes the client's own X-Forwarded-Method on.
        {"HTTP_X_ORIGINAL_METHOD": "POST", "HTTP_X_FORWARDED_METHOD": "GET"},
        {
            "HTTP_X_ORIGINAL_METHOD": "GET",
            "HTTP_X_ORIGINAL_URI": "/orders",
            "HTTP_X_FORWARDED_URI": "/public",
        },
    ],
)
def test_two_spellings_of_the_original_request_that_disagree_get_400_and_nothing_is_recorded(
    client, user, issue, stated
):
    _token, value = issue(user, access="read")
    response = client.get("/forward-auth", **stated, **bearer(value))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response["Cache-Control"] == "no-store"
    assert "X-Auth-Access" not in response
    assert UsageRecord.objects.count() == 0


def test_two_spellings_that_agree_are_one_statement(client, user, issue):
    token, value = issue(user, access="read")
    stated = {
        **nginx(method="GET", uri="/orders/1"),
        "HTTP_X_FORWARDED_METHOD": "GET",
        "HTTP_X_FORWARDED_URI": "/orders/1",
    }
    response = client.get("/forward-auth", **stated, **bearer(value))
    assert response.status_code == 200
    record = UsageRecord.objects.get(token=token)
    assert (record.method, record.path) == ("GET", "/orders/1")


def test_every_call_is_recorded_with_the_original_method_path_and_client_address(client, issued):
    token, value = issued
    client.generic(
        "PATCH",
        "/forward-auth",
        **nginx(method="PATCH", uri="/v2/orders/42?fields=a", client_address="203.0.113.9"),
        HTTP_USER_AGENT="shop-app/1.0",
        **bearer(value),
    )
    record = UsageRecord.objects.get(token=token)
    assert (record.method, record.path, record.ip, record.status, record.accepted) == (
        "PATCH",
        "/v2/orders/42",
        "203.0.113.9",
        200,
        True,
    )
    assert record.user_agent == "shop-app/1.0"
    token.refresh_from_db()
    usage_totals([token])
    assert token.request_count == 1
    assert token.last_used_ip == "203.0.113.9"


def test_an_address_outside_the_allow_list_is_refused_403_by_the_forwarded_client_address(
    client, user, issue
):
    token, value = issue(user, allowed_ips=["203.0.113.0/24"])
    inside = client.get("/forward-auth", **nginx(client_address="203.0.113.9"), **bearer(value))
    assert inside.status_code == 200
    response = client.get("/forward-auth", **nginx(client_address="198.51.100.7"), **bearer(value))
    assert response.status_code == 403
    assert response.json()["error"] == "ip_not_allowed"
    assert "198.51.100.7" in response.json()["detail"]
    assert UsageRecord.objects.filter(token=token, accepted=False, ip="198.51.100.7").count() == 1


def test_an_untrusted_peer_cannot_state_the_original_method_uri_or_address(client, settings, user, issue):
    settings.TRUSTED_PROXIES = []
    token, value = issue(user, access="read", allowed_ips=["127.0.0.1"])
    # A client calling /forward-auth itself with POST cannot pass for a GET, nor for another address.
    stated = nginx(method="GET", client_address="203.0.113.9")
    response = client.post("/forward-auth", **stated, **bearer(value))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    record = UsageRecord.objects.get(token=token)
    assert (record.method, record.path, record.ip) == ("POST", "/forward-auth", "127.0.0.1")


def test_a_route_that_needs_a_permission_refuses_a_token_without_it(client, make_user, issue):
    owner = make_user("olga")
    owner.user_permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    _, full = issue(owner, name="full")
    narrowed, narrow = issue(owner, name="narrow", permissions=[])
    url = "/forward-auth?permission=auth.view_user"
    assert client.get(url, **nginx(), **bearer(full)).status_code == 200
    response = client.get(url, **nginx(uri="/users"), **bearer(narrow))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    refused = UsageRecord.objects.get(token=narrowed)
    assert (refused.accepted, refused.path, refused.status) == (False, "/users", 403)
    other = client.get("/forward-auth?permission=auth.delete_user", **nginx(), **bearer(full))
    assert other.status_code == 403


def test_a_legacy_key_is_checked_like_the_api_and_named_as_such(client, user):
    key = "legacy-gateway-key-0123456789"
    legacy, _created = LegacyApiKey.objects.import_key(user=user, key=key)
    response = client.get("/forward-auth", **nginx(uri="/old/report"), HTTP_REST_API_KEY=key)
    assert response.status_code == 200
    assert response["X-Auth-Method"] == "legacy_key"
    assert response["X-Auth-Token-Id"] == ""
    assert response["Link"].startswith("</docs/migration/>")
    assert UsageRecord.objects.get(legacy_key=legacy).path == "/old/report"
    wrong = client.get("/forward-auth", **nginx(), HTTP_REST_API_KEY="not-the-key-0123456789")
    assert wrong.status_code == 401
    assert RefusedClient.objects.count() == 1


def test_envoy_appends_the_original_path_and_keeps_the_original_method(client, user, issue):
    token, value = issue(user, access="read")
    assert client.get("/forward-auth/orders/42", **bearer(value)).status_code == 200
    assert client.delete("/forward-auth/orders/42", **bearer(value)).status_code == 403
    assert list(UsageRecord.objects.filter(token=token).order_by("pk").values_list("method", "path")) == [
        ("GET", "/orders/42"),
        ("DELETE", "/orders/42"),
    ]


def test_a_non_ascii_username_is_percent_encoded_in_its_header(client, make_user, issue):
    _, value = issue(make_user("zoë"))
    assert client.get("/forward-auth", **nginx(), **bearer(value))["X-Auth-Username"] == "zo%C3%AB"


@pytest.mark.parametrize(
    "uri, path",
    [
        ("/a%00b", "/a\\x00b"),
        ("/caf%C3%A9/%ED%A0%80?x", "/café/\ufffd\ufffd\ufffd"),
        ("/\xe2\x80\xaeevil", "/\u202eevil"),  # raw UTF-8 bytes, as WSGI hands them over (latin-1)
        ("https://shop.example/orders?id=1", "/orders"),
        ("http://[", "http://["),
        ("/" + "x" * 5000, "/" + "x" * 254),
    ],
)
def test_hostile_original_uris_are_recorded_as_visible_text_never_a_5xx(client, issued, uri, path):
    token, value = issued
    response = client.get("/forward-auth", **nginx(uri=uri), **bearer(value))
    assert response.status_code == 200
    assert UsageRecord.objects.get(token=token).path == path


def test_a_database_failure_fails_closed_with_503(client, issued, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("server closed the connection")

    value = issued[1]
    connection.close()
    monkeypatch.setattr(connection, "get_new_connection", refuse)
    response = client.get("/forward-auth", **nginx(), **bearer(value))
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"


def test_forward_auth_costs_the_same_queries_as_the_apis_own_bearer_check(client, issued):
    value = issued[1]
    client.get("/api/users/me", **bearer(value))  # the first use writes its event once; not measured
    with CaptureQueriesContext(connection) as api:
        assert client.get("/api/users/me", **bearer(value)).status_code == 200
    with CaptureQueriesContext(connection) as gateway:
        assert client.get("/forward-auth", **nginx(), **bearer(value)).status_code == 200
    assert len(gateway.captured_queries) == len(api.captured_queries) == 2
