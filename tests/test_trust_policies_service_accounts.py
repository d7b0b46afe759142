"""A service account's trust policies, managed by its team's managers on the Keyless CI pages and the API.

The account owns the policy and the tokens it mints; the manager who acts is recorded as the actor.
Only a manager's signed-in manager_client reaches them: a token gets 403, anyone else 404.
"""

import json

import pytest
from django.contrib.auth.models import Permission

from tests.helpers import TRUST_POLICY_FORM, bearer, signed_in_client
from tokens.models import ManagerRole, ServiceAccount, Token, TokenEvent, TokenExchange, TrustPolicy

pytestmark = pytest.mark.django_db

GITHUB = "https://token.actions.githubusercontent.com"
PINNED = {"repository": "octo-org/octo-repo", "ref": "refs/heads/main"}
PAGES = "/profile/integrations/keyless-ci"
TOKEN_PAGES = "/profile/integrations/authorizations"


@pytest.fixture(autouse=True)
def allowed_issuers(settings):
    settings.OIDC_FEDERATION_ISSUERS = [GITHUB]
    settings.SITE_URL = "https://tokens.example.com"


@pytest.fixture
def outsider(other_user):
    return signed_in_client(other_user)


@pytest.fixture
def account_policy(service_account, manager):
    return TrustPolicy.objects.create_policy(
        owner=service_account.user, actor=manager, name="nightly", issuer=GITHUB, conditions=PINNED
    )


def minted(policy, run):
    """Mint a token as an accepted exchange does: the token, and the exchange that links it to *policy*."""
    token, _value = policy.mint(
        job=f"run {run}", purpose=f"https://github.com/octo-org/octo-repo/actions/runs/{run}"
    )
    TokenExchange.objects.create(
        accepted=True,
        issuer=GITHUB,
        subject="repo:octo-org/octo-repo:ref:refs/heads/main",
        repository="octo-org/octo-repo",
        job=f"run {run}",
        policy=policy,
        policy_name=policy.name,
        user=policy.user,
        token=token,
    )
    return token


def policies_url(account, pk=None):
    base = f"/api/service-accounts/{account.pk}/trust-policies"
    return base if pk is None else f"{base}/{pk}"


def _send(client, method, url, body=None, **extra):
    return getattr(client, method)(url, json.dumps(body or {}), content_type="application/json", **extra)


def test_a_manager_creates_lists_changes_and_deletes_an_accounts_policy_by_api(
    manager_client, manager, service_account
):
    created = _send(
        manager_client,
        "post",
        policies_url(service_account),
        {"name": "deploy", "issuer": GITHUB, "conditions": PINNED},
    )

    assert created.status_code == 201
    body = created.json()
    assert created["Location"] == policies_url(service_account, body["id"])
    assert (
        body["token_lifetime"] == 900
        and body["max_live_tokens"] == 10
        and body["audience"] == "https://tokens.example.com"
    )
    policy = TrustPolicy.objects.get(pk=body["id"])
    assert policy.user == service_account.user
    event = TokenEvent.objects.get(kind=TokenEvent.Kind.TRUST_CHANGED)
    assert event.user == service_account.user and event.actor == manager
    # The account's policies are listed under the account, not among the manager's own.
    assert [p["name"] for p in manager_client.get(policies_url(service_account)).json()["results"]] == [
        "deploy"
    ]
    assert manager_client.get("/api/trust-policies").json()["count"] == 0
    assert manager_client.get(f"/api/trust-policies/{policy.pk}").status_code == 404

    changed = _send(manager_client, "patch", policies_url(service_account, policy.pk), {"max_live_tokens": 2})
    assert changed.status_code == 200 and changed.json()["max_live_tokens"] == 2
    assert manager_client.get(policies_url(service_account, policy.pk)).json()["max_live_tokens"] == 2

    token = minted(policy, 1)
    assert manager_client.delete(policies_url(service_account, policy.pk)).status_code == 204
    assert not TrustPolicy.objects.exists()
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == manager
    kinds = TokenEvent.objects.filter(user=service_account.user, actor=manager).values_list("kind", flat=True)
    assert list(kinds).count(TokenEvent.Kind.TRUST_CHANGED) == 3


def test_the_same_rules_hold_for_an_accounts_policy(manager_client, manager, service_account):
    # The manager may view users; the account may not: its policy cannot mint that permission.
    manager.user_permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    refused = _send(
        manager_client,
        "post",
        policies_url(service_account),
        {"name": "deploy", "issuer": GITHUB, "conditions": PINNED, "permissions": ["auth.view_user"]},
    )
    assert refused.status_code == 400 and "permissions" in refused.json()["fields"]
    unpinned = _send(
        manager_client,
        "post",
        policies_url(service_account),
        {"name": "deploy", "issuer": GITHUB, "conditions": {"ref": "refs/heads/main"}},
    )
    assert unpinned.status_code == 400 and "conditions" in unpinned.json()["fields"]
    assert not TrustPolicy.objects.exists()


def test_a_token_gets_403_even_the_managers_or_the_accounts(
    client, manager, service_account, account_policy, issue
):
    for owner in (manager, service_account.user):
        _token, value = issue(owner, name=f"key of {owner}")
        listed = client.get(policies_url(service_account), **bearer(value))
        assert listed.status_code == 403
        created = _send(
            client,
            "post",
            policies_url(service_account),
            {"name": "x", "issuer": GITHUB, "conditions": PINNED},
            **bearer(value),
        )
        assert created.status_code == 403
        deleted = client.delete(policies_url(service_account, account_policy.pk), **bearer(value))
        assert deleted.status_code == 403
    assert list(TrustPolicy.objects.values_list("name", flat=True)) == ["nightly"]


def test_anyone_but_a_manager_gets_404_and_changes_nothing(outsider, service_account, account_policy):
    assert outsider.get(policies_url(service_account)).status_code == 404
    assert (
        _send(
            outsider,
            "post",
            policies_url(service_account),
            {"name": "x", "issuer": GITHUB, "conditions": PINNED},
        ).status_code
        == 404
    )
    assert outsider.get(policies_url(service_account, account_policy.pk)).status_code == 404
    assert (
        _send(
            outsider, "patch", policies_url(service_account, account_policy.pk), {"name": "mine"}
        ).status_code
        == 404
    )
    assert outsider.delete(policies_url(service_account, account_policy.pk)).status_code == 404
    assert outsider.get(f"{PAGES}/service-accounts/{service_account.pk}/new/").status_code == 404
    assert (
        outsider.post(f"{PAGES}/service-accounts/{service_account.pk}/new/", TRUST_POLICY_FORM).status_code
        == 404
    )
    assert outsider.get(f"{PAGES}/{account_policy.pk}/").status_code == 404
    assert outsider.post(f"{PAGES}/{account_policy.pk}/delete/").status_code == 404
    assert b"nightly" not in outsider.get(f"{PAGES}/").content
    assert list(TrustPolicy.objects.values_list("name", flat=True)) == ["nightly"]


def test_a_policy_of_another_account_is_404_under_this_one(
    manager_client, manager, service_account, account_policy
):
    other = ServiceAccount.objects.create_account(username="payments-export", team=service_account.team)
    assert manager_client.get(policies_url(other)).json()["count"] == 0
    assert manager_client.get(policies_url(other, account_policy.pk)).status_code == 404
    assert manager_client.delete(policies_url(other, account_policy.pk)).status_code == 404
    assert TrustPolicy.objects.filter(pk=account_policy.pk).exists()


@pytest.mark.parametrize("loses", ["role", "team"])
def test_a_manager_who_loses_the_role_or_leaves_the_team_loses_access_at_once(
    manager_client, manager, service_account, account_policy, loses
):
    assert manager_client.get(policies_url(service_account, account_policy.pk)).status_code == 200
    assert manager_client.get(f"{PAGES}/{account_policy.pk}/").status_code == 200
    if loses == "role":
        ManagerRole.objects.filter(user=manager).delete()
    else:
        manager.groups.remove(service_account.team)

    assert manager_client.get(policies_url(service_account)).status_code == 404
    assert manager_client.delete(policies_url(service_account, account_policy.pk)).status_code == 404
    assert manager_client.get(f"{PAGES}/{account_policy.pk}/").status_code == 404
    assert manager_client.post(f"{PAGES}/{account_policy.pk}/delete/").status_code == 404
    assert manager_client.get(f"{PAGES}/service-accounts/{service_account.pk}/new/").status_code == 404
    assert b"nightly" not in manager_client.get(f"{PAGES}/").content
    # The account's policy keeps working: it still mints tokens of the account.
    token, _value = account_policy.mint(
        job="run 9", purpose="https://github.com/octo-org/octo-repo/actions/runs/9"
    )
    assert token.user == service_account.user


def test_the_pages_create_edit_and_delete_an_accounts_policy(manager_client, manager, service_account):
    listing = manager_client.get(f"{PAGES}/").content.decode()
    new_url = f"{PAGES}/service-accounts/{service_account.pk}/new/"
    assert "Service account payments-sync" in listing and f'href="{new_url}"' in listing
    assert "This service account has no trust policies." in listing

    form = manager_client.get(new_url)
    assert (
        form.status_code == 200 and b"New trust policy for the service account payments-sync" in form.content
    )
    created = manager_client.post(new_url, TRUST_POLICY_FORM)
    assert created.status_code == 303
    policy = TrustPolicy.objects.get()
    assert policy.user == service_account.user and policy.conditions == PINNED and policy.access == "read"
    assert created["Location"] == f"{PAGES}/{policy.pk}/"
    event = TokenEvent.objects.get(kind=TokenEvent.Kind.TRUST_CHANGED)
    assert event.user == service_account.user and event.actor == manager

    listing = manager_client.get(f"{PAGES}/").content.decode()
    section = listing[listing.index("Service account payments-sync") :]
    assert f'href="{PAGES}/{policy.pk}/"' in section
    assert "You have no trust policies." in listing  # the manager's own list stays empty

    detail = manager_client.get(created["Location"]).content.decode()
    assert "get a token of the service account payments-sync" in detail
    edited = manager_client.post(created["Location"], {**TRUST_POLICY_FORM, "token_lifetime": "30"})
    assert edited.status_code == 303
    policy.refresh_from_db()
    assert policy.token_lifetime == 1800

    assert manager_client.get(f"{PAGES}/{policy.pk}/delete/").status_code == 200
    assert manager_client.post(f"{PAGES}/{policy.pk}/delete/").status_code == 303
    assert not TrustPolicy.objects.exists()
    assert (
        TokenEvent.objects.filter(
            user=service_account.user, actor=manager, kind=TokenEvent.Kind.TRUST_CHANGED
        ).count()
        == 3
    )


def test_an_accounts_minted_tokens_and_refusals_show_on_its_policy_page(
    manager_client, service_account, account_policy
):
    token = minted(account_policy, 42)
    TokenExchange.objects.create(
        accepted=False,
        reason="no policy's conditions hold",
        issuer=GITHUB,
        subject="repo:octo-org/octo-repo:pull",
        repository="octo-org/octo-repo",
        job="run 43",
        policy=account_policy,
        policy_name="nightly",
        user=service_account.user,
    )
    page = manager_client.get(f"{PAGES}/{account_policy.pk}/").content.decode()
    assert f'href="{TOKEN_PAGES}/{token.pk}/"' in page and "nightly · run 42" in page
    assert "no policy&#x27;s conditions hold" in page
    # The minted token is the account's: its manager opens it like the account's other tokens.
    assert Token.objects.get(pk=token.pk).user == service_account.user
    assert manager_client.get(f"{TOKEN_PAGES}/{token.pk}/").status_code == 200
