"""tokens/uses.py: the Use an entry reads once, and what the credential checks give their callers.

How each entry answers and records is tested with the entry: tests/test_middleware.py (the API),
tests/test_gateway.py (/forward-auth), tests/test_introspect.py, tests/identity/test_scim.py and
tests/test_metrics.py.
"""

import pytest
from django.test import RequestFactory

from tokens.auth import authenticate
from tokens.constants import Method
from tokens.models import UsageRecord
from tokens.uses import Use

from .helpers import ALICE_KEY, bearer


def test_a_use_holds_what_the_request_says_about_its_sender():
    request = RequestFactory().post(
        "/api/tokens?page=2", REMOTE_ADDR="198.51.100.4", HTTP_USER_AGENT="deploy-bot/2"
    )
    use = Use.of(request, started=1.5)
    assert use == Use(
        method="POST", path="/api/tokens", ip="198.51.100.4", user_agent="deploy-bot/2", started=1.5
    )


def test_behind_a_trusted_proxy_the_use_holds_the_client_it_names(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    request = RequestFactory().get("/forward-auth", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.9")
    use = Use.of(request, entry="forward_auth", method="DELETE", path="/orders/42")
    assert (use.method, use.path, use.ip, use.user_agent, use.entry) == (
        "DELETE",
        "/orders/42",
        "192.0.2.9",
        None,
        "forward_auth",
    )


def test_the_method_values_are_the_words_of_answers_logs_and_metrics():
    # Stored, logged, answered and used as metric labels: these strings never change.
    assert Method.values == ["bearer", "legacy_key", "session"]


@pytest.mark.django_db
def test_a_bearer_token_authentication_names_the_token_and_no_key(issued):
    token, value = issued
    credential = authenticate(RequestFactory().get("/api/users/me", **bearer(value)))
    assert (credential.method, credential.token_id, credential.legacy_key_id) == (
        Method.BEARER,
        token.pk,
        None,
    )


@pytest.mark.django_db
def test_a_legacy_key_authentication_names_the_key_and_no_token(alice_key):
    credential = authenticate(RequestFactory().get("/api/users/me", HTTP_REST_API_KEY=ALICE_KEY))
    assert (credential.method, credential.token_id, credential.legacy_key_id) == (
        Method.LEGACY_KEY,
        None,
        alice_key.pk,
    )


@pytest.mark.django_db
def test_the_use_record_holds_the_address_and_agent_the_entry_read(client, issued):
    _token, value = issued
    client.get("/api/users/me", REMOTE_ADDR="203.0.113.40", HTTP_USER_AGENT="cron/1", **bearer(value))
    record = UsageRecord.objects.get()
    assert (record.method, record.path, record.ip, record.user_agent) == (
        "GET",
        "/api/users/me",
        "203.0.113.40",
        "cron/1",
    )
