"""/api/service-accounts (tokens/api/service_accounts.py): a manager's session, the shapes of /api/tokens."""

import pytest
from django.contrib.auth.models import Group

from tokens.models import ServiceAccount, Token, TokenEvent

from .helpers import _snapshot, assert_clear_api_error, bearer, make_manager, signed_in_client

pytestmark = pytest.mark.django_db

JSON = "application/json"


@pytest.fixture
def account_token(service_account, issue):
    return issue(service_account.user, name="nightly-sync")


def tokens_url(account, pk=None, suffix=""):
    base = f"/api/service-accounts/{account.pk}/tokens"
    return base if pk is None else f"{base}/{pk}{suffix}"


def test_a_manager_lists_the_accounts_they_manage(manager_client, service_account):
    other_team = Group.objects.create(name="hr")
    ServiceAccount.objects.create_account(username="hr-export", team=other_team)
    body = manager_client.get("/api/service-accounts").json()
    assert body["count"] == 1
    assert body["results"] == [
        {
            "id": service_account.pk,
            "username": "payments-sync",
            "description": "Nightly ledger sync",
            "team": "payments",
            "is_active": True,
        }
    ]


def test_a_manager_creates_lists_changes_rotates_and_revokes_an_accounts_token_as_themselves(
    manager_client, manager, service_account, client
):
    created = manager_client.post(
        tokens_url(service_account), {"name": "ledger", "access": "read"}, content_type=JSON
    )
    assert created.status_code == 201
    assert "no-store" in created["Cache-Control"]
    body = created.json()
    token = Token.objects.get(pk=body["id"])
    assert created["Location"] == tokens_url(service_account, token.pk)
    assert token.user == service_account.user and body["access"] == "read"
    value = body.pop("token")
    assert client.get("/api/users/me", **bearer(value)).json()["username"] == "payments-sync"
    # The value is in the 201 only: the list and the token never carry it.
    listed = manager_client.get(tokens_url(service_account))
    assert listed.json()["count"] == 1 and value not in listed.content.decode()
    assert manager_client.get(tokens_url(service_account, token.pk)).json()["name"] == "ledger"

    renamed = manager_client.patch(
        tokens_url(service_account, token.pk), {"name": "ledger-v2"}, content_type=JSON
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "ledger-v2"
    rotated = manager_client.post(
        tokens_url(service_account, token.pk, "/rotate"), {"overlap": 0}, content_type=JSON
    )
    assert rotated.status_code == 201
    new_id = rotated.json()["id"]
    assert rotated["Location"] == tokens_url(service_account, new_id)
    assert manager_client.delete(tokens_url(service_account, new_id)).status_code == 204
    assert Token.objects.get(pk=new_id).revoked_at is not None

    managed = ("created", "renamed", "rotated", "revoked")
    events = TokenEvent.objects.filter(user=service_account.user, token__isnull=False, kind__in=managed)
    assert {event.kind for event in events} == set(managed)
    assert {event.actor_id for event in events} == {manager.pk}


def test_the_rules_of_api_tokens_apply_to_an_accounts_tokens(manager_client, service_account, account_token):
    # The name of an active token of the account is taken, whoever asks.
    taken = manager_client.post(tokens_url(service_account), {"name": "nightly-sync"}, content_type=JSON)
    assert assert_clear_api_error(taken, 400)["fields"]["name"]
    # A permission the account does not hold is refused, even if the manager held it.
    wider = manager_client.post(
        tokens_url(service_account), {"name": "wider", "permissions": ["auth.view_user"]}, content_type=JSON
    )
    assert "permissions" in assert_clear_api_error(wider, 400)["fields"]


def test_a_token_gets_403_on_every_service_account_endpoint_even_a_managers_own(
    client, manager, service_account, account_token, issue
):
    token, account_value = account_token
    _own, manager_value = issue(manager, name="manager's own")
    before = _snapshot(tokens_only=True)
    for value in (manager_value, account_value):
        auth = bearer(value)
        assert_clear_api_error(client.get("/api/service-accounts", **auth), 403)
        assert_clear_api_error(client.get(tokens_url(service_account), **auth), 403)
        assert_clear_api_error(
            client.post(tokens_url(service_account), {"name": "x"}, content_type=JSON, **auth), 403
        )
        assert_clear_api_error(
            client.patch(tokens_url(service_account, token.pk), {"name": "x"}, content_type=JSON, **auth), 403
        )
        assert_clear_api_error(client.delete(tokens_url(service_account, token.pk), **auth), 403)
        assert_clear_api_error(client.post(tokens_url(service_account, token.pk, "/rotate"), **auth), 403)
    assert _snapshot(tokens_only=True) == before


def test_an_accounts_own_token_may_not_manage_the_accounts_tokens_only_rotate_itself(
    client, service_account, account_token, issue, policy
):
    policy.bearer_can_create_tokens = True
    policy.save()
    _token, value = account_token
    other, _other_value = issue(service_account.user, name="other")
    auth = bearer(value)
    assert_clear_api_error(client.post("/api/tokens", {"name": "more"}, content_type=JSON, **auth), 403)
    assert_clear_api_error(
        client.patch(f"/api/tokens/{other.pk}", {"name": "x"}, content_type=JSON, **auth), 403
    )
    assert_clear_api_error(client.delete(f"/api/tokens/{other.pk}", **auth), 403)
    assert_clear_api_error(client.post(f"/api/tokens/{other.pk}/rotate", content_type=JSON, **auth), 403)
    assert Token.objects.get(pk=other.pk).revoked_at is None
    rotated = client.post("/api/tokens/self/rotate", content_type=JSON, **auth)
    assert rotated.status_code == 201
    assert Token.objects.get(pk=rotated.json()["id"]).user == service_account.user


def test_anyone_who_does_not_manage_the_account_gets_404_and_changes_nothing(
    client, other_user, service_account, account_token
):
    token, _value = account_token
    outsider = signed_in_client(other_user)
    before = _snapshot(tokens_only=True)
    assert outsider.get("/api/service-accounts").json()["count"] == 0
    assert_clear_api_error(outsider.get(tokens_url(service_account)), 404)
    assert_clear_api_error(outsider.post(tokens_url(service_account), {"name": "x"}, content_type=JSON), 404)
    assert_clear_api_error(outsider.get(tokens_url(service_account, token.pk)), 404)
    assert_clear_api_error(outsider.delete(tokens_url(service_account, token.pk)), 404)
    assert_clear_api_error(outsider.post(tokens_url(service_account, token.pk, "/rotate")), 404)
    # A member of the team without the role is no manager either.
    other_user.groups.add(service_account.team)
    assert_clear_api_error(outsider.get(tokens_url(service_account)), 404)
    assert_clear_api_error(client.get(tokens_url(service_account)), 401)
    assert _snapshot(tokens_only=True) == before


def test_a_token_is_found_only_under_its_own_account(manager_client, manager, service_account, issue, user):
    ops = Group.objects.create(name="ops")
    make_manager(manager, ops)
    other_account = ServiceAccount.objects.create_account(username="ops-bot", team=ops)
    token, _value = issue(other_account.user)
    own, _value = issue(user, name="mine")
    assert_clear_api_error(manager_client.get(tokens_url(service_account, token.pk)), 404)
    assert_clear_api_error(manager_client.get(tokens_url(service_account, own.pk)), 404)
    assert manager_client.get(tokens_url(other_account, token.pk)).status_code == 200


def test_a_manager_who_leaves_the_team_gets_404_on_the_next_request(
    manager_client, manager, service_account, account_token
):
    token, _value = account_token
    assert manager_client.get(tokens_url(service_account, token.pk)).status_code == 200
    manager.groups.remove(service_account.team)
    assert_clear_api_error(manager_client.get(tokens_url(service_account, token.pk)), 404)
    assert manager_client.get("/api/service-accounts").json()["count"] == 0
