"""The OpenAPI document is kept true: every /api/ URL is in it, and real responses match it.

Three ways: the URL resolver and the document list the same paths and methods; responses to real
requests (success and every error) validate against the documented schema of their status; and
schemathesis generates requests from the document (bounded examples) that must never get a 5xx and
whose responses must conform.
"""

import json
import re
from contextlib import contextmanager
from datetime import timedelta

import jsonschema_rs
import pytest
import schemathesis
from django.contrib.auth.models import Permission
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from hypothesis import HealthCheck, settings

from tokens.api.openapi import document
from tokens.models import AttemptCounter, LegacyApiKey, SitePolicy, UsageRecord

from .helpers import bearer, make_manager, signed_in_client

METHODS = ("get", "post", "put", "patch", "delete")
DOC = document()


def api_routes(patterns=None, prefix=""):
    """Yield every route of the URL resolver under api/, and forward-auth, as written in the URLconf.

    Envoy's form, /forward-auth/<original path>, is the same operation (its summary says so).
    """
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from api_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and (route.startswith("api/") or route == "forward-auth"):
            yield route


def normalise(path):
    """Turn "api/tokens/<int:pk>" and "/api/tokens/{id}" into the same "/api/tokens/{}"."""
    path = "/" + path.lstrip("/^").rstrip("$")
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_every_url_under_api_is_in_the_openapi_document_and_nothing_else_is():
    served = {normalise(route) for route in api_routes()}
    documented = {normalise(path) for path in DOC["paths"]}
    assert served, "the resolver walk found no /api/ routes"
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


# --- real responses against the schema ---------------------------------------------------------------------


def validate(response, path, method):
    """Assert *response* is documented for (*path*, *method*) and its body matches the schema."""
    operation = DOC["paths"][path][method]
    documented = operation["responses"]
    status = str(response.status_code)
    where = f"{method.upper()} {path}"
    assert status in documented, f"{where} answered {status}, not documented ({sorted(documented)})"
    content = documented[status].get("content")
    if content is None:
        assert not response.content, f"{where} {status} has a body the document does not describe"
        return None
    assert response["Content-Type"].split(";")[0] in content
    schema = {**content["application/json"]["schema"], "components": DOC["components"]}
    body = json.loads(response.content)
    validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    errors = [str(error) for error in validator.iter_errors(body)]
    assert not errors, f"{method.upper()} {path} {status}: {errors}"
    return body


@pytest.fixture
def session(user):
    """A signed-in browser session (its own client, so ``client`` stays anonymous)."""
    return signed_in_client(user)


@pytest.mark.django_db
def test_every_documented_operation_answers_and_undocumented_methods_get_405(
    session, issued, user, service_account, issue
):
    token, _value = issued
    make_manager(user, service_account.team)
    account_token, _value = issue(service_account.user)

    def concrete_path(path):
        if "{account}" in path:
            return path.replace("{account}", str(service_account.pk)).replace("{id}", str(account_token.pk))
        return path.replace("{id}", str(token.pk))

    concrete = {path: concrete_path(path) for path in DOC["paths"]}
    for path, url in concrete.items():
        for method in METHODS:
            kwargs = {"content_type": "application/json"} if method in ("post", "put", "patch") else {}
            data = json.dumps({"name": f"check {method}"}) if kwargs else None
            call = getattr(session, method)
            response = call(url, data, **kwargs) if data else call(url)
            if method in DOC["paths"][path]:
                assert response.status_code != 405, f"{method.upper()} {path} is documented but refused"
                validate(response, path, method)
            else:
                assert response.status_code == 405, f"{method.upper()} {path} is served but not documented"
                assert response.json()["error"] == "method_not_allowed"


@pytest.mark.django_db
def test_real_success_responses_match_the_documented_schemas(client, session, viewer, user, issue):
    token, value = issue(user, name="documented")
    auth = bearer(value)
    client.get("/api/users/me", **auth)  # some usage, so the usage body has rows
    validate(client.get("/api/users/me", **auth), "/api/users/me", "get")
    key = "legacy-openapi-key-0123456789"
    LegacyApiKey.objects.import_key(user=user, key=key)
    me = validate(client.get("/api/users/me", HTTP_REST_API_KEY=key), "/api/users/me", "get")
    assert me["auth"]["method"] == "legacy_key"
    assert validate(session.get("/api/users/me"), "/api/users/me", "get")["auth"]["method"] == "session"
    _viewer_token, viewer_value = issue(viewer, name="viewer")
    validate(client.get("/api/users?page_size=1", **bearer(viewer_value)), "/api/users", "get")
    validate(client.get(f"/api/users/{user.pk}", **bearer(viewer_value)), "/api/users/{id}", "get")
    validate(client.get("/api/tokens?status=active", **auth), "/api/tokens", "get")
    created = validate(
        session.post(
            "/api/tokens", {"name": "made by a session", "purpose": None}, content_type="application/json"
        ),
        "/api/tokens",
        "post",
    )
    assert created["token"].startswith("bpt_")
    no_expiry_policy = SitePolicy.load()
    no_expiry_policy.no_expiry_allowed_for = SitePolicy.NoExpiry.EVERYONE
    no_expiry_policy.save()
    forever = validate(
        session.post("/api/tokens", {"name": "forever", "expires_at": None}, content_type="application/json"),
        "/api/tokens",
        "post",
    )
    assert forever["expires_at"] is None
    validate(client.get(f"/api/tokens/{token.pk}", **auth), "/api/tokens/{id}", "get")
    renamed = client.patch(
        f"/api/tokens/{token.pk}", {"name": "renamed"}, content_type="application/json", **auth
    )
    validate(renamed, "/api/tokens/{id}", "patch")
    usage = validate(client.get(f"/api/tokens/{token.pk}/usage", **auth), "/api/tokens/{id}/usage", "get")
    assert usage["count"] >= 1 and len(usage["daily"]) == 30
    validate(client.get("/api/openapi.json"), "/api/openapi.json", "get")
    validate(session.delete(f"/api/tokens/{token.pk}"), "/api/tokens/{id}", "delete")


@pytest.mark.django_db
def test_real_error_responses_match_the_documented_schemas(client, session, user, other_user, issue):
    token, value = issue(user)
    auth = bearer(value)
    theirs, _other = issue(other_user, name="theirs")
    expired, expired_value = issue(user, name="expired", days=1)
    type(expired).objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    cases = [
        (client.get("/api/users/me"), "/api/users/me", "get", 401),
        (client.get("/api/users/me", **bearer("bpt_nonsense")), "/api/users/me", "get", 401),
        (client.get("/api/users/me", **bearer(expired_value)), "/api/users/me", "get", 401),
        (client.get("/api/users", **auth), "/api/users", "get", 403),
        (client.get(f"/api/users/{user.pk}", **auth), "/api/users/{id}", "get", 403),
        (client.get("/api/tokens?page_size=1000", **auth), "/api/tokens", "get", 400),
        (client.get("/api/tokens?status=lost", **auth), "/api/tokens", "get", 400),
        (client.get("/api/tokens?page=99", **auth), "/api/tokens", "get", 404),
        (
            client.post("/api/tokens", {"name": "x"}, content_type="application/json", **auth),
            "/api/tokens",
            "post",
            403,
        ),
        (
            session.post("/api/tokens", {"name": ""}, content_type="application/json"),
            "/api/tokens",
            "post",
            400,
        ),
        (session.post("/api/tokens", "name=x", content_type="text/plain"), "/api/tokens", "post", 415),
        (
            session.post("/api/tokens", json.dumps({"name": "x" * 20000}), content_type="application/json"),
            "/api/tokens",
            "post",
            413,
        ),
        (client.get(f"/api/tokens/{theirs.pk}", **auth), "/api/tokens/{id}", "get", 404),
        (
            client.patch(f"/api/tokens/{token.pk}", {"nom": "x"}, content_type="application/json", **auth),
            "/api/tokens/{id}",
            "patch",
            400,
        ),
        (client.delete(f"/api/tokens/{theirs.pk}", **auth), "/api/tokens/{id}", "delete", 404),
        (client.get(f"/api/tokens/{theirs.pk}/usage", **auth), "/api/tokens/{id}/usage", "get", 404),
        (client.put(f"/api/tokens/{token.pk}", **auth), "/api/tokens/{id}", "get", 405),
    ]
    for response, path, method, status in cases:
        assert response.status_code == status, (path, method, response.content)
        if status == 405:
            continue  # PUT is not an operation; the 405 body is checked in the method test above
        validate(response, path, method)


# --- schemathesis: generated requests --------------------------------------------------------------------
WSGI = get_wsgi_application()
SCHEMA = schemathesis.openapi.from_wsgi("/api/openapi.json", WSGI)


@contextmanager
def same_connection_for_every_request():
    """Keep Django from closing the test's database connection at the start and end of each request.

    Django's own test client does exactly this; schemathesis calls the WSGI application directly.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_auth(db, user, viewer, issue):
    """A bearer token whose owner may view users and, by policy, create tokens: every operation reachable."""
    policy = SitePolicy.load()
    policy.bearer_can_create_tokens = True
    policy.save()
    _token, value = issue(viewer, name="fuzzing")
    issue(user, name="someone else's")
    return {"Authorization": f"Bearer {value}"}


@pytest.mark.django_db
@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_generated_requests_never_get_a_5xx_and_every_response_conforms(case, fuzz_auth):
    # Each generated case starts with no failed authentication counted: the fuzzer's own checks send bad
    # credentials again and again and would meet the API failure limit (tests/test_throttle.py proves it).
    AttemptCounter.objects.all().delete()
    with same_connection_for_every_request():
        # A request can fit the schema and still break a rule no schema can state (an expiry in the past,
        # a name already in use): those 400s are right, so "schema-valid data must be accepted" is left out.
        case.call_and_validate(
            headers=fuzz_auth, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )


@pytest.mark.django_db
def test_least_privilege_fields_and_refusals_match_the_documented_schemas(client, session, user, issue):
    token, value = issue(user, access="read", permissions=[], allowed_ips=["127.0.0.1", "2001:db8::/32"])
    _, far = issue(user, name="far", allowed_ips=["192.0.2.1"])
    validate(client.get(f"/api/tokens/{token.pk}", **bearer(value)), "/api/tokens/{id}", "get")
    validate(client.get("/api/users/me", **bearer(value)), "/api/users/me", "get")
    cases = [
        (
            client.delete(f"/api/tokens/{token.pk}", **bearer(value)),
            "/api/tokens/{id}",
            "delete",
            "insufficient_scope",
        ),
        (
            client.patch(
                f"/api/tokens/{token.pk}", {"name": "x"}, content_type="application/json", **bearer(value)
            ),
            "/api/tokens/{id}",
            "patch",
            "insufficient_scope",
        ),
        (client.get("/api/tokens", **bearer(far)), "/api/tokens", "get", "ip_not_allowed"),
        (client.get("/api/users/me", **bearer(far)), "/api/users/me", "get", "ip_not_allowed"),
    ]
    for response, path, method, error in cases:
        assert response.status_code == 403
        assert validate(response, path, method)["error"] == error
    created = session.post(
        "/api/tokens",
        {"name": "ro", "access": "read", "allowed_ips": ["192.0.2.0/24"]},
        content_type="application/json",
    )
    assert validate(created, "/api/tokens", "post")["access"] == "read"
    changed = session.patch(
        f"/api/tokens/{token.pk}",
        {"access": "read_write", "permissions": None},
        content_type="application/json",
    )
    assert validate(changed, "/api/tokens/{id}", "patch")["permissions"] is None
    refused = session.patch(
        f"/api/tokens/{token.pk}", {"allowed_ips": ["nowhere"]}, content_type="application/json"
    )
    assert "allowed_ips" in validate(refused, "/api/tokens/{id}", "patch")["fields"]
    props = DOC["components"]["schemas"]["Token"]["properties"]
    assert {"access", "permissions", "allowed_ips"} <= set(props)


@pytest.mark.django_db
def test_introspection_and_forward_auth_answers_match_the_documented_schemas(client, user, issue):
    permission = Permission.objects.get(codename="introspect_token", content_type__app_label="tokens")
    user.user_permissions.add(permission)
    _, value = issue(user, name="resource server")
    _, read_only = issue(user, name="read only", access="read")
    form = "application/x-www-form-urlencoded"
    asked = client.post("/api/introspect", f"token={read_only}", content_type=form, **bearer(value))
    active = validate(asked, "/api/introspect", "post")
    assert active["active"] is True and active["scope"] == "read"
    inactive = client.post("/api/introspect", "token=bpt_nothing", content_type=form, **bearer(value))
    assert validate(inactive, "/api/introspect", "post") == {"active": False}
    for response, status in [
        (client.post("/api/introspect", "", content_type=form, **bearer(value)), 400),
        (client.post("/api/introspect", "{}", content_type="application/json", **bearer(value)), 415),
        # Introspection is a POST (RFC 7662): a read-only token is refused it, like any write.
        (client.post("/api/introspect", "token=x", content_type=form, **bearer(read_only)), 403),
    ]:
        assert response.status_code == status
        validate(response, "/api/introspect", "post")
    allowed = client.get("/forward-auth", **bearer(value))
    assert allowed.status_code == 200
    validate(allowed, "/forward-auth", "get")
    assert set(DOC["paths"]["/forward-auth"]["get"]["responses"]["200"]["headers"]) <= set(allowed.headers)
    validate(client.get("/forward-auth"), "/forward-auth", "get")
    validate(client.delete("/forward-auth", **bearer(read_only)), "/forward-auth", "delete")


def test_rotation_responses_match_the_documented_schemas(client, session, user, issue):
    token, _value = issue(user, name="rotated")
    rotated = validate(
        session.post(f"/api/tokens/{token.pk}/rotate", {"overlap": 60}, content_type="application/json"),
        "/api/tokens/{id}/rotate",
        "post",
    )
    assert rotated["replaces"] == token.pk and rotated["token"].startswith("bpt_")
    old = validate(session.get(f"/api/tokens/{token.pk}"), "/api/tokens/{id}", "get")
    assert (old["status"], old["replaced_by"]) == ("rotating", rotated["id"])
    again = session.post(f"/api/tokens/{token.pk}/rotate", {}, content_type="application/json")
    assert (
        again.status_code == 409 and validate(again, "/api/tokens/{id}/rotate", "post")["error"] == "conflict"
    )
    itself = client.generic("POST", "/api/tokens/self/rotate", **bearer(rotated["token"]))
    assert validate(itself, "/api/tokens/self/rotate", "post")["replaces"] == rotated["id"]


# --- what the authentication layer adds, and public endpoints that ignore it ------------------------------

PUBLIC_BODIES = {
    "/api/credentials/revoke": json.dumps({"credentials": ["made-up-value-0000000000"]}),
    "/api/secret-scanning/github": json.dumps([{"token": "made-up-value-0000000000", "type": "x"}]),
}


@pytest.fixture
def every_kind_of_credential(user, staff_user, issue):
    """Headers for each way a caller may present itself, the anonymous one included."""
    _, read_only = issue(user, name="read only", access="read")
    revoked, revoked_value = issue(user, name="revoked")
    revoked.revoke(actor=staff_user)
    _, far = issue(user, name="bound elsewhere", allowed_ips=["192.0.2.1"])
    key = "legacy-openapi-statuses-0123456789"
    LegacyApiKey.objects.import_key(user=user, key=key)
    return {
        "none": {},
        "read-only token": bearer(read_only),
        "revoked token": bearer(revoked_value),
        "made-up token": bearer("bpt_nonsense"),
        "token bound to another address": bearer(far),
        "legacy key": {"HTTP_REST_API_KEY": key},
        "unknown legacy key": {"HTTP_REST_API_KEY": "legacy-nobody-has-this-0000000000"},
    }


def _call(client, path, method, headers, token_id):
    url = path.replace("{id}", str(token_id))
    body = PUBLIC_BODIES.get(path, json.dumps({"name": "statuses"}))
    if path == "/api/introspect":
        return client.generic("POST", url, "token=bpt_x", "application/x-www-form-urlencoded", **headers)
    if method in ("post", "patch", "put"):
        return client.generic(method.upper(), url, body, "application/json", **headers)
    return client.generic(method.upper(), url, **headers)


@pytest.mark.django_db
def test_every_status_any_credential_gets_from_any_operation_is_documented(
    client, issued, every_kind_of_credential, settings
):
    settings.LEAK_REPORTS_PER_ADDRESS = 1000
    token, _value = issued
    for kind, headers in every_kind_of_credential.items():
        for path, operations in DOC["paths"].items():
            for method in (m for m in METHODS if m in operations):
                AttemptCounter.objects.all().delete()
                response = _call(client, path, method, headers, token.pk)
                assert response.status_code < 500, (kind, method, path, response.content)
                validate(response, path, method)


@pytest.mark.django_db
def test_a_client_past_the_failure_limit_gets_a_documented_429_from_every_guarded_operation(
    client, issued, settings
):
    settings.API_FAILURES_PER_ADDRESS = 1
    token, _value = issued
    locked = {"HTTP_REST_API_KEY": "legacy-nobody-has-this-0000000000"}
    assert client.get("/api/users/me", **locked).status_code == 401  # the one failure allowed
    for path, operations in DOC["paths"].items():
        for method in (m for m in METHODS if m in operations):
            response = _call(client, path, method, locked, token.pk)
            if operations[method].get("security") == []:
                # Public: the credential is ignored. The token exchange alone shares the address's API
                # failure limit (a job token that fails is a failed credential like any other).
                if path != "/api/token-exchange":
                    assert response.status_code != 429, (method, path)
                validate(response, path, method)
                continue
            assert response.status_code == 429, (method, path, response.content)
            validate(response, path, method)


@pytest.mark.django_db
def test_public_endpoints_answer_the_same_whatever_credential_comes_along(
    client, every_kind_of_credential, settings
):
    settings.LEAK_REPORTS_PER_ADDRESS = 1000
    public = [
        (path, method)
        for path, operations in DOC["paths"].items()
        for method, operation in operations.items()
        if method in METHODS and operation.get("security") == []
    ]
    assert {path for path, _ in public} == {
        "/api/openapi.json",
        "/api/credentials/revoke",
        "/api/secret-scanning/github",
        "/api/token-exchange",
    }
    for path, method in public:
        plain = _call(client, path, method, {}, 1)
        for kind, headers in every_kind_of_credential.items():
            answer = _call(client, path, method, headers, 1)
            assert (answer.status_code, answer.content) == (plain.status_code, plain.content), (kind, path)
            assert "WWW-Authenticate" not in answer, (kind, path)
    for kind, headers in every_kind_of_credential.items():
        assert client.get("/healthz", **headers).status_code == 200, kind
    assert not UsageRecord.objects.exists()  # nothing counted as a use of the credentials sent along
