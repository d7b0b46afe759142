"""Sign-in through a real OpenID Connect provider (oidc-provider), the portal driven by Django's test client.

The provider's own login and consent pages are answered over plain HTTP (``sign_in_at_provider``);
tests/browser/test_organisation_sign_in.py goes through the same pages in Chromium.
"""

import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_key
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import SuspiciousOperation

from tests.helpers import PASSWORD, bearer
from tokens.identity import provider
from tokens.identity.oidc import OrganisationBackend
from tokens.models import ProviderIdentity, ProvisionedUser, Token

from .provider import CLIENT_ID, CLIENT_SECRET, _free_port, sign_in_at_provider

User = get_user_model()


def start(client, **params):
    response = client.get("/accounts/oidc/start/", params)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def provider_sign_in(client, login, **params):
    """Sign *login* in through the provider; return the portal's answer to the callback."""
    return client.get(sign_in_at_provider(start(client, **params), login))


def with_query(url, **changes):
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode({**query, **changes})))


NEW_TOKEN = {"name": "laptop", "expiry": "30d", "nonce": "n" * 43}


def nothing_made():
    return not ProviderIdentity.objects.exists() and not User.objects.filter(username__in=["ada", "grace"])


@pytest.fixture
def engineering(db):
    group = Group.objects.create(name="engineering")
    group.permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    return group


# --- who is who -------------------------------------------------------------------------------------------


def test_a_first_provider_sign_in_creates_the_person_with_their_groups(oidc, client, engineering):
    response = provider_sign_in(client, "ada")
    assert response.status_code == 302 and response["Location"] == "/profile/"
    ada = User.objects.get(username="ada")
    assert (ada.email, ada.first_name, ada.last_name) == ("ada@example.org", "Ada", "Lovelace")
    # Only groups that exist here are kept; "portal-admins" is a configured staff group.
    assert [group.name for group in ada.groups.all()] == ["engineering"]
    assert ada.is_staff and not ada.is_superuser
    assert not ada.has_usable_password()
    identity = ProviderIdentity.objects.get(user=ada)
    assert (identity.issuer, identity.subject) == (oidc.issuer, "ada")
    assert identity.last_sign_in_at is not None
    # They are signed in and manage tokens.
    assert client.get("/profile/integrations/authorizations/").status_code == 200
    created = client.post("/profile/integrations/authorizations/new/", NEW_TOKEN)
    assert created.status_code == 200 and Token.objects.filter(user=ada, name="laptop").exists()


def test_a_later_sign_in_finds_the_same_person_and_refreshes_them(oidc, client, engineering):
    provider_sign_in(client, "grace")
    grace = User.objects.get(username="grace")
    people_before = User.objects.count()
    client.logout()
    oidc.set_groups("grace", [])
    assert provider_sign_in(client, "grace").status_code == 302
    assert User.objects.count() == people_before
    grace.refresh_from_db()
    assert list(grace.groups.all()) == []


def test_a_group_removed_at_the_provider_narrows_the_persons_tokens_at_the_next_sign_in(
    oidc, client, engineering, issue
):
    provider_sign_in(client, "grace")
    grace = User.objects.get(username="grace")
    _token, value = issue(grace, permissions=["auth.view_user"])
    assert client.get("/api/users", **bearer(value)).status_code == 200
    oidc.set_groups("grace", ["sales"])
    client.logout()
    provider_sign_in(client, "grace")
    assert client.get("/api/users", **bearer(value)).status_code == 403


def test_groups_are_read_from_the_id_token_too(provider_factory, settings, client, engineering):
    provider_factory("http://testserver", id_token_claims=True).configure(settings)
    provider_sign_in(client, "grace")
    assert [group.name for group in User.objects.get(username="grace").groups.all()] == ["engineering"]


def test_superuser_follows_the_configured_group(oidc, settings, client):
    settings.OIDC_SUPERUSER_GROUPS = ["portal-admins"]
    provider_sign_in(client, "ada")
    ada = User.objects.get(username="ada")
    assert ada.is_superuser and ada.is_staff
    oidc.set_groups("ada", ["engineering"])
    client.logout()
    provider_sign_in(client, "ada")
    ada.refresh_from_db()
    assert not ada.is_superuser and not ada.is_staff


@pytest.mark.parametrize(
    "local",
    [{"username": "ada"}, {"username": "a.lovelace", "email": "ADA@example.org"}],
    ids=["name", "email"],
)
def test_a_first_sign_in_colliding_with_an_unlinked_local_account_is_refused_and_creates_nothing(
    oidc, client, local
):
    existing = User.objects.create_user(password=PASSWORD, **local)
    response = provider_sign_in(client, "ada")
    assert response.status_code == 409
    assert "already an account here with your username or e-mail address" in response.content.decode()
    assert list(User.objects.all()) == [existing]
    assert not ProviderIdentity.objects.exists()
    assert "_auth_user_id" not in client.session


def test_the_account_scim_made_for_the_same_subject_is_linked_at_the_first_sign_in(oidc, client):
    # SCIM made Ada's account ahead of her first sign-in, with the provider's id of her as externalId.
    ada = User.objects.create_user(username="ada", email="ada@example.org")
    ProvisionedUser.objects.create(user=ada, external_id="ada", provider="scim-bot")
    response = provider_sign_in(client, "ada")
    assert response.status_code == 302
    assert int(client.session["_auth_user_id"]) == ada.pk
    assert ProviderIdentity.objects.get(issuer=oidc.issuer, subject="ada").user == ada
    assert User.objects.count() == 1


def test_an_account_scim_made_for_another_subject_is_still_a_collision(oidc, client):
    other = User.objects.create_user(username="ada", email="ada@example.org")
    ProvisionedUser.objects.create(user=other, external_id="someone-else", provider="scim-bot")
    response = provider_sign_in(client, "ada")
    assert response.status_code == 409
    assert not ProviderIdentity.objects.exists() and "_auth_user_id" not in client.session


def test_a_re_used_address_never_opens_someone_elses_linked_account(oidc, client):
    # Ada left; her address went to Grace. Grace's first sign-in must not land in Ada's account.
    ada = User.objects.create_user(username="ada-old", email="grace@example.org")
    ProviderIdentity.objects.link(user=ada, issuer=oidc.issuer, subject="ada")
    provider_sign_in(client, "grace")
    grace = User.objects.get(provider_identities__subject="grace")
    assert grace != ada and int(client.session["_auth_user_id"]) == grace.pk


def test_a_switched_off_person_cannot_sign_in_through_the_provider(oidc, client):
    provider_sign_in(client, "grace")
    User.objects.filter(username="grace").update(is_active=False)
    client.logout()
    response = provider_sign_in(client, "grace")
    assert response.status_code == 403 and "switched off" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_an_identity_connected_to_a_service_account_signs_nobody_in(oidc, client, service_account):
    ProviderIdentity.objects.link(user=service_account.user, issuer=oidc.issuer, subject="grace")
    response = provider_sign_in(client, "grace")
    page = response.content.decode()
    assert response.status_code == 403 and "nobody signs in as a service account" in page
    assert "switched off" not in page
    assert "_auth_user_id" not in client.session


# --- connecting an existing account -----------------------------------------------------------------------


def test_a_password_user_connects_their_provider_account_from_the_profile(oidc, client, user):
    client.login(username=user.username, password=PASSWORD)
    profile = client.get("/profile/").content.decode()
    assert "Connect your Example Corp account" in profile
    response = provider_sign_in(client, "grace", purpose="connect", next="/profile/")
    assert response.status_code == 302 and response["Location"] == "/profile/"
    assert ProviderIdentity.objects.get(subject="grace").user == user
    assert "Connected to your Example Corp account" in client.get("/profile/").content.decode()
    # From now on the provider sign-in opens this account.
    client.logout()
    provider_sign_in(client, "grace")
    assert int(client.session["_auth_user_id"]) == user.pk
    assert not User.objects.filter(username="grace").exists()


def test_connecting_a_provider_account_linked_to_someone_else_is_refused(oidc, client, user, other_user):
    ProviderIdentity.objects.link(user=other_user, issuer=oidc.issuer, subject="grace")
    client.login(username=user.username, password=PASSWORD)
    response = provider_sign_in(client, "grace", purpose="connect")
    assert response.status_code == 403 and "already connected to another account" in response.content.decode()
    assert ProviderIdentity.objects.get(subject="grace").user == other_user
    assert int(client.session["_auth_user_id"]) == user.pk


def test_an_administrator_links_an_account_in_the_admin(oidc, client, user, staff_user):
    client.force_login(staff_user)
    page = client.get("/admin/tokens/provideridentity/add/")
    assert oidc.issuer in page.content.decode()
    response = client.post(
        "/admin/tokens/provideridentity/add/", {"user": user.pk, "issuer": oidc.issuer, "subject": "grace"}
    )
    assert response.status_code == 302
    client.logout()
    provider_sign_in(client, "grace")
    assert int(client.session["_auth_user_id"]) == user.pk
    client.force_login(staff_user)
    listing = client.get("/admin/tokens/provideridentity/").content.decode()
    assert "alice" in listing and "grace" in listing and "Last provider sign-in" in listing


# --- refusals end on a clear page and change nothing ------------------------------------------------------


def test_a_forged_state_is_refused(oidc, client):
    callback = sign_in_at_provider(start(client), "ada")
    response = client.get(with_query(callback, state="forged-state-value"))
    assert response.status_code == 400 and "not valid any more" in response.content.decode()
    assert nothing_made()


def test_a_replayed_callback_is_refused(oidc, client):
    callback = sign_in_at_provider(start(client), "ada")
    assert client.get(callback).status_code == 302
    client.logout()
    response = client.get(callback)
    assert response.status_code == 400 and "not valid any more" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_an_id_token_with_another_nonce_is_refused(oidc, client):
    location = with_query(start(client), nonce="a-nonce-the-portal-never-made")
    response = client.get(sign_in_at_provider(location, "ada"))
    assert response.status_code == 400 and "did not pass our checks" in response.content.decode()
    assert nothing_made()


def test_a_code_the_provider_no_longer_accepts_ends_on_a_clear_page(oidc, client):
    # The code of one attempt with the state (and PKCE verifier) of another: the provider refuses it.
    first = sign_in_at_provider(start(client), "ada")
    second_state = parse_qs(urlsplit(start(client)).query)["state"][0]
    response = client.get(with_query(first, state=second_state))
    assert response.status_code == 400 and "Start again" in response.content.decode()
    assert nothing_made()


def test_a_cancelled_sign_in_ends_on_a_clear_page(oidc, client):
    state = parse_qs(urlsplit(start(client)).query)["state"][0]
    response = client.get("/accounts/oidc/callback/", {"error": "access_denied", "state": state})
    assert response.status_code == 403 and "cancelled" in response.content.decode()
    assert state not in client.session["oidc_states"]


def test_an_unreachable_provider_ends_on_a_clear_page(oidc, settings, client):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{_free_port()}"
    response = client.get("/accounts/oidc/start/")
    assert response.status_code == 503 and "cannot be reached" in response.content.decode()


def test_a_discovery_document_for_another_issuer_is_refused(oidc, settings, client):
    settings.OIDC_ISSUER = oidc.issuer + "/"
    assert client.get("/accounts/oidc/start/").status_code == 503


def test_next_stays_on_this_site(oidc, client):
    assert provider_sign_in(client, "ada", next="https://evil.example/")["Location"] == "/profile/"
    client.logout()
    wanted = "/profile/integrations/authorizations/"
    assert provider_sign_in(client, "ada", next=wanted)["Location"] == wanted


def test_the_authorization_request_uses_pkce_s256_state_and_nonce(oidc, client):
    query = parse_qs(urlsplit(start(client)).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert query["client_id"] == [CLIENT_ID]
    assert "groups" in query["scope"][0].split()


# --- sign-out ---------------------------------------------------------------------------------------------


def test_sign_out_ends_the_session_and_the_providers(oidc, client):
    provider_sign_in(client, "ada")
    response = client.post("/accounts/logout/")
    assert response.status_code == 303
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}" == oidc.issuer
    query = parse_qs(target.query)
    assert query["post_logout_redirect_uri"] == ["http://testserver/accounts/login/"]
    assert query["id_token_hint"][0].count(".") == 2
    assert client.get("/profile/").status_code == 302  # signed out here
    # The provider accepts the request (it asks to confirm, then sends the browser back).
    assert requests.get(response["Location"], timeout=10).status_code == 200


def test_a_password_user_signs_out_without_visiting_the_provider(oidc, client, user):
    client.login(username=user.username, password=PASSWORD)
    assert client.post("/accounts/logout/")["Location"] == "/accounts/login/"


def test_the_csp_lets_forms_reach_the_issuer_and_no_other_origin(oidc, client):
    policy = client.get("/accounts/login/")["Content-Security-Policy"]
    assert f"form-action 'self' {oidc.issuer}" in policy
    assert policy.count("http") == 1


def test_without_a_groups_claim_the_groups_set_here_are_kept(oidc, settings, client, engineering):
    # Google sends no groups: an administrator keeps them in the portal instead.
    settings.OIDC_GROUPS_CLAIM = ""
    provider_sign_in(client, "grace")
    grace = User.objects.get(username="grace")
    assert list(grace.groups.all()) == [] and not grace.is_staff
    grace.groups.add(engineering)
    client.logout()
    provider_sign_in(client, "grace")
    assert list(grace.groups.all()) == [engineering]


# --- ID tokens the provider did not sign --------------------------------------------------------------------


def _claims(oidc):
    now = int(time.time())
    return {"iss": oidc.issuer, "aud": CLIENT_ID, "sub": "ada", "iat": now, "exp": now + 300, "nonce": "n"}


def test_an_id_token_signed_with_a_key_the_provider_does_not_publish_is_refused(oidc):
    published = requests.get(provider.metadata().jwks_uri, timeout=10).json()["keys"]
    rsa = next(key for key in published if key["kty"] == "RSA")
    forger = rsa_key.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(oidc), forger, algorithm="RS256", headers={"kid": rsa["kid"]})
    with pytest.raises(SuspiciousOperation):
        OrganisationBackend().verify_token(token, nonce="n")


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_an_id_token_with_a_symmetric_or_no_signature_is_refused(oidc, algorithm):
    key = CLIENT_SECRET if algorithm == "HS256" else None
    token = jwt.encode(_claims(oidc), key, algorithm=algorithm)
    with pytest.raises(SuspiciousOperation):
        OrganisationBackend().verify_token(token, nonce="n")
