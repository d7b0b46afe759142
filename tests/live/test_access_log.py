"""No credential reaches a log line, wherever the client put it: real gunicorn, its real access log.

gunicorn writes its access log and Django's loggers to the same output (``--access-logfile -``, LOGGING's
stdout handler), which these tests read back after real requests.
"""

import re
from urllib.parse import quote, urlencode

import pytest
from django.db import connection

from tokens.models import LegacyApiKey

from ..helpers import PASSWORD
from .helpers import GunicornServer, database_url

LEGACY_KEY = "legacy-key-in-a-query-string-42"


@pytest.fixture
def server(django_db_setup, django_db_blocker, live_log_dir):
    """A gunicorn of its own, so that its log holds this test's requests only."""
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    server = GunicornServer(url, workers=1, log_dir=live_log_dir).start()
    yield server
    server.stop()


def signed_in_cookie(client, username, password):
    page = client.get("/admin/login/")
    csrf = re.search(r"csrftoken=([^;]+)", page.headers["set-cookie"]).group(1)
    field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.request(
        "POST",
        "/admin/login/?next=/admin/",
        headers={"Cookie": f"csrftoken={csrf}", "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"username": username, "password": password, "csrfmiddlewaretoken": field}),
    )
    assert response.status == 302, response
    session = re.search(r"sessionid=([^;]+)", response.headers["set-cookie"]).group(1)
    return f"csrftoken={csrf}; sessionid={session}"


def test_no_token_or_key_from_a_url_reaches_the_access_log_or_djangos_loggers(
    server, user, staff_user, issue, policy
):
    _token, value = issue(user)
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    client = server.client()
    cookie = signed_in_cookie(client, "sam", PASSWORD)
    # A value pasted into the admin's search box: the browser puts it in the address.
    search = client.get(f"/admin/tokens/token/?q={value}", headers={"Cookie": cookie})
    assert search.status == 302  # sent on to the value-free page
    # ?access_token= as OAuth clients send it; a legacy key as ?api_key=; a value in a path and a referrer.
    assert client.get(f"/api/users/me?access_token={value}").status == 401
    assert client.get(f"/api/users/me?format=json&api_key={quote(LEGACY_KEY)}").status == 401
    assert client.get(f"/healthz?note=Bearer+{value}", headers={"Referer": f"https://x.example/?t={value}"})
    assert client.get(f"/api/tokens/{value}").status in (401, 404)
    # A Host Django refuses is logged by Django's own security logger, with the host in the line.
    assert client.get("/healthz", headers={"Host": value}).status == 400
    client.close()
    server.stop()

    log = server.log()
    assert value not in log and LEGACY_KEY not in log
    assert "/admin/tokens/token/?q=[redacted]" in log
    assert "access_token=[redacted]" in log and "api_key=[redacted]" in log
    assert "/api/tokens/[redacted]" in log
    assert "Invalid HTTP_HOST header: '[redacted]'" in log
