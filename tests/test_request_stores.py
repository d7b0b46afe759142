"""portal/middleware.py's session and message middlewares: stores built on first use, answers unchanged.

Every request here is sent twice, through the portal's MIDDLEWARE and through the same list with Django's
own SessionMiddleware and MessageMiddleware in their place, and both answers must be the same: status,
headers (the security headers, Vary, Cache-Control, WWW-Authenticate…), cookies and body. Then the
counting stores (tests/counting_stores.py, plugged in through Django's SESSION_ENGINE and MESSAGE_STORAGE)
show what a request authenticated by a bearer token or a legacy key no longer builds.
"""

import re

import pytest
from django.test import Client

from tests import counting_stores

from .helpers import ALICE_KEY, PASSWORD, bearer, me

pytestmark = pytest.mark.django_db

DJANGO_OWN = {
    "portal.middleware.SessionMiddleware": "django.contrib.sessions.middleware.SessionMiddleware",
    "portal.middleware.MessageMiddleware": "django.contrib.messages.middleware.MessageMiddleware",
}
ME = "/api/users/me"
CSRF_SECRET = "k" * 32  # an unmasked secret, which Django accepts in the cookie and the header alike
# A form's CSRF token is masked anew on every render, and an expiry moves with the clock.
CSRF_FIELD = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]+"')


def _answer(response):
    """Return what a client sees of *response*, less the values that differ on every request."""
    headers = {name: value for name, value in response.headers.items() if name != "X-Request-ID"}
    if "Expires" in headers:  # never_cache's Expires is the time of the answer
        headers["Expires"] = bool(headers["Expires"])
    cookies = {
        name: (
            bool(morsel.value),
            {name: bool(value) if name == "expires" else value for name, value in morsel.items()},
        )
        for name, morsel in response.cookies.items()
    }
    return response.status_code, headers, cookies, CSRF_FIELD.sub(b"", response.content)


@pytest.fixture
def both_ways(settings, user):
    """Send a request through the portal's middleware, then Django's own; return the two answers."""
    portal = list(settings.MIDDLEWARE)

    def send(request, *, signed_in=False, enforce_csrf=False):
        answers = []
        for middleware in (portal, [DJANGO_OWN.get(name, name) for name in portal]):
            settings.MIDDLEWARE = middleware
            client = Client(enforce_csrf_checks=enforce_csrf)  # its handler reads MIDDLEWARE when first used
            if signed_in:
                client.force_login(user)
            answers.append(_answer(request(client)))
        settings.MIDDLEWARE = portal
        return answers

    return send


@pytest.fixture
def counted(settings):
    settings.SESSION_ENGINE = "tests.counting_stores"
    settings.MESSAGE_STORAGE = "tests.counting_stores.MessageStorage"
    counting_stores.built.clear()
    return counting_stores.built


def _sign_in(client):
    return client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})


def _with_csrf(client):
    client.cookies["csrftoken"] = CSRF_SECRET
    return client.post(ME, headers={"X-CSRFToken": CSRF_SECRET})


def test_the_stock_middleware_is_the_one_the_portal_extends(settings):
    assert set(DJANGO_OWN) <= set(settings.MIDDLEWARE)


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda client, value: client.get(ME, **bearer(value)), id="bearer"),
        pytest.param(lambda client, value: me(client, ALICE_KEY), id="legacy key"),
        pytest.param(lambda client, _value: client.get(ME, **bearer("bpt_garbage")), id="refused"),
        pytest.param(lambda client, value: client.get(ME), id="no credentials"),
        pytest.param(
            lambda client, value: client.get(ME, HTTP_AUTHORIZATION="Basic YWxpY2U6c2VjcmV0"),
            id="another scheme",
        ),
        pytest.param(lambda client, value: client.get("/accounts/login/"), id="sign-in page"),
        pytest.param(lambda client, _value: _sign_in(client), id="signing in"),
    ],
)
def test_a_request_without_a_session_is_answered_as_before(both_ways, alice_key, issued, send):
    _token, value = issued
    ours, djangos = both_ways(lambda client: send(client, value))
    assert ours == djangos


@pytest.mark.parametrize(
    "send, enforce_csrf",
    [
        pytest.param(lambda client, value: client.get(ME), False, id="session GET"),
        pytest.param(lambda client, value: client.post(ME), True, id="session POST, no CSRF token"),
        pytest.param(lambda client, value: _with_csrf(client), True, id="session POST with its CSRF token"),
        pytest.param(
            lambda client, value: client.get(ME, **bearer(value)), True, id="bearer beside a session"
        ),
        pytest.param(lambda client, value: me(client, ALICE_KEY), True, id="legacy key beside a session"),
        pytest.param(
            lambda client, value: client.get("/profile/integrations/authorizations/"), False, id="a page"
        ),
        pytest.param(lambda client, value: client.post("/accounts/logout/"), False, id="signing out"),
    ],
)
def test_a_request_with_a_session_is_answered_as_before(both_ways, alice_key, issued, send, enforce_csrf):
    _token, value = issued
    ours, djangos = both_ways(lambda client: send(client, value), signed_in=True, enforce_csrf=enforce_csrf)
    assert ours == djangos


def test_the_csrf_check_still_refuses_a_session_write_without_its_token(both_ways):
    ours, _djangos = both_ways(lambda client: client.post(ME), signed_in=True, enforce_csrf=True)
    assert ours[0] == 403
    ours, _djangos = both_ways(_with_csrf, signed_in=True, enforce_csrf=True)
    assert ours[0] == 405  # past the CSRF check, to the view, which only answers GET


def test_a_bearer_request_builds_no_session_store_and_no_message_storage(
    client, counted, issued, django_assert_num_queries
):
    _token, value = issued
    client.get(ME, **bearer(value))  # the first use writes the token's row: not the usual path
    counted.clear()
    with django_assert_num_queries(2):  # the lookup and the usage record, nothing for a session
        response = client.get(ME, **bearer(value))
    assert response.status_code == 200
    assert "Vary" not in response
    assert "sessionid" not in response.cookies
    assert counted == {}


def test_a_legacy_key_request_builds_no_session_store_and_no_message_storage(client, counted, alice_key):
    assert me(client, ALICE_KEY).status_code == 200
    counted.clear()
    response = me(client, ALICE_KEY)
    assert response.status_code == 200
    assert "Vary" not in response
    assert counted == {}


def test_a_bearer_request_beside_a_session_cookie_never_loads_the_session(client, counted, user, issued):
    _token, value = issued
    client.force_login(user)
    counted.clear()
    response = client.get(ME, **bearer(value))
    assert response.json()["auth"]["method"] == "bearer"
    # The cookie's store is made (its session could be gone, and its cookie then deleted), never read.
    assert counted["session load"] == 0
    assert counted["message storage"] == 0


def test_a_session_request_loads_its_session_as_before(client, counted, user):
    client.force_login(user)
    counted.clear()
    response = client.get(ME)
    assert response.json()["auth"]["method"] == "session"
    assert counted["session load"] == 1
    assert response["Vary"] == "Cookie"


def test_a_request_without_credentials_still_asks_the_session_and_varies_on_the_cookie(client, counted):
    response = client.get(ME)
    assert response.status_code == 401
    assert response["Vary"] == "Cookie"
    assert counted["session store"] == 1
    assert counted["message storage"] == 0


def test_a_page_still_shows_a_message_once(client, counted, user):
    client.force_login(user)
    html = client.get("/profile/integrations/authorizations/new/").content.decode()
    form = {
        "name": "deploy bot",
        "purpose": "CI deploys",
        "expiry": "30d",
        "custom_expiry": "",
        "nonce": re.search(r'name="nonce" value="([^"]+)"', html).group(1),
    }
    assert client.post("/profile/integrations/authorizations/new/", form).status_code == 200
    # The same form again: the token exists, and a message on the next page says so.
    again = client.post("/profile/integrations/authorizations/new/", form)
    assert again.status_code == 303
    shown = client.get(again["Location"])
    assert "This form was already submitted" in shown.content.decode()
    assert "This form was already submitted" not in client.get(again["Location"]).content.decode()
    assert counted["message storage"] >= 3  # added, shown, then read and found empty
