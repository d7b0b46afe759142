"""Recent sign-in: creating, rotating and widening a token need a sign-in within SUDO_MINUTES."""

import re
import time
from html import unescape

import pytest
from django.utils import timezone

from tests.helpers import PASSWORD
from tokens.constants import Access
from tokens.identity import recent
from tokens.identity.oidc import CONFIRM, SignInRefused, person_for
from tokens.models import ProviderIdentity, Token

from .provider import sign_in_at_provider
from .test_oidc import provider_sign_in, start

NEW = "/profile/integrations/authorizations/new/"
CONFIRM_URL = "/accounts/confirm/"
TYPED = {"name": "release bot", "purpose": "tags releases", "expiry": "7d", "nonce": "r" * 43}


def signed_in_minutes_ago(client, minutes):
    session = client.session
    session[recent.SIGNED_IN_AT] = int(time.time()) - minutes * 60
    session.save()


def continue_form(client):
    """GET the confirmation page after confirming; return the form's action and its kept fields."""
    html = client.get(CONFIRM_URL).content.decode()
    action = re.search(r'<form method="post" action="([^"]+)"', html)
    assert action, html
    fields = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html):
        if name != "csrfmiddlewaretoken":
            fields[unescape(name)] = unescape(value)
    return action[1], fields


@pytest.fixture
def stale(client, user):
    client.force_login(user)
    signed_in_minutes_ago(client, 16)
    return client


def test_a_fresh_sign_in_creates_a_token_straight_away(client, user):
    client.force_login(user)
    assert client.post(NEW, TYPED).status_code == 200
    assert Token.objects.filter(user=user, name="release bot").exists()


def test_an_old_sign_in_is_asked_to_confirm_then_finishes_the_step_with_what_was_typed(stale, user):
    response = stale.post(NEW, TYPED)
    assert response.status_code == 303 and response["Location"] == CONFIRM_URL
    assert not Token.objects.exists()
    page = stale.get(CONFIRM_URL).content.decode()
    assert "What you entered is kept" in page
    assert stale.post(CONFIRM_URL, {"password": "not it"}).status_code == 400
    assert stale.post(CONFIRM_URL, {"password": PASSWORD}).status_code == 303
    action, fields = continue_form(stale)
    assert action == NEW and fields == TYPED
    reveal = stale.post(action, fields)
    assert reveal.status_code == 200 and "release bot" in reveal.content.decode()
    token = Token.objects.get(user=user)
    assert (token.name, token.purpose) == ("release bot", "tags releases")


def test_the_window_is_the_setting(stale, settings):
    settings.SUDO_MINUTES = 30
    assert stale.post(NEW, TYPED).status_code == 200


def test_rotating_after_an_old_sign_in_asks_to_confirm(stale, user, issue):
    token, _value = issue(user)
    response = stale.post(f"/profile/integrations/authorizations/{token.pk}/rotate/", {"overlap": "none"})
    assert response["Location"] == CONFIRM_URL
    token.refresh_from_db()
    assert token.is_active and Token.objects.count() == 1


def _restrict(client, token, **fields):
    data = {"access": token.access, "permission_scope": "all", "allowed_ips": "", **fields}
    return client.post(f"/profile/integrations/authorizations/{token.pk}/restrictions/", data)


def test_narrowing_needs_no_confirmation_but_widening_does(stale, user, issue):
    token, _value = issue(user)
    assert _restrict(stale, token, access=Access.READ, allowed_ips="192.0.2.0/24").status_code == 303
    token.refresh_from_db()
    assert token.access == Access.READ and token.allowed_ips == ["192.0.2.0/24"]
    assert _restrict(stale, token, access=Access.READ, allowed_ips="192.0.2.7").status_code == 303
    widened = _restrict(stale, token, access=Access.READ_WRITE, allowed_ips="192.0.2.7")
    assert widened["Location"] == CONFIRM_URL
    token.refresh_from_db()
    assert token.access == Access.READ and token.allowed_ips == ["192.0.2.7"]


@pytest.mark.parametrize(
    "held, given, wider",
    [
        ({"access": Access.READ}, {"access": Access.READ_WRITE}, True),
        ({"access": Access.READ_WRITE}, {"access": Access.READ}, False),
        ({"permissions": ["auth.view_user"]}, {"permissions": None}, True),
        ({"permissions": ["auth.view_user"]}, {"permissions": ["auth.view_user", "auth.add_user"]}, True),
        ({"permissions": ["auth.view_user", "auth.add_user"]}, {"permissions": ["auth.view_user"]}, False),
        ({"allowed_ips": ["10.0.0.0/8"]}, {"allowed_ips": []}, True),
        ({"allowed_ips": ["10.0.0.0/8"]}, {"allowed_ips": ["10.1.2.3", "10.9.0.0/16"]}, False),
        ({"allowed_ips": ["10.0.0.0/8"]}, {"allowed_ips": ["192.0.2.1"]}, True),
        ({"allowed_ips": ["10.0.0.0/8"]}, {"allowed_ips": ["2001:db8::1"]}, True),
        ({"allowed_ips": []}, {"allowed_ips": ["192.0.2.1"]}, False),
    ],
)
def test_what_counts_as_widening(held, given, wider):
    token = Token(access=Access.READ_WRITE, permissions=None, allowed_ips=[])
    for field, value in held.items():
        setattr(token, field, value)
    kwargs = {"access": None, "permissions": token.permissions, "allowed_ips": token.allowed_ips, **given}
    assert recent.widens(token, **kwargs) is wider


def test_a_step_kept_for_one_person_is_not_replayed_for_another(stale, user, other_user):
    stale.post(NEW, TYPED)
    kept = stale.session[recent.PENDING_STEP]
    stale.force_login(other_user)
    session = stale.session
    session[recent.PENDING_STEP] = kept
    session.save()
    assert stale.get(CONFIRM_URL)["Location"] == "/profile/"


# --- confirming with the provider -------------------------------------------------------------------------


def test_a_provider_user_confirms_with_a_fresh_provider_sign_in(oidc, client):
    provider_sign_in(client, "grace")
    signed_in_minutes_ago(client, 20)
    assert client.post(NEW, TYPED)["Location"] == CONFIRM_URL
    page = client.get(CONFIRM_URL).content.decode()
    assert "Confirm with Example Corp" in page and 'name="password"' not in page
    location = start(client, purpose="confirm", next=CONFIRM_URL)
    assert "prompt=login" in location and "max_age=0" in location
    callback = sign_in_at_provider(location, "grace")
    assert client.get(callback)["Location"] == CONFIRM_URL
    action, fields = continue_form(client)
    assert client.post(action, fields).status_code == 200
    assert Token.objects.filter(name="release bot", user__username="grace").exists()


def test_confirming_as_another_person_at_the_provider_is_refused(oidc, client):
    provider_sign_in(client, "grace")
    signed_in_minutes_ago(client, 20)
    client.post(NEW, TYPED)
    response = client.get(sign_in_at_provider(start(client, purpose="confirm"), "ada"))
    assert response.status_code == 403 and "different person" in response.content.decode()
    assert not recent.signed_in_recently(client)
    assert client.post(NEW, TYPED)["Location"] == CONFIRM_URL


def test_a_confirmation_that_drops_prompt_login_is_refused_when_the_provider_sign_in_is_old(oidc, user):
    # What the callback checks when a provider ignores prompt=login/max_age: auth_time before the attempt.
    ProviderIdentity.objects.link(user=user, issuer=oidc.issuer, subject="grace")
    started = time.time()
    claims = {"sub": "grace", "auth_time": int(started) - 3600}
    with pytest.raises(SignInRefused):
        person_for(claims, purpose=CONFIRM, current_user=user, started_at=started, now=timezone.now())
    claims["auth_time"] = int(started) + 1
    assert person_for(claims, purpose=CONFIRM, current_user=user, started_at=started) == user


# --- the JSON API with a browser session ------------------------------------------------------------------


def test_the_api_with_an_old_browser_session_may_not_create_rotate_or_widen(stale, user, issue):
    token, _value = issue(user, access=Access.READ)
    created = stale.post("/api/tokens", {"name": "x"}, content_type="application/json")
    assert created.status_code == 403 and "/accounts/confirm/" in created.json()["detail"]
    rotated = stale.post(f"/api/tokens/{token.pk}/rotate", {}, content_type="application/json")
    assert rotated.status_code == 403
    widened = stale.patch(
        f"/api/tokens/{token.pk}", {"access": "read_write"}, content_type="application/json"
    )
    assert widened.status_code == 403
    renamed = stale.patch(f"/api/tokens/{token.pk}", {"name": "renamed"}, content_type="application/json")
    assert renamed.status_code == 200
    bad = stale.patch(f"/api/tokens/{token.pk}", {"permissions": 7}, content_type="application/json")
    assert bad.status_code == 400
    token.refresh_from_db()
    assert token.access == Access.READ and Token.objects.count() == 1


def test_the_api_with_a_fresh_browser_session_creates_tokens(client, user):
    client.force_login(user)
    assert client.post("/api/tokens", {"name": "x"}, content_type="application/json").status_code == 201
