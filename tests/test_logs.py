"""Request ids and log lines (portal/middleware.py, portal/logs.py)."""

import json
import logging
import re

import pytest

from portal.logs import RequestContextFilter, json_formatter, logging_for

pytestmark = pytest.mark.django_db

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_every_response_has_a_request_id_and_an_untrusted_one_is_replaced(client, settings):
    settings.TRUSTED_PROXIES = []
    made = client.get("/healthz")
    assert GENERATED.fullmatch(made["X-Request-ID"])
    assert client.get("/healthz")["X-Request-ID"] != made["X-Request-ID"]
    # Anyone may send the header; only a trusted proxy is believed.
    offered = client.get("/healthz", HTTP_X_REQUEST_ID="chosen-by-the-client")
    assert GENERATED.fullmatch(offered["X-Request-ID"])


def test_a_trusted_proxy_request_id_is_kept_when_well_formed_and_short(client, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    kept = client.get("/healthz", HTTP_X_REQUEST_ID="lb-01:9f8e.7d_6-c")
    assert kept["X-Request-ID"] == "lb-01:9f8e.7d_6-c"
    longest = "lb-" + "7" * 197
    assert client.get("/healthz", HTTP_X_REQUEST_ID=longest)["X-Request-ID"] == longest
    for bad in (longest + "7", "has space", "semi;colon", "new\nline", "é"):
        assert GENERATED.fullmatch(client.get("/healthz", HTTP_X_REQUEST_ID=bad)["X-Request-ID"])


def test_a_refused_api_call_and_a_missing_page_carry_their_request_id_too(client, issued):
    assert GENERATED.fullmatch(client.get("/api/users/me")["X-Request-ID"])
    assert GENERATED.fullmatch(client.get("/no-such-page/")["X-Request-ID"])
    assert GENERATED.fullmatch(client.get("/forward-auth")["X-Request-ID"])


def _record(message, *args):
    return logging.LogRecord("tokens.test", logging.WARNING, __file__, 1, message, args, None)


def test_a_json_line_escapes_what_a_client_controls_and_carries_the_request(rf):
    request = rf.get('/api/"quoted"{"level":"forged"}', REMOTE_ADDR="203.0.113.9")
    request.META["portal.request_id"] = "req-1"
    request.META["portal.client_address"] = "203.0.113.9"
    record = _record("saw %s", 'a "quote"\nand a newline\x1b[31m')
    with logging_for(request):
        RequestContextFilter().filter(record)
    line = json_formatter().format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["message"] == 'saw a "quote"\nand a newline\x1b[31m'
    assert fields["path"] == '/api/"quoted"{"level":"forged"}'
    assert fields["level"] == "WARNING"
    assert fields["logger"] == "tokens.test"
    assert fields["request_id"] == "req-1"
    assert fields["client"] == "203.0.113.9"
    assert fields["method"] == "GET"
    assert fields["time"]


def test_a_line_outside_any_request_has_empty_request_fields():
    record = _record("summariser behind")
    RequestContextFilter().filter(record)
    fields = json.loads(json_formatter().format(record))
    assert (
        fields["request_id"] is None and fields["path"] is None and fields["message"] == "summariser behind"
    )
