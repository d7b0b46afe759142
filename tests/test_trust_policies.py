"""Trust policies: the rules (TrustPolicy), the API with a session, the Keyless CI pages and the admin."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from tests.helpers import PASSWORD, TRUST_POLICY_FORM, bearer
from tokens.models import Token, TokenEvent, TokenExchange, TrustPolicy

GITHUB = "https://token.actions.githubusercontent.com"
GITLAB = "https://gitlab.com"
PINNED = {"repository": "octo-org/octo-repo", "ref": "refs/heads/main"}


@pytest.fixture(autouse=True)
def allowed_issuers(settings):
    settings.OIDC_FEDERATION_ISSUERS = [GITHUB, GITLAB]
    settings.SITE_URL = "https://tokens.example.com"


@pytest.fixture
def signed_in(client, user):
    client.login(username=user.username, password=PASSWORD)
    return client


def _post(client, url, body, method="post"):
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


def test_create_by_api_with_defaults(signed_in, user):
    response = _post(
        signed_in, "/api/trust-policies", {"name": "deploy", "issuer": GITHUB, "conditions": PINNED}
    )

    assert response.status_code == 201
    body = response.json()
    assert response["Location"] == f"/api/trust-policies/{body['id']}"
    assert body == {
        "id": body["id"],
        "name": "deploy",
        "issuer": GITHUB,
        "issuer_name": "GitHub Actions",
        "audience": "https://tokens.example.com",
        "conditions": PINNED,
        "access": "read_write",
        "permissions": None,
        "allowed_ips": [],
        "token_lifetime": 900,
        "max_live_tokens": 10,
        "created_at": body["created_at"],
        "last_exchange_at": None,
    }
    assert TokenEvent.objects.filter(user=user, kind=TokenEvent.Kind.TRUST_CHANGED).count() == 1
    listed = signed_in.get("/api/trust-policies").json()
    assert listed["count"] == 1 and listed["results"][0]["name"] == "deploy"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"issuer": "https://evil.example"}, "issuer"),
        ({"token_lifetime": 3601}, "token_lifetime"),
        ({"token_lifetime": 900.5}, "token_lifetime"),
        ({"token_lifetime": True}, "token_lifetime"),
        ({"token_lifetime": 120}, "token_lifetime"),  # under the site's five-minute minimum
        ({"max_live_tokens": 0}, "max_live_tokens"),
        ({"conditions": {"ref": "refs/heads/main"}}, "conditions"),
        ({"conditions": {"repository": "*"}}, "conditions"),
        ({"conditions": {"repository": "*/octo-repo"}}, "conditions"),
        ({"conditions": {}}, "conditions"),
        ({"conditions": ["repository"]}, "conditions"),
        ({"conditions": {"repository": 7}}, "conditions"),
        ({"conditions": {"bad claim": "x", "repository": "a/b"}}, "conditions"),
        ({"access": "admin"}, "access"),
        ({"permissions": ["auth.delete_user"]}, "permissions"),
        ({"allowed_ips": ["not an address"]}, "allowed_ips"),
        ({"audience": ""}, "audience"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_create_refuses_bad_fields_with_400_and_fields(signed_in, change, field):
    body = {"name": "deploy", "issuer": GITHUB, "conditions": PINNED, **change}
    response = _post(signed_in, "/api/trust-policies", body)
    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert not TrustPolicy.objects.exists()


def test_pinning_an_organisation_or_a_gitlab_project_is_enough(signed_in):
    for name, issuer, conditions in (
        ("org", GITHUB, {"repository": "octo-org/*"}),
        ("gitlab", GITLAB, {"project_path": "my-group/my-project", "ref_protected": "true"}),
    ):
        response = _post(
            signed_in, "/api/trust-policies", {"name": name, "issuer": issuer, "conditions": conditions}
        )
        assert response.status_code == 201, response.json()


def test_patch_and_delete_by_api(signed_in, user):
    pk = _post(
        signed_in, "/api/trust-policies", {"name": "deploy", "issuer": GITHUB, "conditions": PINNED}
    ).json()["id"]
    response = _post(
        signed_in, f"/api/trust-policies/{pk}", {"token_lifetime": 600, "access": "read"}, method="patch"
    )
    assert response.status_code == 200
    assert response.json()["token_lifetime"] == 600 and response.json()["access"] == "read"
    assert (
        _post(signed_in, f"/api/trust-policies/{pk}", {"token_lifetime": 7200}, method="patch").status_code
        == 400
    )
    assert TrustPolicy.objects.get().token_lifetime == 600

    assert signed_in.delete(f"/api/trust-policies/{pk}").status_code == 204
    assert not TrustPolicy.objects.exists()
    assert signed_in.get(f"/api/trust-policies/{pk}").status_code == 404


def test_policies_are_the_owners_only(client, user, other_user):
    theirs = TrustPolicy.objects.create_policy(
        owner=other_user, actor=other_user, name="theirs", issuer=GITHUB, conditions=PINNED
    )
    client.login(username=user.username, password=PASSWORD)
    assert client.get(f"/api/trust-policies/{theirs.pk}").status_code == 404
    assert client.delete(f"/api/trust-policies/{theirs.pk}").status_code == 404
    assert client.get("/api/trust-policies").json()["count"] == 0
    assert client.get(f"/profile/integrations/keyless-ci/{theirs.pk}/").status_code == 404
    assert TrustPolicy.objects.filter(pk=theirs.pk).exists()


def test_a_bearer_token_cannot_manage_policies(client, user, issue):
    _token, value = issue(user)
    assert client.get("/api/trust-policies", **bearer(value)).status_code == 403
    response = client.post(
        "/api/trust-policies",
        json.dumps({"name": "x", "issuer": GITHUB, "conditions": PINNED}),
        content_type="application/json",
        **bearer(value),
    )
    assert response.status_code == 403
    assert not TrustPolicy.objects.exists()


def test_without_a_session_the_api_answers_401(client, db):
    assert client.get("/api/trust-policies").status_code == 401


def test_permissions_must_be_the_owners(user):
    user.user_permissions.add(Permission.objects.get(codename="view_user"))
    policy = TrustPolicy.objects.create_policy(
        owner=user, actor=user, name="p", issuer=GITHUB, conditions=PINNED, permissions=["auth.view_user"]
    )
    assert policy.permissions == ["auth.view_user"]


def test_the_page_creates_edits_and_deletes_a_policy_without_javascript(signed_in, user):
    page = signed_in.get("/profile/integrations/keyless-ci/new/")
    assert page.status_code == 200
    assert b"GitHub Actions" in page.content and b"GitLab.com" in page.content

    response = signed_in.post("/profile/integrations/keyless-ci/new/", TRUST_POLICY_FORM)
    assert response.status_code == 303
    policy = TrustPolicy.objects.get(user=user)
    assert policy.conditions == PINNED and policy.token_lifetime == 900 and policy.access == "read"

    listing = signed_in.get("/profile/integrations/keyless-ci/")
    assert b"deploy" in listing.content and b"repository = octo-org/octo-repo" in listing.content

    detail = signed_in.get(response["Location"])
    assert detail.status_code == 200
    edited = signed_in.post(
        response["Location"],
        {
            **TRUST_POLICY_FORM,
            "conditions": "repository = octo-org/octo-repo",
            "token_lifetime": "30",
            "max_live_tokens": "3",
        },
    )
    assert edited.status_code == 303
    policy.refresh_from_db()
    assert policy.token_lifetime == 1800 and policy.max_live_tokens == 3
    assert policy.conditions == {"repository": "octo-org/octo-repo"}

    assert signed_in.get(f"/profile/integrations/keyless-ci/{policy.pk}/delete/").status_code == 200
    assert signed_in.post(f"/profile/integrations/keyless-ci/{policy.pk}/delete/").status_code == 303
    assert not TrustPolicy.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("conditions", "ref = refs/heads/main", b"Pin the repository or project"),
        ("conditions", "repository octo-org/octo-repo", b"Line 1"),
        ("token_lifetime", "61", b"less than or equal to 60"),
    ],
)
def test_the_page_shows_errors_next_to_the_field(signed_in, field, value, message):
    response = signed_in.post("/profile/integrations/keyless-ci/new/", {**TRUST_POLICY_FORM, field: value})
    assert response.status_code == 400
    assert message in response.content
    assert not TrustPolicy.objects.exists()


def test_the_page_lists_minted_tokens_and_refusals_with_their_reason(signed_in, user):
    policy = TrustPolicy.objects.create_policy(
        owner=user, actor=user, name="deploy", issuer=GITHUB, conditions=PINNED
    )
    token, _value = policy.mint(job="run 42", purpose="https://github.com/octo-org/octo-repo/actions/runs/42")
    TokenExchange.objects.create(
        accepted=True,
        issuer=GITHUB,
        subject="repo:octo-org/octo-repo:ref:refs/heads/main",
        repository="octo-org/octo-repo",
        job="run 42",
        policy=policy,
        policy_name="deploy",
        user=user,
        token=token,
    )
    TokenExchange.objects.create(
        accepted=False,
        reason="no policy's conditions hold",
        issuer=GITHUB,
        subject="repo:octo-org/octo-repo:pull",
        repository="octo-org/octo-repo",
        job="run 43",
        policy=policy,
        policy_name="deploy",
        user=user,
    )
    for url in ("/profile/integrations/keyless-ci/", f"/profile/integrations/keyless-ci/{policy.pk}/"):
        page = signed_in.get(url).content.decode()
        assert "deploy · run 42" in page
        assert "no policy&#x27;s conditions hold" in page
    assert token.expires_at - token.created_at == timedelta(minutes=15)


def test_the_admin_shows_the_policy_of_a_minted_token_and_deletes_policies(client, staff_user, user):
    policy = TrustPolicy.objects.create_policy(
        owner=user, actor=user, name="deploy", issuer=GITHUB, conditions=PINNED
    )
    token, _value = policy.mint(job="run 42", purpose="")
    TokenExchange.objects.create(
        accepted=True, policy=policy, policy_name="deploy", user=user, token=token, job="run 42"
    )
    client.login(username=staff_user.username, password=PASSWORD)

    page = client.get(f"/admin/tokens/token/{token.pk}/change/").content.decode()
    assert "minted by trust policy" in page.lower() and "deploy" in page
    assert client.get("/admin/tokens/tokenexchange/").status_code == 200
    assert client.get("/admin/tokens/trustpolicy/").status_code == 200

    response = client.post(f"/admin/tokens/trustpolicy/{policy.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == staff_user


def test_mint_respects_the_lifetime_and_the_owners_lost_permissions(user):
    perm = Permission.objects.get(codename="view_user")
    user.user_permissions.add(perm)
    policy = TrustPolicy.objects.create_policy(
        owner=user,
        actor=user,
        name="p",
        issuer=GITHUB,
        conditions=PINNED,
        permissions=["auth.view_user"],
        token_lifetime=600,
    )
    user.user_permissions.remove(perm)
    now = timezone.now()
    token, _value = policy.mint(job="run 1", purpose="", now=now)
    assert token.permissions == []
    assert token.expires_at == now + timedelta(seconds=600)
    assert Token.objects.get(pk=token.pk).name == "p · run 1"


def test_the_profile_shows_policy_changes_minted_tokens_and_refusals(signed_in, user):
    policy = TrustPolicy.objects.create_policy(
        owner=user, actor=user, name="deploy", issuer=GITHUB, conditions=PINNED
    )
    token, _value = policy.mint(job="run 42", purpose="")
    policy.record(TokenEvent.Kind.EXCHANGED, token=token, detail="https://token.actions…, run 42")
    policy.record(TokenEvent.Kind.EXCHANGE_REFUSED, detail="expired: repo:octo-org/octo-repo, run 43")

    page = signed_in.get("/profile/").content.decode()

    assert "Trust policy changed" in page and "created deploy" in page
    assert "Minted for a CI job" in page and "run 42" in page
    assert "CI job refused" in page and "expired: repo:octo-org/octo-repo, run 43" in page
