"""What operators see of a real gunicorn with several workers: /metrics, JSON log lines, request ids.

The server runs with ``LOG_FORMAT=json``, its metrics in a folder of the test's own (so the test sees that
several workers wrote to it), and 127.0.0.1 as a trusted proxy, so that ``X-Forwarded-For`` and
``X-Request-ID`` from this test are believed as a proxy's would be.
"""

import json
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests import secret_scan
from tests.helpers import PASSWORD
from tokens import credentials
from tokens.models import LegacyApiKey, Token

from .helpers import GunicornServer, database_url

pytestmark = pytest.mark.live

METRICS_ADDRESS = "192.0.2.10"  # METRICS_ALLOWED_IPS of the server; reached through X-Forwarded-For
LEGACY_KEY = "0a1b2c3d4e5f-operations-legacy-key"


@pytest.fixture(scope="module")
def metrics_folder(tmp_path_factory):
    """The server's PROMETHEUS_MULTIPROC_DIR, left open and holding an earlier run's file."""
    folder = tmp_path_factory.mktemp("metrics")
    folder.chmod(0o755)
    (folder / "counter_4242.db").write_bytes(b"not the counts of this run")
    return folder


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, live_log_dir, metrics_folder):
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    env = {
        "LOG_FORMAT": "json",
        "METRICS_ALLOWED_IPS": "192.0.2.0/28",
        "TRUSTED_PROXIES": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_folder),
    }
    server = GunicornServer(url, workers=3, log_dir=live_log_dir, env=env).start()
    yield server
    server.stop()


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


def scrape(server):
    """Return {(name, labels as a sorted tuple): value} of every sample /metrics answers."""
    response = server.client().get("/metrics", headers={"X-Forwarded-For": METRICS_ADDRESS})
    assert response.status == 200, response
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def grown(before, after, name):
    """Return {labels: increase} of the samples of *name* that grew between two scrapes."""
    return {
        labels: value - before.get((sample_name, labels), 0)
        for (sample_name, labels), value in after.items()
        if sample_name == name and value != before.get((sample_name, labels), 0)
    }


def api(entry, credential, outcome):
    return (("credential", credential), ("entry", entry), ("outcome", outcome))


def _issue(user, name, **extra):
    token, value = Token.objects.issue(
        user=user, name=name, expires_at=timezone.now() + timedelta(days=30), **extra
    )
    return token, value


def _csrf(client):
    page = client.get("/accounts/login/")
    cookie = re.search(r"csrftoken=([^;]+)", page.headers["set-cookie"]).group(1)
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return cookie, form_token


def test_metrics_add_up_every_worker_with_exact_counts_after_known_traffic(
    server, metrics_folder, make_user, policy
):
    alice = make_user("alice")
    _token, value = _issue(alice, "ci")
    revoked, revoked_value = _issue(alice, "old")
    revoked.revoke(actor=alice)
    expired, expired_value = _issue(alice, "expired")
    Token.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    _read_only, read_only_value = _issue(alice, "reader", access="read")
    _bound, bound_value = _issue(alice, "bound", allowed_ips=["198.51.100.0/24"])
    introspector = make_user("gateway")
    introspector.user_permissions.add(Permission.objects.get(codename="introspect_token"))
    _caller, caller_value = _issue(introspector, "introspect")
    LegacyApiKey.objects.import_key(user=alice, key=LEGACY_KEY)
    unknown_value, _parsed = credentials.generate()  # well formed and signed, never issued
    before = scrape(server)

    # Accepted bearer calls, six at a time so that several workers serve them.
    with ThreadPoolExecutor(6) as pool:
        statuses = list(
            pool.map(lambda _: server.client().get("/api/users/me", headers=bearer(value)).status, range(30))
        )
    assert statuses == [200] * 30
    client = server.client()
    expected_statuses = [
        (client.get("/api/users/me", headers=bearer("bpt_not-a-token")), 401),
        (client.get("/api/users/me", headers=bearer("bpt_not-a-token-either")), 401),
        (client.get("/api/users/me", headers=bearer(unknown_value)), 401),
        (client.get("/api/users/me", headers=bearer(revoked_value)), 401),
        (client.get("/api/users/me", headers=bearer(expired_value)), 401),
        (client.request("POST", "/api/tokens", headers=bearer(read_only_value), body={"name": "x"}), 403),
        (client.get("/api/users/me", headers=bearer(bound_value)), 403),
        (client.get("/api/users/me"), 401),
        (client.get("/api/users/me", headers={"Rest-Api-Key": LEGACY_KEY}), 200),
        (client.get("/api/users/me", headers={"Rest-Api-Key": LEGACY_KEY}), 200),
        (client.get("/forward-auth", headers=bearer(value)), 200),
        (client.get("/forward-auth", headers=bearer(unknown_value)), 401),
        (
            client.request(
                "POST",
                "/api/introspect",
                headers={**bearer(caller_value), "Content-Type": "application/x-www-form-urlencoded"},
                body=f"token={value}",
            ),
            200,
        ),
    ]
    for response, status in expected_statuses:
        assert response.status == status, response
    cookie, form_token = _csrf(client)
    for _ in range(2):
        failed = client.request(
            "POST",
            "/accounts/login/",
            headers={"Cookie": f"csrftoken={cookie}", "Content-Type": "application/x-www-form-urlencoded"},
            body=f"csrfmiddlewaretoken={form_token}&username=alice&password=wrong-{PASSWORD}",
        )
        assert failed.status == 200  # the form again, with its error
    after = scrape(server)

    assert grown(before, after, "portal_api_requests_total") == {
        api("api", "bearer", "accepted"): 31,  # 30 and the introspecting caller
        api("api", "bearer", "malformed"): 2,
        api("api", "bearer", "unknown"): 1,
        api("api", "bearer", "revoked"): 1,
        api("api", "bearer", "expired"): 1,
        api("api", "bearer", "insufficient_scope"): 1,
        api("api", "bearer", "address"): 1,
        api("api", "none", "missing"): 1,
        api("api", "legacy_key", "accepted"): 2,
        api("forward_auth", "bearer", "accepted"): 1,
        api("forward_auth", "bearer", "unknown"): 1,
        api("introspection", "bearer", "accepted"): 1,
    }
    assert grown(before, after, "portal_legacy_key_uses_total") == {(("outcome", "accepted"),): 2}
    assert grown(before, after, "portal_sign_in_failures_total") == {(("reason", "invalid"),): 2}
    checks = grown(before, after, "portal_credential_check_seconds_count")
    assert checks == {(("entry", "api"),): 41, (("entry", "forward_auth"),): 2}
    # Every check is below the largest bucket's bound and counted in +Inf.
    assert (
        grown(before, after, "portal_credential_check_seconds_bucket")[(("entry", "api"), ("le", "+Inf"))]
        == 41
    )
    # The usage store's lag is reported (the summariser runs every 500 records, so these wait).
    assert after[("portal_usage_unsummarised_records", ())] >= 38
    assert after[("portal_usage_unsummarised_oldest_seconds", ())] >= 0
    # gunicorn made the folder private and emptied it of the earlier run's file when it started.
    assert stat.S_IMODE(metrics_folder.stat().st_mode) == 0o700
    assert not (metrics_folder / "counter_4242.db").exists()
    # Several workers counted: each keeps its own file, and the scrape added them up.
    assert len({path.name.split("_")[-1] for path in metrics_folder.glob("counter_*.db")}) >= 2


def test_metrics_are_open_to_allowed_addresses_and_to_tokens_allowed_to_view_them(server, make_user, policy):
    alice = make_user("alice")
    _token, plain_value = _issue(alice, "ci")
    monitor = make_user("prometheus")
    monitor.user_permissions.add(Permission.objects.get(codename="view_metrics"))
    _scraper, scraper_value = _issue(monitor, "scraper")
    client = server.client()

    nobody = client.get("/metrics")
    assert nobody.status == 401
    assert nobody.headers["www-authenticate"].startswith("Bearer")
    assert b"portal_" not in nobody.body
    assert client.get("/metrics", headers=bearer("bpt_not-a-token")).status == 401
    lacking = client.get("/metrics", headers=bearer(plain_value))
    assert lacking.status == 403
    assert b"portal_" not in lacking.body
    # An address outside METRICS_ALLOWED_IPS, even said by a trusted proxy, is no way in.
    assert client.get("/metrics", headers={"X-Forwarded-For": "192.0.2.200"}).status == 401

    allowed = client.get("/metrics", headers=bearer(scraper_value))
    assert allowed.status == 200
    assert b"portal_api_requests_total" in allowed.body
    assert client.get("/metrics", headers={"X-Forwarded-For": METRICS_ADDRESS}).status == 200


def test_every_log_line_is_json_with_the_request_id_and_holds_no_secret(server, make_user, policy):
    alice = make_user("alice")
    _token, value = _issue(alice, "ci")
    client = server.client()

    kept = client.get("/api/users/me", headers={**bearer(value), "X-Request-ID": "edge-7f3a.b:c_9"})
    assert kept.status == 200
    assert kept.headers["x-request-id"] == "edge-7f3a.b:c_9"
    for offered in ("two words", "x" * 201, 'quote"and\\slash'):
        replaced = client.get("/healthz", headers={"X-Request-ID": offered})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    answer = client.get("/forward-auth", headers={**bearer(value), "X-Request-ID": "proxy-1"})
    assert answer.status == 200
    assert answer.headers["x-request-id"] == "proxy-1"
    # A reset link's token, a token in the query string, a hostile path and a refused Host header (which
    # Django logs from inside the request).
    client.get("/accounts/reset/MQ/cdg5xk-0123456789abcdef0123456789abcdef/")
    client.get(f"/api/users/me?token={value}")
    client.get("/api/%22%7D%0A%7B%22level%22:%22forged%22%7D", headers=bearer(value))
    disallowed = client.get("/healthz", headers={"Host": "evil.example", "X-Request-ID": "bad-host-1"})
    assert disallowed.status == 400

    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses: no text line, no broken line
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= record.keys()
    access = {r["request_id"]: r for r in records if r["logger"] == "gunicorn.access"}
    line = access["edge-7f3a.b:c_9"]
    assert line["method"] == "GET"
    assert line["path"] == "/api/users/me"
    assert line["status"] == 200
    assert line["user_id"] == alice.pk
    assert line["token_id"] == _token.pk
    assert line["client"] == "127.0.0.1"
    assert line["duration_ms"] >= 0
    assert access["proxy-1"]["path"] == "/forward-auth"
    # The application's own line about the refused host carries the request's id and path.
    app_lines = [r for r in records if r["request_id"] == "bad-host-1" and r["logger"].startswith("django")]
    assert app_lines and app_lines[0]["path"] == "/healthz"
    assert not any(r.get("level") == "forged" for r in records)

    text = "\n".join(lines)
    assert value not in text
    assert "0123456789abcdef0123456789abcdef" not in text
    assert "/accounts/reset/MQ/[redacted]/" in text
    assert "?token=" not in text  # paths are written without their query
    secret_scan.observe_log_file(server.log_path)
