"""SCIM 2.0 provisioning (tokens/identity/scim*.py): who may call it, what it writes, and deactivation."""

import json
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import OperationalError, connection
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import bearer
from tokens.models import LegacyApiKey, ProvisionedUser, Token, TokenEvent, UsageRecord

User = get_user_model()
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@pytest.fixture
def scim(client, scim_token):
    """Call /scim/v2/<path> as the provider: scim("POST", "Users", {...}) -> response."""

    def call(method, path, body=None, *, token=scim_token, raw=None, **extra):
        data = raw if raw is not None else ("" if body is None else json.dumps(body))
        headers = bearer(token) if token else {}
        return client.generic(
            method, f"/scim/v2/{path}", data, content_type="application/scim+json", **headers, **extra
        )

    return call


def new_person(scim, user_name="carol@example.org", external_id="00u1carol", **more):
    body = {
        "schemas": [USER],
        "userName": user_name,
        "externalId": external_id,
        "name": {"givenName": "Carol", "familyName": "Danvers"},
        "emails": [{"value": user_name, "primary": True, "type": "work"}],
        "active": True,
        **more,
    }
    response = scim("POST", "Users", body)
    assert response.status_code == 201, response.content
    return response.json()


def deactivate(scim, person_id):
    op = {"op": "replace", "path": "active", "value": False}
    return scim("PATCH", f"Users/{person_id}", {"schemas": [PATCH], "Operations": [op]})


def is_scim_error(response, status):
    body = response.json()
    return (
        response.status_code == status
        and response["Content-Type"] == "application/scim+json"
        and body["schemas"] == [ERROR]
        and body["status"] == str(status)
        and body["detail"]
    )


# Who may call it


def test_without_a_token_the_answer_is_scims_401_with_a_bearer_challenge(scim):
    response = scim("GET", "Users", token=None)
    assert is_scim_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer ")


def test_a_browser_session_is_not_a_way_in_even_for_a_superuser(staff_user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    assert is_scim_error(browser.get("/scim/v2/Users"), 401)
    body = json.dumps({"schemas": [USER], "userName": "mallory"})
    assert is_scim_error(browser.post("/scim/v2/Users", body, content_type="application/scim+json"), 401)
    assert not User.objects.filter(username="mallory").exists()


def test_a_token_whose_owner_may_not_provision_is_refused_403_and_the_refusal_recorded(scim, user, issue):
    token, value = issue(user)
    response = scim("GET", "Users", token=value)
    assert is_scim_error(response, 403)
    assert UsageRecord.objects.get(token=token).accepted is False


def test_a_token_narrowed_away_from_the_permission_is_refused_and_one_narrowed_to_it_works(
    scim, provider, issue
):
    _token, away = issue(provider, name="narrowed away", permissions=[])
    assert is_scim_error(scim("GET", "Users", token=away), 403)
    _token, kept = issue(provider, name="narrowed to SCIM", permissions=["tokens.scim_provision"])
    assert scim("GET", "Users", token=kept).status_code == 200


def test_a_read_only_token_may_read_but_not_provision(scim, provider, issue):
    _token, value = issue(provider, name="read only", access="read")
    assert scim("GET", "Users", token=value).status_code == 200
    assert is_scim_error(scim("POST", "Users", {"schemas": [USER], "userName": "x"}, token=value), 403)
    assert not User.objects.filter(username="x").exists()


def test_a_token_bound_to_other_addresses_is_refused(scim, provider, issue):
    _token, value = issue(provider, name="bound", allowed_ips=["192.0.2.0/24"])
    assert is_scim_error(scim("GET", "Users", token=value), 403)


def test_a_revoked_token_and_a_legacy_key_are_refused_401(scim, provider, issue):
    token, value = issue(provider, name="revoked")
    token.revoke(actor=provider)
    assert is_scim_error(scim("GET", "Users", token=value), 401)
    key = "provider-legacy-key-0123456789abcdef"
    LegacyApiKey.objects.import_key(user=provider, key=key)
    assert is_scim_error(scim("GET", "Users", token=None, HTTP_REST_API_KEY=key), 401)


def test_every_accepted_call_is_recorded_as_a_use_of_the_token(scim, provider):
    scim("GET", "Users")
    new_person(scim)
    uses = UsageRecord.objects.filter(token__user=provider, accepted=True)
    assert sorted(uses.values_list("method", "path")) == [
        ("GET", "/scim/v2/Users"),
        ("POST", "/scim/v2/Users"),
    ]


# What it writes


def test_a_created_person_is_managed_by_scim_and_found_by_the_providers_external_id(scim):
    created = new_person(scim)
    person = User.objects.get(pk=created["id"])
    assert (person.username, person.first_name) == ("carol@example.org", "Carol")
    assert person.email == "carol@example.org"
    assert not person.has_usable_password()
    assert ProvisionedUser.objects.by_external_id("00u1carol").user == person
    assert ProvisionedUser.objects.by_external_id("someone else") is None
    assert created["externalId"] == "00u1carol"
    assert created["meta"]["location"].endswith(f"/scim/v2/Users/{person.pk}")


def test_a_password_sent_by_the_provider_is_never_set(scim):
    created = new_person(scim, password="Secret-from-the-provider-1")
    assert not User.objects.get(pk=created["id"]).has_usable_password()


@pytest.mark.parametrize("spelling", ["alice", "Alice", "ALICE"])
def test_a_taken_user_name_in_any_case_is_a_409_uniqueness_error(scim, user, spelling):
    response = scim("POST", "Users", {"schemas": [USER], "userName": spelling})
    assert is_scim_error(response, 409)
    assert response.json()["scimType"] == "uniqueness"
    assert User.objects.filter(username__iexact="alice").count() == 1


def test_filter_user_name_eq_finds_existing_local_accounts_too(scim, user):
    new_person(scim)
    found = scim("GET", 'Users?filter=userName eq "alice"').json()
    assert found["totalResults"] == 1
    assert found["Resources"][0]["id"] == str(user.pk)
    # userName is compared without regard to case (RFC 7643, 4.1.1), externalId exactly.
    assert scim("GET", 'Users?filter=userName eq "ALICE"').json()["totalResults"] == 1
    assert scim("GET", 'Users?filter=externalId eq "00U1CAROL"').json()["totalResults"] == 0
    by_external = scim("GET", 'Users?filter=externalId eq "00u1carol"').json()
    assert [r["userName"] for r in by_external["Resources"]] == ["carol@example.org"]


def test_put_replaces_the_person_and_patch_changes_one_attribute(scim):
    created = new_person(scim)
    replaced = scim(
        "PUT",
        f"Users/{created['id']}",
        {"schemas": [USER], "userName": "carol.d@example.org", "externalId": "00u1carol", "active": True},
    ).json()
    assert replaced["userName"] == "carol.d@example.org"
    assert "name" not in replaced and "emails" not in replaced
    ops = [{"op": "replace", "path": "name.givenName", "value": "Captain"}]
    patched = scim("PATCH", f"Users/{created['id']}", {"schemas": [PATCH], "Operations": ops}).json()
    assert patched["name"] == {"givenName": "Captain"}


def test_entra_ids_patch_spellings_are_understood(scim):
    # Capitalised ops, booleans as strings, and a filtered path to the work address.
    created = new_person(scim)
    ops = [
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "carol@new.example.org"},
        {"op": "Replace", "path": "active", "value": "False"},
    ]
    patched = scim("PATCH", f"Users/{created['id']}", {"schemas": [PATCH], "Operations": ops})
    assert patched.status_code == 200, patched.content
    person = User.objects.get(pk=created["id"])
    assert (person.email, person.is_active) == ("carol@new.example.org", False)


# Deactivation


def test_active_false_stops_every_token_and_legacy_key_at_once_with_an_event_naming_the_provider(
    client, scim, issue, provider
):
    created = new_person(scim)
    person = User.objects.get(pk=created["id"])
    _token, value = issue(person, name="laptop")
    key = "carols-legacy-key-0123456789abcdef"
    LegacyApiKey.objects.import_key(user=person, key=key)
    assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert client.get("/api/users/me", HTTP_REST_API_KEY=key).status_code == 200

    assert deactivate(scim, person.pk).json()["active"] is False

    assert client.get("/api/users/me", **bearer(value)).status_code == 401
    assert client.get("/api/users/me", HTTP_REST_API_KEY=key).status_code == 401
    event = TokenEvent.objects.get(user=person, kind=TokenEvent.Kind.DEACTIVATED)
    assert (event.actor, event.detail) == (provider, "okta-scim")
    assert ProvisionedUser.objects.get(user=person).deactivated_at is not None


def test_reactivation_brings_back_unexpired_tokens_but_a_revoked_token_stays_revoked(client, scim, issue):
    created = new_person(scim)
    person = User.objects.get(pk=created["id"])
    _kept, kept = issue(person, name="kept")
    revoked, gone = issue(person, name="revoked")
    deactivate(scim, person.pk)
    revoked.revoke(actor=person)
    ops = [{"op": "replace", "value": {"active": True}}]
    reactivated = scim("PATCH", f"Users/{person.pk}", {"schemas": [PATCH], "Operations": ops})
    assert reactivated.json()["active"] is True
    assert client.get("/api/users/me", **bearer(kept)).status_code == 200
    assert client.get("/api/users/me", **bearer(gone)).status_code == 401
    assert TokenEvent.objects.filter(user=person, kind=TokenEvent.Kind.REACTIVATED).count() == 1


def test_delete_deactivates_and_hides_the_person_but_erases_nothing(client, scim, issue):
    created = new_person(scim)
    person = User.objects.get(pk=created["id"])
    token, value = issue(person, name="laptop")
    client.get("/api/users/me", **bearer(value))
    assert scim("DELETE", f"Users/{person.pk}").status_code == 204
    person.refresh_from_db()
    assert person.is_active is False
    assert Token.objects.filter(pk=token.pk).exists() and UsageRecord.objects.filter(token=token).exists()
    assert TokenEvent.objects.filter(user=person, kind=TokenEvent.Kind.DEACTIVATED).exists()
    assert client.get("/api/users/me", **bearer(value)).status_code == 401
    assert is_scim_error(scim("GET", f"Users/{person.pk}"), 404)
    assert scim("GET", 'Users?filter=userName eq "carol@example.org"').json()["totalResults"] == 0
    assert ProvisionedUser.objects.by_external_id("00u1carol") is None


# Groups


def test_group_membership_from_scim_gives_and_takes_the_groups_permissions(client, scim, issue):
    person = User.objects.get(pk=new_person(scim)["id"])
    _token, value = issue(person, name="laptop")
    created = scim("POST", "Groups", {"schemas": [GROUP], "displayName": "auditors", "externalId": "g1"})
    assert created.status_code == 201, created.content
    group = Group.objects.get(name="auditors")
    group.permissions.add(Permission.objects.get(codename="view_user"))
    assert client.get("/api/users", **bearer(value)).status_code == 403

    add = [{"op": "add", "path": "members", "value": [{"value": str(person.pk)}]}]
    added = scim("PATCH", f"Groups/{group.pk}", {"schemas": [PATCH], "Operations": add}).json()
    assert [m["value"] for m in added["members"]] == [str(person.pk)]
    assert client.get("/api/users", **bearer(value)).status_code == 200
    assert scim("GET", f"Users/{person.pk}").json()["groups"][0]["display"] == "auditors"

    remove = [{"op": "remove", "path": f'members[value eq "{person.pk}"]'}]
    assert (
        scim("PATCH", f"Groups/{group.pk}", {"schemas": [PATCH], "Operations": remove})
        .json()
        .get("members", [])
        == []
    )
    assert client.get("/api/users", **bearer(value)).status_code == 403
    assert scim("GET", 'Groups?filter=displayName eq "auditors"').json()["totalResults"] == 1


def test_a_group_member_must_be_a_known_person(scim):
    body = {"schemas": [GROUP], "displayName": "ghosts", "members": [{"value": "999999"}]}
    assert is_scim_error(scim("POST", "Groups", body), 400)
    assert not Group.objects.filter(name="ghosts").exists()


# Discovery


def test_discovery_describes_what_is_kept_and_how_to_authenticate(scim):
    config = scim("GET", "ServiceProviderConfig").json()
    assert config["patch"]["supported"] and config["filter"]["supported"]
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    types = {t["id"]: t["endpoint"] for t in scim("GET", "ResourceTypes").json()["Resources"]}
    assert types == {"User": "/Users", "Group": "/Groups"}
    user_schema = scim("GET", f"Schemas/{USER}").json()
    kept = {a["name"] for a in user_schema["attributes"]}
    assert kept == {"userName", "name", "emails", "active", "groups"}


# Malformed input: SCIM's error body and a 4xx, never a 500, and nothing changes


@pytest.mark.parametrize(
    "method, path, raw, status",
    [
        ("POST", "Users", "{not json", 400),
        ("POST", "Users", b"\xff\xfe", 400),
        ("POST", "Users", "[1, 2]", 400),
        ("POST", "Users", '{"userName": "lone\\ud800surrogate"}', 400),
        ("POST", "Users", '{"userName": "nul\\u0000byte"}', 400),
        ("POST", "Users", '{"userName": "big", "active": ' + "9" * 5000 + "}", 400),
        ("POST", "Users", '{"userName": "big", "n": 1' + "0" * 30 + "}", 400),
        ("POST", "Users", '{"userName": "nan", "x": NaN}', 400),
        ("POST", "Users", '{"a": ' * 5000 + "1" + "}" * 5000, 400),
        ("POST", "Users", "[" * 100000 + "]" * 100000, 400),
        ("POST", "Users", '{"userName": 12}', 400),
        ("POST", "Users", '{"userName": "has space"}', 400),
        ("POST", "Users", '{"userName": "ok", "name": "Carol"}', 400),
        ("POST", "Users", '{"userName": "ok", "emails": "carol@example.org"}', 400),
        ("POST", "Users", '{"userName": "ok", "emails": [{"value": "not an address"}]}', 400),
        ("POST", "Users", '{"userName": "ok", "emails": [{"value": 5}]}', 400),
        ("POST", "Users", '{"userName": "ok", "active": "maybe"}', 400),
        ("POST", "Users", '{"userName": "ok", "externalId": ["x"]}', 400),
        ("POST", "Users", '{"userName": "' + "x" * 151 + '"}', 400),
        ("POST", "Users", '{"userName": "ok", "schemas": ["urn:nothing"]}', 400),
        ("POST", "Users/5", '{"userName": "ok"}', 405),
        ("POST", "Users", "x" * 300_000, 413),
        ("POST", "Groups", '{"displayName": "g", "members": [{"value": "abc"}]}', 400),
        ("POST", "Groups", '{"displayName": "g", "members": ["1"]}', 400),
        ("POST", "Groups", '{"displayName": {"a": 1}}', 400),
        ("GET", 'Users?filter=userName eq "unclosed', "", 400),
        ("GET", "Users?filter=userName zz 3", "", 400),
        ("GET", "Users?filter=" + "(" * 500, "", 400),
        ("GET", "Users?startIndex=abc", "", 400),
        ("GET", "Users/abc", "", 404),
        ("GET", "Users/" + "9" * 40, "", 404),
        ("GET", "Users/%F0%9F%92%A5", "", 404),
        ("GET", "Nothing/here", "", 404),
        ("DELETE", "Users", "", 405),
        ("GET", "Bulk", "", 501),
    ],
)
def test_malformed_requests_get_scims_error_shape_and_change_nothing(scim, method, path, raw, status):
    before = User.objects.count()
    response = scim(method, path, raw=raw)
    assert is_scim_error(response, status), response.content[:300]
    assert User.objects.count() == before


@pytest.mark.parametrize(
    "query",
    [
        'active eq "maybe"',
        "active eq 5",
        "userName gt 5",
        'userName co "%"',
        'userName sw "_"',
        "userName pr",
        'emails[value eq "x"]',
        'name.givenName eq "C" or externalId eq "e" and active eq true',
        "not (userName eq null)",
        'meta.lastModified gt "2011-05-13T04:42:34Z"',
        'userName eq "\u0000"',
        "userName eq 1" + "0" * 40,
    ],
)
def test_any_filter_is_answered_with_results_or_scims_400_never_a_5xx(scim, query):
    new_person(scim)
    response = scim("GET", f"Users?filter={quote(query)}")
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert is_scim_error(response, 400) and response.json()["scimType"] == "invalidFilter"
    assert scim("GET", "Users").status_code == 200  # the connection is still usable


@pytest.mark.parametrize(
    "operations",
    [
        None,
        [],
        "replace",
        [{"op": "destroy", "path": "active", "value": False}],
        [{"op": 5, "path": "active"}],
        [{"op": "remove"}],
        [{"op": "replace", "path": 7, "value": "x"}],
        [{"op": "replace", "path": "nosuch", "value": "x"}],
        [{"op": "replace", "path": "name[[", "value": "x"}],
        [{"op": "replace", "path": 'emails[type co "w"].value', "value": "x"}],
        [{"op": "replace", "value": "not an object"}],
        [{"op": "replace", "path": "active", "value": 3}],
        [{"op": "replace", "path": "active", "value": None}],
        [{"op": "remove", "path": "active"}],
        [{"op": "remove", "path": "userName"}],
        [{"op": "replace", "path": "userName", "value": ""}],
        [{"op": "replace", "path": 'members[value eq "1"]', "value": "x"}],
        ["not an operation"],
        [{"op": "add", "path": "emails", "value": [{"value": "bad"}]}],
    ],
)
def test_malformed_patches_are_refused_and_change_nothing(scim, operations):
    created = new_person(scim)
    response = scim("PATCH", f"Users/{created['id']}", {"schemas": [PATCH], "Operations": operations})
    assert is_scim_error(response, 400), response.content[:300]
    assert scim("GET", f"Users/{created['id']}").json() == created | {"meta": created["meta"]}
    assert User.objects.get(pk=created["id"]).is_active


def test_a_patch_without_the_patch_schema_is_refused(scim):
    created = new_person(scim)
    ops = [{"op": "replace", "path": "active", "value": False}]
    assert is_scim_error(scim("PATCH", f"Users/{created['id']}", {"Operations": ops}), 400)
    assert User.objects.get(pk=created["id"]).is_active


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
attribute_names = st.sampled_from(
    ["userName", "name", "emails", "active", "externalId", "schemas", "members", "displayName", "groups"]
)
resource_bodies = st.dictionaries(attribute_names, json_values, max_size=6)
operations = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "remove", "Replace", "copy"])},
        optional={
            "path": st.sampled_from(
                ["active", "name.givenName", "emails", 'emails[type eq "work"].value', "members", "userName"]
            )
            | st.text(max_size=20),
            "value": json_values,
        },
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=resource_bodies, ops=operations, user_id=st.text(max_size=8) | st.just("1"))
def test_no_body_or_patch_ever_makes_a_500(scim, body, ops, user_id):
    person = User.objects.get_or_create(username="fuzzed")[0]
    group = Group.objects.get_or_create(name="fuzzed")[0]
    for method, path, payload in (
        ("POST", "Users", body),
        ("POST", "Groups", body),
        ("PUT", f"Users/{quote(user_id, safe='')}", body),
        ("PUT", f"Users/{person.pk}", body),
        ("PATCH", f"Users/{person.pk}", {"schemas": [PATCH], "Operations": ops}),
        ("PATCH", f"Groups/{group.pk}", {"schemas": [PATCH], "Operations": ops}),
    ):
        response = scim(method, path, payload)
        assert response.status_code < 500, (method, path, payload, response.content[:300])
        if response.status_code >= 400:
            assert response.json()["schemas"] == [ERROR]


def test_without_the_database_scim_answers_503_in_its_own_shape_never_open(scim, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("server closed the connection")

    connection.close()
    monkeypatch.setattr(connection, "get_new_connection", refuse)
    response = scim("GET", "Users")
    assert is_scim_error(response, 503)
    assert response["Retry-After"] == "5"


def test_a_scim_change_leaves_staff_and_the_password_an_administrator_set_alone(scim, user):
    found = scim("GET", 'Users?filter=userName eq "alice"').json()["Resources"][0]
    user.is_staff = True
    user.set_password("changed by the administrator")
    user.save()
    ops = [{"op": "replace", "path": "name.familyName", "value": "Liddell"}]
    assert scim("PATCH", f"Users/{found['id']}", {"schemas": [PATCH], "Operations": ops}).status_code == 200
    user.refresh_from_db()
    assert user.last_name == "Liddell" and user.is_staff
    assert user.check_password("changed by the administrator")


def test_scim_answers_are_never_cached(scim):
    assert scim("GET", "Users")["Cache-Control"] == "no-store"
    assert scim("GET", "Users", token=None)["Cache-Control"] == "no-store"


def test_oktas_group_rename_repeating_the_id_is_understood_but_the_id_cannot_change(scim):
    group = scim("POST", "Groups", {"schemas": [GROUP], "displayName": "eng"}).json()
    rename = [{"op": "replace", "value": {"id": group["id"], "displayName": "engineering"}}]
    renamed = scim("PATCH", f"Groups/{group['id']}", {"schemas": [PATCH], "Operations": rename})
    assert renamed.json()["displayName"] == "engineering"
    move = [{"op": "replace", "value": {"id": "12345"}}]
    refused = scim("PATCH", f"Groups/{group['id']}", {"schemas": [PATCH], "Operations": move})
    assert is_scim_error(refused, 400)


def test_a_provider_needs_no_csrf_token_its_bearer_token_is_the_credential(scim_token):
    server_client = Client(enforce_csrf_checks=True)
    body = json.dumps({"schemas": [USER], "userName": "dave"})
    response = server_client.post(
        "/scim/v2/Users", body, content_type="application/scim+json", **bearer(scim_token)
    )
    assert response.status_code == 201
