"""Faults: the database stops under a running server, and usage writes fail.

The server must fail closed (503, never a success and never an anonymous answer) and come back by
itself when the database does, with no restart.
"""

import re
import secrets
import time
from urllib.parse import urlencode

import pytest
from django.db import connection

from tests import secret_scan
from tokens.models import Token, UsageRecord
from tokens.usage.read import usage_totals

from ..helpers import PASSWORD
from .helpers import GunicornServer

pytestmark = pytest.mark.live

SETUP = """
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from tokens.models import LegacyApiKey, Token
user = get_user_model().objects.create_user(username={username!r}, password={password!r})
token, value = Token.objects.issue(user=user, name="fault test",
                                   expires_at=timezone.now() + timedelta(days=1))
LegacyApiKey.objects.import_key(user=user, key={key!r})
print(json.dumps({{"value": value, "secrets": [value]}}))
"""


def post_sign_in(client, username, password):
    """POST the real sign-in form with the CSRF cookie and field a fresh GET of it hands out."""
    page = client.get("/accounts/login/")  # rendering the form needs no database
    csrf_cookie = re.search(r"csrftoken=([^;]+)", page.headers["set-cookie"]).group(1)
    csrf_field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return client.request(
        "POST",
        "/accounts/login/",
        headers={"Cookie": f"csrftoken={csrf_cookie}", "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"username": username, "password": password, "csrfmiddlewaretoken": csrf_field}),
    )


def sign_in(client, username, password):
    """Sign in through the real form; return the Cookie header of the signed-in session."""
    response = post_sign_in(client, username, password)
    assert response.status == 302, response
    csrf_cookie = re.search(r"csrftoken=([^;]+)", response.headers["set-cookie"]).group(1)
    session = re.search(r"sessionid=([^;]+)", response.headers["set-cookie"]).group(1)
    return f"csrftoken={csrf_cookie}; sessionid={session}"


def wait_for(check, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_with_the_database_stopped_the_server_fails_closed_and_recovers_by_itself(
    throwaway_postgres, live_log_dir
):
    username, key = f"fault-{secrets.token_hex(4)}", "legacy-" + secrets.token_urlsafe(24)

    secret_scan.track(key, kind="key")
    value = throwaway_postgres.django(SETUP.format(username=username, password=PASSWORD, key=key))["value"]
    server = GunicornServer(throwaway_postgres.url, workers=2, log_dir=live_log_dir).start()
    bearer = {"Authorization": f"Bearer {value}"}
    try:
        client = server.client()
        cookie = sign_in(client, username, PASSWORD)
        assert client.get("/api/users/me", headers=bearer).status == 200
        assert client.get("/profile/", headers={"Cookie": cookie}).status == 200

        throwaway_postgres.stop("immediate")
        try:
            for _ in range(4):  # both workers, each more than once
                for headers in (bearer, {"Rest-Api-Key": key}, {"Cookie": cookie}):
                    response = client.get("/api/users/me", headers=headers)
                    assert response.status == 503, response
                    assert response.headers["content-type"] == "application/json"
                    assert response.json()["error"] == "service_unavailable"
                    assert response.headers["retry-after"]
                health = client.get("/healthz")
                assert health.status == 503 and health.json()["status"] == "unavailable"
                page = client.get("/profile/", headers={"Cookie": cookie})
                assert page.status == 503, page
                assert "Temporarily unavailable" in page.text
                tokens_page = client.get("/profile/integrations/authorizations/", headers={"Cookie": cookie})
                assert tokens_page.status == 503
                # A forged token needs no database to be refused: still a 401, never a success.
                forged = "Bearer " + value[:-1] + ("x" if value[-1] != "x" else "y")
                assert client.get("/api/users/me", headers={"Authorization": forged}).status == 401
            # Signing in cannot succeed without the database: a 503 page, not a crash and not a session.
            signing_in = post_sign_in(client, username, PASSWORD)
            assert signing_in.status == 503, signing_in
            assert "sessionid" not in signing_in.headers.get("set-cookie", "")
        finally:
            throwaway_postgres.start()

        # No restart: the same processes reconnect once the database answers.
        assert wait_for(lambda: client.get("/healthz").status == 200)
        assert {client.get("/api/users/me", headers=bearer).status for _ in range(4)} == {200}
        assert client.get("/profile/", headers={"Cookie": cookie}).status == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()


REFUSE_USAGE = {
    "sqlite": [
        "CREATE TRIGGER test_refuse_usage BEFORE INSERT ON tokens_usagerecord "
        "BEGIN SELECT RAISE(ABORT, 'usage writes are failing'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION test_refuse_usage() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'usage writes are failing'; END $$",
        "CREATE TRIGGER test_refuse_usage BEFORE INSERT ON tokens_usagerecord "
        "FOR EACH ROW EXECUTE FUNCTION test_refuse_usage()",
    ],
}
ALLOW_USAGE = {
    "sqlite": ["DROP TRIGGER IF EXISTS test_refuse_usage"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS test_refuse_usage ON tokens_usagerecord",
        "DROP FUNCTION IF EXISTS test_refuse_usage()",
    ],
}


def _run(statements):
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def test_a_failing_usage_write_never_turns_a_refused_request_into_an_accepted_one(main_server, user, issue):
    good, good_value = issue(user, name="good")
    revoked, revoked_value = issue(user, name="revoked")
    revoked.revoke(actor=user)
    client = main_server.client()

    _run(REFUSE_USAGE[connection.vendor])
    try:
        for _ in range(4):
            refused = client.get("/api/users/me", headers={"Authorization": f"Bearer {revoked_value}"})
            assert refused.status == 401 and "revoked" in refused.json()["detail"]
            unrecorded = client.get("/api/tokens", headers={"Authorization": f"Bearer {good_value}"})
            # Served only if recorded: an accepted request whose record cannot be written is not answered.
            assert unrecorded.status == 503, unrecorded
            assert unrecorded.json()["error"] == "service_unavailable"
            assert "results" not in unrecorded.json()
    finally:
        _run(ALLOW_USAGE[connection.vendor])

    assert UsageRecord.objects.count() == 0
    assert usage_totals([Token.objects.get(pk=good.pk)])[0].request_count == 0
    assert client.get("/api/users/me", headers={"Authorization": f"Bearer {good_value}"}).status == 200
    assert usage_totals([Token.objects.get(pk=good.pk)])[0].request_count == 1
