"""Organisation sign-in in a real Chromium, through a real OpenID provider's own pages (oidc-provider).

The provider (tests/identity/provider.py) runs on 127.0.0.1, the portal's live server on localhost:
two sites, as in production, each with its own cookies.
"""

import json
import re
import urllib.error
import urllib.request

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.backends.db import SessionStore

from tests.identity.test_oidc import with_query
from tokens.identity import recent
from tokens.models import ProviderIdentity, Token

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

User = get_user_model()


@pytest.fixture
def org(provider_factory, live_server, settings):
    """The portal signed in through a provider that knows this live server."""
    return provider_factory(live_server.url).configure(settings)


@pytest.fixture
def engineering(db):
    group = Group.objects.create(name="engineering")
    group.permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    return group


def at_provider(page, login):
    """Answer the provider's own login page (and its consent page, the first time) as *login*."""
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    page.wait_for_load_state()
    # The consent page comes once per provider session; otherwise the browser is on its way back.
    if page.url.startswith("http://127.0.0.1:") and page.get_by_role("button", name="Continue").count():
        page.get_by_role("button", name="Continue").click()


def sign_in_with_provider(page, login):
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Example Corp").click()
    at_provider(page, login)
    page.wait_for_url("**/profile/")


def call_api(live_server, value, path="/api/users"):
    request = urllib.request.Request(live_server.url + path, headers={"Authorization": f"Bearer {value}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def create_token(page, name):
    page.get_by_role("link", name="Authorizations").first.click()
    page.get_by_role("link", name="New token").click()
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("heading", name="Copy your new token").wait_for()
    return page.get_by_label(f"Value of “{name}”").input_value()


def test_the_sign_in_page_puts_the_provider_first(org, settings, page, screenshot):
    settings.PASSWORD_SIGN_IN = "staff"
    page.goto("/accounts/login/")
    button = page.get_by_role("link", name="Sign in with Example Corp")
    assert button.is_visible()
    # The break-glass password form is folded away below it.
    assert not page.get_by_label("Password").is_visible()
    screenshot(page, "sign_in_organisation")
    page.get_by_text("Administrators: sign in with a password").click()
    assert page.get_by_label("Password").is_visible()


def test_a_first_sign_in_creates_the_person_with_their_groups_and_they_manage_tokens(
    org, engineering, page, live_server
):
    sign_in_with_provider(page, "ada")
    ada = User.objects.get(username="ada")
    assert [group.name for group in ada.groups.all()] == ["engineering"] and ada.is_staff
    assert ProviderIdentity.objects.get(user=ada).subject == "ada"
    assert page.get_by_text("Connected to your Example Corp account").is_visible()
    value = create_token(page, "Laptop")
    assert call_api(live_server, value) == 200


def test_a_group_removed_at_the_provider_narrows_the_tokens_after_the_next_sign_in(
    org, engineering, page, live_server
):
    sign_in_with_provider(page, "grace")
    value = create_token(page, "Inventory sync")
    assert call_api(live_server, value) == 200
    org.set_groups("grace", [])
    # Still a member until the provider says otherwise at a sign-in.
    assert call_api(live_server, value) == 200
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url("**/accounts/login/")
    sign_in_with_provider(page, "grace")
    assert call_api(live_server, value) == 403
    assert call_api(live_server, value, "/api/users/me") == 200


def test_sign_out_reaches_the_provider(org, page):
    sign_in_with_provider(page, "ada")
    page.get_by_role("button", name="Sign out").click()
    # The provider's own page: the portal's sign-out form was allowed to redirect there (CSP form-action).
    page.get_by_role("button", name="Yes, sign me out").wait_for()
    assert page.url.startswith(org.issuer)
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url("**/accounts/login/")
    # Signed out at both ends: the provider asks for a login again.
    page.get_by_role("link", name="Sign in with Example Corp").click()
    page.locator("input[name=login]").wait_for()
    page.goto("/profile/")
    assert "/accounts/login/" in page.url


def tamper_with_the_authorization_request(page, **changes):
    """Change parameters of the portal's redirect to the provider, as a man in the middle would.

    Playwright routes only the first request of a redirect chain: the portal's /accounts/oidc/start/
    is fetched here, its Location rewritten, and the answer (cookies included) handed to the page.
    """

    def tamper(route):
        response = route.fetch(max_redirects=0)
        location = with_query(response.headers["location"], **changes)
        route.fulfill(response=response, headers={**response.headers, "location": location})

    page.route(re.compile(r".*/accounts/oidc/start/.*"), tamper)


def test_a_forged_state_is_refused(org, page):
    # The provider sends back a state the portal never made: nothing is exchanged or created.
    tamper_with_the_authorization_request(page, state="forged-by-someone-else")
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Example Corp").click()
    at_provider(page, "ada")
    page.get_by_role("heading", name="This sign-in link is not valid any more").wait_for()
    assert not User.objects.exists() and not ProviderIdentity.objects.exists()


def test_a_replayed_callback_is_refused(org, page):
    seen = []
    page.on("request", lambda request: seen.append(request.url) if "/oidc/callback/" in request.url else None)
    sign_in_with_provider(page, "ada")
    page.context.clear_cookies()  # signed out here, the callback URL kept (from a log, a history)
    page.goto(seen[0])
    assert page.get_by_role("heading", name="This sign-in link is not valid any more").is_visible()
    page.goto("/profile/")
    assert "/accounts/login/" in page.url


def test_an_id_token_with_a_wrong_nonce_is_refused(org, page):
    tamper_with_the_authorization_request(page, nonce="not-the-portals-nonce")
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Example Corp").click()
    at_provider(page, "ada")
    page.get_by_role("heading", name="The sign-in could not be verified").wait_for()
    assert not User.objects.exists() and not ProviderIdentity.objects.exists()


def test_with_passwords_off_the_provider_is_the_only_way_in(org, settings, page, staff_user):
    settings.PASSWORD_SIGN_IN = "off"
    page.goto("/accounts/login/")
    assert page.get_by_role("link", name="Sign in with Example Corp").is_visible()
    assert page.locator("input[type=password]").count() == 0
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(staff_user.username)
    page.get_by_label("Password").fill("correct horse battery staple 42")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert "/admin/login/" in page.url
    response = page.goto("/accounts/password_reset/")
    assert response.status == 404
    body = json.dumps(page.content())
    assert "Traceback" not in body


def test_an_old_sign_in_confirms_with_the_provider_and_finishes_creating_the_token(org, page):
    sign_in_with_provider(page, "grace")
    session_key = next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid")
    session = SessionStore(session_key)
    session[recent.SIGNED_IN_AT] -= 20 * 60
    session.save()
    page.get_by_role("link", name="Authorizations").first.click()
    page.get_by_role("link", name="New token").click()
    page.get_by_label("Name").fill("Deploy bot")
    page.get_by_label("Purpose").fill("Deploys on merge")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("heading", name="Confirm it is you").wait_for()
    page.get_by_role("link", name="Confirm with Example Corp").click()
    # prompt=login: the provider asks again although its session is still open.
    at_provider(page, "grace")
    page.get_by_role("heading", name="Confirmed").wait_for()
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Copy your new token").wait_for()
    assert page.get_by_label("Value of “Deploy bot”").input_value().startswith("bpt_")
    assert Token.objects.get(name="Deploy bot").purpose == "Deploys on merge"
