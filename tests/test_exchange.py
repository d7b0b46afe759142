"""Keyless CI: POST /api/token-exchange against a local issuer, with tokens shaped like GitHub's, GitLab's."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.utils import timezone

from tests.helpers import bearer, make_manager, signed_in_client
from tests.oidc_issuer import LocalIssuer, SilentServer, closed_port_url, rsa_key
from tests.test_openapi import validate
from tokens import exchange
from tokens.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE
from tokens.issuers import url_problem
from tokens.models import ManagerRole, Token, TokenEvent, TokenExchange, TrustPolicy, UsedJobToken

AUDIENCE = "https://tokens.example.com"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def issuer(settings):
    exchange.forget_issuers()
    issuer = LocalIssuer()
    settings.OIDC_FEDERATION_ISSUERS = [issuer.url]
    settings.OIDC_FEDERATION_TIMEOUT = 1.0
    yield issuer
    issuer.close()
    exchange.forget_issuers()


@pytest.fixture
def github_policy(user, issuer):
    return TrustPolicy.objects.create_policy(
        owner=user,
        actor=user,
        name="deploy",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"repository": "octo-org/octo-repo", "ref": "refs/heads/main"},
    )


def post_exchange(client, subject, /, **extra):
    form = {
        "grant_type": GRANT_TYPE,
        "subject_token": subject,
        "subject_token_type": JWT_TOKEN_TYPE,
        **extra,
    }
    return client.post("/api/token-exchange", urlencode(form), content_type=FORM)


def refused_like_any_other(response):
    """Every refusal is the same answer: the caller never learns which check failed."""
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "The subject token was refused. The policy's owner can see why.",
    }
    assert "no-store" in response["Cache-Control"]
    return True


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_github_job_gets_a_15_minute_token_that_works_and_then_expires(client, user, issuer, github_policy):
    response = post_exchange(client, issuer.github_token(audience=AUDIENCE))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert 890 <= body["expires_in"] <= 900
    value = body["access_token"]
    assert value.startswith("bpt_")
    me = client.get("/api/users/me", **bearer(value))
    assert me.status_code == 200
    assert me.json()["username"] == "alice"

    token = Token.objects.get(user=user)
    assert token.name == "deploy · run 7283946401"
    assert token.purpose == f"{issuer.url}/octo-org/octo-repo/actions/runs/7283946401"
    assert token.exchange.policy == github_policy
    record = TokenExchange.objects.get()
    assert record.accepted and record.repository == "octo-org/octo-repo" and record.job == "run 7283946401"
    event = TokenEvent.objects.get(kind=TokenEvent.Kind.EXCHANGED)
    assert event.token == token and "sub repo:octo-org/octo-repo:ref:refs/heads/main" in event.detail
    assert TrustPolicy.objects.with_last_exchange().get().last_exchange_at == record.at
    # The use is recorded on the token like any other.
    assert client.get(f"/api/tokens/{token.pk}/usage", **bearer(value)).json()["count"] >= 1

    # Fifteen minutes later (time moved, not waited for) the value is refused.
    later = timezone.now() + timedelta(minutes=15, seconds=1)
    original_now = timezone.now
    timezone.now = lambda: later
    try:
        assert client.get("/api/users/me", **bearer(value)).status_code == 401
    finally:
        timezone.now = original_now


def test_gitlab_job_with_an_es256_key_gets_a_token(client, user, issuer):
    issuer.rotate()
    issuer.published = [issuer.add_key("ec")]
    TrustPolicy.objects.create_policy(
        owner=user,
        actor=user,
        name="release",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"project_path": "my-group/my-project", "ref_protected": "true", "ref": "main"},
        access="read",
    )

    response = post_exchange(client, issuer.gitlab_token(audience=AUDIENCE))

    assert response.status_code == 200
    token = Token.objects.get(user=user)
    assert token.name == "release · job 302"
    assert token.purpose == f"{issuer.url}/my-group/my-project/-/jobs/302"
    assert token.access == "read"
    value = response.json()["access_token"]
    assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert client.post("/api/tokens", {}, content_type="application/json", **bearer(value)).status_code == 403


def test_a_credential_header_is_ignored(client, user, issuer, github_policy):
    subject = issuer.github_token(audience=AUDIENCE)
    response = post_exchange(client, subject, HTTP_AUTHORIZATION="Bearer bpt_nope")
    assert response.status_code == 200


def test_glob_conditions_match(client, user, issuer):
    TrustPolicy.objects.create_policy(
        owner=user,
        actor=user,
        name="any branch of the org",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"repository": "octo-org/*", "ref": "refs/heads/release-*"},
    )
    assert (
        post_exchange(client, issuer.github_token(audience=AUDIENCE, ref="refs/heads/release-2")).status_code
        == 200
    )
    assert refused_like_any_other(post_exchange(client, issuer.github_token(audience=AUDIENCE)))


def test_first_matching_policy_mints(client, user, other_user, issuer):
    narrow = TrustPolicy.objects.create_policy(
        owner=other_user,
        actor=other_user,
        name="narrow",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"repository": "octo-org/octo-repo", "environment": "prod"},
    )
    broad = TrustPolicy.objects.create_policy(
        owner=user,
        actor=user,
        name="broad",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"repository": "octo-org/octo-repo"},
    )
    assert post_exchange(client, issuer.github_token(audience=AUDIENCE)).status_code == 200
    assert Token.objects.get().exchange.policy == broad
    prod = issuer.github_token(audience=AUDIENCE, environment="prod")
    assert post_exchange(client, prod).status_code == 200
    assert Token.objects.filter(exchange__policy=narrow, user=other_user).count() == 1


def _claims(issuer, **overrides):
    now = int(time.time())
    return {
        "iss": issuer.url,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "aud": AUDIENCE,
        "repository": "octo-org/octo-repo",
        "ref": "refs/heads/main",
        "run_id": "1",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        **overrides,
    }


def _wrong_signature(issuer):
    header, payload, _signature = issuer.github_token(audience=AUDIENCE).split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["repository"] = "octo-org/octo-repo"
    forged["environment"] = "prod"
    return f"{header}.{_b64(json.dumps(forged).encode())}.{_signature}"


def _other_issuers_key(issuer):
    other = LocalIssuer()
    try:
        return other.sign(_claims(issuer))
    finally:
        other.close()


def _own_kid_other_key(issuer):
    return issuer.sign(_claims(issuer), key=rsa_key())


def _alg_none(issuer):
    header = {"alg": "none", "typ": "JWT", "kid": issuer.current_kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(issuer)).encode())}."


def _hmac_with_public_key(issuer):
    public = issuer.keys[issuer.current_kid].public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.current_kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(issuer)).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


REFUSALS = {
    "wrong signature": (_wrong_signature, "bad signature"),
    "key from another issuer": (_other_issuers_key, "unknown key id"),
    "issuer's key id, another key": (_own_kid_other_key, "bad signature"),
    "alg none": (_alg_none, "algorithm 'none' not accepted"),
    "HMAC with the public key as secret": (_hmac_with_public_key, "algorithm 'HS256' not accepted"),
    "expired": (lambda i: i.sign(_claims(i, iat=int(time.time()) - 900, exp=int(time.time()) - 61)), "exp"),
    "not yet valid": (lambda i: i.sign(_claims(i, nbf=int(time.time()) + 120)), "not yet valid"),
    "issued in the future": (lambda i: i.sign(_claims(i, iat=int(time.time()) + 120)), "not yet valid"),
    "living for weeks": (
        lambda i: i.sign(_claims(i, exp=int(time.time()) + 30 * 86400)),
        "longer than a week",
    ),
    "exp beyond the calendar": (lambda i: i.sign(_claims(i, exp=10**13)), "longer than a week"),
    "wrong audience": (lambda i: i.sign(_claims(i, aud="https://elsewhere.example")), "audience"),
    "no jti": (lambda i: i.sign({k: v for k, v in _claims(i).items() if k != "jti"}), "claim jti missing"),
    "no matching policy": (lambda i: i.sign(_claims(i, repository="octo-org/other")), "no policy"),
    "matching repository, other branch": (lambda i: i.sign(_claims(i, ref="refs/heads/dev")), "no policy"),
    "not a JWT": (lambda i: "not.a.jwt", "not a JWT"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_every_refusal_is_one_answer_and_the_reason_is_recorded(client, user, issuer, github_policy, case):
    make, reason = REFUSALS[case]

    response = post_exchange(client, make(issuer))

    assert refused_like_any_other(response)
    assert not Token.objects.exists()
    record = TokenExchange.objects.get()
    assert not record.accepted
    assert reason in record.reason


def test_a_refusal_for_the_owners_repository_is_shown_to_the_owner(client, user, issuer, github_policy):
    post_exchange(client, issuer.github_token(audience=AUDIENCE, ref="refs/heads/dev"))

    event = TokenEvent.objects.get(kind=TokenEvent.Kind.EXCHANGE_REFUSED)
    assert event.user == user
    assert "no policy's conditions hold" in event.detail and "octo-org/octo-repo" in event.detail
    # A job of someone else's repository is not shown to this owner (administrators see it).
    post_exchange(client, issuer.github_token(audience=AUDIENCE, repository="evil/repo"))
    assert TokenEvent.objects.filter(kind=TokenEvent.Kind.EXCHANGE_REFUSED).count() == 1
    assert TokenExchange.objects.filter(user=None, repository="evil/repo").exists()


def test_a_job_token_is_accepted_once(client, user, issuer, github_policy):
    subject = issuer.github_token(audience=AUDIENCE)
    assert post_exchange(client, subject).status_code == 200
    assert refused_like_any_other(post_exchange(client, subject))
    assert Token.objects.count() == 1
    assert "jti already used" in TokenExchange.objects.get(accepted=False).reason


def test_used_job_token_ids_are_pruned_after_they_expire(db):
    now = timezone.now()
    UsedJobToken.objects.claim(issuer="https://x", jti="old", expires_at=now - timedelta(seconds=1), now=now)
    UsedJobToken.objects.claim(issuer="https://x", jti="new", expires_at=now + timedelta(minutes=5), now=now)
    assert list(UsedJobToken.objects.values_list("jti", flat=True)) == ["new"]
    assert not UsedJobToken.objects.claim(issuer="https://x", jti="new", expires_at=now, now=now)


def test_a_policy_over_its_live_token_cap_refuses(client, user, issuer, github_policy):
    github_policy.update(actor=user, max_live_tokens=2)
    for _ in range(2):
        assert post_exchange(client, issuer.github_token(audience=AUDIENCE)).status_code == 200
    assert refused_like_any_other(post_exchange(client, issuer.github_token(audience=AUDIENCE)))
    assert "live tokens already" in TokenExchange.objects.get(accepted=False).reason
    # Two jobs of one run got distinct names.
    assert sorted(Token.objects.values_list("name", flat=True)) == [
        "deploy · run 7283946401",
        "deploy · run 7283946401 (2)",
    ]
    # A revoked one frees its place.
    Token.objects.first().revoke(actor=user)
    assert post_exchange(client, issuer.github_token(audience=AUDIENCE)).status_code == 200


def test_an_issuer_no_longer_allowed_is_refused_unasked(client, user, issuer, github_policy, settings):
    settings.OIDC_FEDERATION_ISSUERS = []
    issuer.requests.clear()
    assert refused_like_any_other(post_exchange(client, issuer.github_token(audience=AUDIENCE)))
    assert "not allowed" in TokenExchange.objects.get().reason
    assert issuer.requests == []


def test_a_deactivated_owner_gets_no_token(client, user, issuer, github_policy):
    user.is_active = False
    user.save()
    assert refused_like_any_other(post_exchange(client, issuer.github_token(audience=AUDIENCE)))


@pytest.mark.parametrize("state", ["down", "hanging", "slow"])
def test_an_issuer_that_is_down_or_slow_cannot_hold_the_request_past_the_timeout(
    client, user, issuer, github_policy, settings, state
):
    settings.OIDC_FEDERATION_TIMEOUT = 0.5
    subject = issuer.github_token(audience=AUDIENCE)
    silent = None
    if state == "down":
        settings.OIDC_FEDERATION_ISSUERS = [closed_port_url()]
        subject = issuer.sign(_claims(issuer, iss=settings.OIDC_FEDERATION_ISSUERS[0]))
        TrustPolicy.objects.filter(pk=github_policy.pk).update(issuer=settings.OIDC_FEDERATION_ISSUERS[0])
    elif state == "hanging":
        silent = SilentServer()
        settings.OIDC_FEDERATION_ISSUERS = [silent.url]
        subject = issuer.sign(_claims(issuer, iss=silent.url))
        TrustPolicy.objects.filter(pk=github_policy.pk).update(issuer=silent.url)
    else:
        issuer.delay = 3
    try:
        started = time.monotonic()
        response = post_exchange(client, subject)
        took = time.monotonic() - started
    finally:
        if silent:
            silent.close()
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert took < 0.5 + 0.5  # the timeout, and time to answer on a busy machine
    assert not Token.objects.exists()


def test_key_rotation_at_the_issuer(client, user, issuer, github_policy):
    assert post_exchange(client, issuer.github_token(audience=AUDIENCE)).status_code == 200
    fetches = issuer.requests.count("/.well-known/jwks")
    issuer.rotate()

    # A key id never seen refetches the keys at most once a minute: within the minute, refused.
    assert refused_like_any_other(post_exchange(client, issuer.github_token(audience=AUDIENCE)))
    assert issuer.requests.count("/.well-known/jwks") == fetches

    # A minute later (the last fetch moved a minute back, not waited for) the new key is fetched.
    exchange.issuer_keys(issuer.url).fetched_at -= exchange.KEY_REFRESH_INTERVAL
    assert post_exchange(client, issuer.github_token(audience=AUDIENCE)).status_code == 200
    assert issuer.requests.count("/.well-known/jwks") == fetches + 1
    # Tokens signed with the withdrawn key are refused from then on, without another fetch.
    old = issuer.sign(_claims(issuer), kid=next(k for k in issuer.keys if k not in issuer.published))
    assert refused_like_any_other(post_exchange(client, old))
    assert issuer.requests.count("/.well-known/jwks") == fetches + 1


def test_keys_are_fetched_once_for_many_exchanges(client, user, issuer, github_policy):
    for _ in range(3):
        assert post_exchange(client, issuer.github_token(audience=AUDIENCE)).status_code == 200
    assert issuer.requests == ["/.well-known/openid-configuration", "/.well-known/jwks"]
    # Five minutes after the fetch (moved, not waited for) the keys are fetched again.
    exchange.issuer_keys(issuer.url).fetched_at -= exchange.KEYS_LIFESPAN + 1
    assert post_exchange(client, issuer.github_token(audience=AUDIENCE)).status_code == 200
    assert issuer.requests.count("/.well-known/jwks") == 2


def test_deleting_the_policy_revokes_its_live_tokens(client, user, issuer, github_policy):
    value = post_exchange(client, issuer.github_token(audience=AUDIENCE)).json()["access_token"]
    other, _plain = Token.objects.issue(user=user, name="mine", expires_at=timezone.now() + timedelta(days=1))

    github_policy.remove(actor=user)

    assert client.get("/api/users/me", **bearer(value)).status_code == 401
    other.refresh_from_db()
    assert other.revoked_at is None
    assert TokenExchange.objects.get().policy is None  # the record stays, with the policy's name
    assert TokenExchange.objects.get().policy_name == "deploy"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"subject_token": ""}, "invalid_request"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "unsupported_token_type"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, "invalid_request"),
        ({"audience": "https://elsewhere.example"}, "invalid_target"),
        ({"resource": "https://elsewhere.example/api"}, "invalid_target"),
        ({"actor_token": "x", "actor_token_type": JWT_TOKEN_TYPE}, "invalid_request"),
    ],
)
def test_malformed_requests_get_rfc_errors_and_change_nothing(client, issuer, github_policy, form, error):
    response = post_exchange(client, issuer.github_token(audience=AUDIENCE), **form)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert "no-store" in response["Cache-Control"]
    assert not Token.objects.exists()
    assert not TokenExchange.objects.exists()


def test_only_post_with_a_form(db, client, issuer):
    assert client.get("/api/token-exchange").status_code == 405
    response = client.post("/api/token-exchange", {"a": "b"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_an_address_that_keeps_failing_is_stopped_before_any_check(client, user, issuer, github_policy):
    for _ in range(settings.API_FAILURES_PER_ADDRESS):
        post_exchange(client, "not.a.jwt")
    issuer.requests.clear()
    response = post_exchange(client, issuer.github_token(audience=AUDIENCE))
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert issuer.requests == []


def test_the_job_token_is_never_stored(client, user, issuer, github_policy):
    subject = issuer.github_token(audience=AUDIENCE)
    value = post_exchange(client, subject).json()["access_token"]
    signature = subject.rsplit(".", 1)[1]
    for model in (TokenExchange, TokenEvent, Token, UsedJobToken):
        for row in model.objects.values():
            text = json.dumps(row, default=str)
            assert signature not in text and value not in text
    assert jwt.get_unverified_header(subject)["kid"] == issuer.current_kid


def test_answers_match_the_openapi_document(client, user, issuer, github_policy, settings):
    path = "/api/token-exchange"
    validate(post_exchange(client, issuer.github_token(audience=AUDIENCE)), path, "post")
    validate(post_exchange(client, "not.a.jwt"), path, "post")
    validate(post_exchange(client, "x", grant_type="password"), path, "post")
    validate(post_exchange(client, "x", subject_token_type="saml"), path, "post")
    validate(post_exchange(client, "x", audience="https://elsewhere.example"), path, "post")
    settings.OIDC_FEDERATION_TIMEOUT = 0.2
    issuer.delay = 1
    exchange.forget_issuers()
    validate(post_exchange(client, issuer.github_token(audience=AUDIENCE)), path, "post")

    client.force_login(user)
    listed = validate(client.get("/api/trust-policies"), "/api/trust-policies", "get")
    assert listed["results"][0]["id"] == github_policy.pk
    created = client.post(
        "/api/trust-policies",
        json.dumps({"name": "second", "issuer": issuer.url, "conditions": {"project_path": "g/p"}}),
        content_type="application/json",
    )
    pk = validate(created, "/api/trust-policies", "post")["id"]
    bad = client.post("/api/trust-policies", json.dumps({"name": "x"}), content_type="application/json")
    validate(bad, "/api/trust-policies", "post")
    detail = "/api/trust-policies/{id}"
    validate(client.get(f"/api/trust-policies/{pk}"), detail, "get")
    changed = client.patch(
        f"/api/trust-policies/{pk}", json.dumps({"max_live_tokens": 2}), content_type="application/json"
    )
    validate(changed, detail, "patch")
    validate(client.delete(f"/api/trust-policies/{pk}"), detail, "delete")
    validate(client.get(f"/api/trust-policies/{pk}"), detail, "get")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://token.actions.githubusercontent.com", True),
        ("https://gitlab.example.org/gitlab", True),
        ("http://127.0.0.1:8123", True),
        ("http://localhost:8123", True),
        ("http://[::1]:8123", True),
        ("http://gitlab.example.org", False),
        ("https://user:pw@gitlab.example.org", False),
        ("https://gitlab.example.org?x=1", False),
        ("ftp://gitlab.example.org", False),
        ("gitlab.example.org", False),
    ],
)
def test_issuers_and_their_keys_are_https_except_on_loopback(url, allowed):
    assert (url_problem(url) is None) is allowed


def test_keys_published_over_plain_http_elsewhere_than_loopback_are_never_fetched(
    client, user, issuer, github_policy
):
    issuer.jwks_uri = "http://keys.example.org/jwks"
    response = post_exchange(client, issuer.github_token(audience=AUDIENCE))
    assert response.status_code == 503
    assert not Token.objects.exists()
    assert issuer.requests == ["/.well-known/openid-configuration"]


def test_a_service_accounts_policy_mints_the_accounts_tokens_after_its_manager_leaves(
    client, user, service_account, issuer
):
    make_manager(user, service_account.team)
    policy = TrustPolicy.objects.create_policy(
        owner=service_account.user,
        actor=user,
        name="nightly",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"repository": "octo-org/octo-repo"},
    )

    response = post_exchange(client, issuer.github_token(audience=AUDIENCE))
    assert response.status_code == 200
    value = response.json()["access_token"]
    assert client.get("/api/users/me", **bearer(value)).json()["username"] == "payments-sync"
    token = Token.objects.get()
    assert token.user == service_account.user and token.exchange.policy == policy
    assert TokenExchange.objects.get().user == service_account.user
    # The minted token is listed with the account's tokens for its manager, not among the manager's own.
    manager = signed_in_client(user)
    listing = manager.get("/profile/integrations/authorizations/").content.decode()
    section = listing[listing.index('id="service-account-') :]
    assert "nightly · run 7283946401" in section

    # The manager loses the role: the account's policy keeps answering its jobs.
    ManagerRole.objects.filter(user=user).delete()
    again = post_exchange(client, issuer.github_token(audience=AUDIENCE, run_id="7283946402"))
    assert again.status_code == 200
    assert (
        client.get("/api/users/me", **bearer(again.json()["access_token"])).json()["username"]
        == "payments-sync"
    )
    assert Token.objects.filter(user=service_account.user).active().count() == 2
