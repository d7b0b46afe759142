"""/metrics in-process: who may read it, and what one request adds to the counts (tokens/metrics.py)."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import bearer
from tests.usage.helpers import record_use
from tokens.models import Token, UsageRecord
from tokens.usage.summarise import summarise


def samples(client, **headers):
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def api_count(values, outcome, credential="bearer", entry="api"):
    labels = (("credential", credential), ("entry", entry), ("outcome", outcome))
    return values.get(("portal_api_requests_total", labels), 0)


@pytest.fixture
def monitor(make_user, issue):
    """A token whose owner may read the metrics."""
    owner = make_user("prometheus")
    owner.user_permissions.add(Permission.objects.get(codename="view_metrics"))
    return issue(owner, name="scraper")[1]


def test_metrics_need_an_allowed_address_or_a_token_allowed_to_read_them(client, settings, issued, monitor):
    settings.METRICS_ALLOWED_IPS = ["192.0.2.0/24"]
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    lacking = client.get("/metrics", **bearer(issued[1]))
    assert lacking.status_code == 403
    assert b"portal_" not in lacking.content
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {monitor}").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200


def test_a_token_narrowed_away_from_view_metrics_cannot_read_them(client, make_user, issue):
    owner = make_user("ops")
    for codename in ("view_metrics", "view_user"):
        owner.user_permissions.add(Permission.objects.get(codename=codename))
    _token, narrowed = issue(owner, name="narrow", permissions=["auth.view_user"])
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {narrowed}").status_code == 403


def test_no_address_is_allowed_when_the_list_is_empty(client, settings):
    settings.METRICS_ALLOWED_IPS = []
    assert client.get("/metrics").status_code == 401


def test_switched_off_metrics_count_nothing_and_answer_404(client, settings, issued, monitor):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    before = samples(client)
    settings.METRICS_ENABLED = False
    assert client.get("/api/users/me", HTTP_AUTHORIZATION=f"Bearer {issued[1]}").status_code == 200
    assert client.get("/metrics").status_code == 404
    settings.METRICS_ENABLED = True
    assert api_count(samples(client), "accepted") == api_count(before, "accepted")


@pytest.mark.parametrize("outcome", ["revoked", "expired", "deactivated", "rotated"])
def test_each_refusal_is_counted_under_its_reason(client, settings, user, issue, outcome):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    token, value = issue(user)
    if outcome == "revoked":
        token.revoke(actor=user)
    elif outcome == "expired":
        Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif outcome == "deactivated":
        user.is_active = False
        user.save()
    else:
        token.rotate(overlap=timedelta(0), actor=user)
    before = samples(client)
    assert client.get("/api/users/me", HTTP_AUTHORIZATION=f"Bearer {value}").status_code == 401
    after = samples(client)
    assert api_count(after, outcome) == api_count(before, outcome) + 1
    assert api_count(after, "accepted") == api_count(before, "accepted")


def test_the_usage_store_lag_counts_the_records_the_summaries_do_not_hold(client, settings, issued):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    for _ in range(3):
        client.get("/api/users/me", HTTP_AUTHORIZATION=f"Bearer {issued[1]}")
    values = samples(client)
    assert values[("portal_usage_unsummarised_records", ())] == 3
    assert values[("portal_usage_unsummarised_oldest_seconds", ())] >= 0
    summarise()
    values = samples(client)
    assert values[("portal_usage_unsummarised_records", ())] == 0
    assert values[("portal_usage_unsummarised_oldest_seconds", ())] == 0


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plans; PostgreSQL: make bench")
def test_the_usage_store_lag_reads_only_the_records_above_the_watermark(user, issue):
    # A scrape must not read every record ever kept: with a million of them, counting the backlog along
    # the (at) index made /metrics take 100 ms on SQLite.
    token, _ = issue(user)
    for _ in range(3):
        record_use(token)
    summarise()
    record_use(token)
    with CaptureQueriesContext(connection) as queries:
        assert UsageRecord.objects.lag()[0] == 1
    with connection.cursor() as cursor:
        for query in queries:
            plan = " / ".join(
                row[-1] for row in cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}").fetchall()
            )
            assert "SCAN tokens_usagerecord" not in plan, (query["sql"], plan)
