"""The Authorizations pages cost the same whatever the number of tokens and of usage records.

A user with a thousand tokens, or a token used a hundred thousand times, gets the same number of
queries as a user with one token used once, and no query reads the raw usage records beyond the
rows it shows (checked on the database's own query plan, not with a timer).
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tokens.models import Token, UsageRecord
from tokens.usage.summarise import summarise

from .helpers import bearer

pytestmark = pytest.mark.django_db

LIST = reverse("tokens:list")
MANY_TOKENS = 1_000
MANY_RECORDS = 100_000


def _page_queries(client, url):
    """GET *url* and return (response, the SQL of every query it made)."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return response, [query["sql"] for query in queries]


def _load_usage(tokens, per_token):
    """Give each of *tokens* *per_token* raw usage records over the last months, from a few dozen addresses.

    One executemany of plain rows: building 100,000 model instances would take longer than the test.
    """
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    rows = [
        (
            token.pk,
            token.user_id,
            adapt(now - timedelta(seconds=i * 97)),
            i % 10 != 0,
            200 if i % 10 else 401,
            f"192.0.2.{i % 40}",
        )
        for token in tokens
        for i in range(per_token)
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO tokens_usagerecord"
            " (token_id, user_id, at, accepted, status, ip, method, path, user_agent, duration_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'GET', '/api/users/me', 'scaling-test', 1.5)",
            rows,
        )
        # Planner statistics, as a production database gathers them.
        cursor.execute("ANALYZE")


def _empty(table):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {connection.ops.quote_name(table)})")
        return cursor.fetchone()[0]


def _full_scans_of_usage_records(sql):
    """Return the plan lines of *sql* that read tokens_usagerecord whole (a scan rather than a search)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN " + sql)
            lines = [row[0] for row in cursor.fetchall()]
            scans = [line for line in lines if "Seq Scan on tokens_usagerecord" in line]
            # A day partition still empty (the days ahead) is "scanned" at no cost: not a read of records.
            return [line for line in scans if not _empty(line.split("Seq Scan on ")[1].split()[0])]
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        lines = [row[-1] for row in cursor.fetchall()]
        return [line for line in lines if line.startswith("SCAN tokens_usagerecord")]


def test_the_token_list_and_its_filters_make_the_same_queries_for_two_tokens_and_for_a_thousand(
    client, user, issue
):
    urls = [LIST, f"{LIST}?status=active", f"{LIST}?status=expired", f"{LIST}?status=revoked&page=2"]
    _first, value = issue(user, name="token 0")
    client.get("/api/users/me", **bearer(value))
    gone, _value = issue(user, name="token 1")
    gone.revoke(actor=user)
    late, _value = issue(user, name="token 2")
    Token.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(days=1))
    client.force_login(user)
    client.get(LIST)
    few = [len(_page_queries(client, url)[1]) for url in urls]

    for n in range(3, MANY_TOKENS):
        issue(user, name=f"token {n}")
    now = timezone.now()
    Token.objects.filter(user=user, name__endswith="7").update(revoked_at=now, revoked_by=user)
    Token.objects.filter(user=user, name__endswith="3").update(expires_at=now - timedelta(days=1))
    pages = [_page_queries(client, url) for url in urls]

    assert [len(sql) for _response, sql in pages] == few
    html = pages[0][0].content.decode()
    assert f"token {MANY_TOKENS - 1}" in html  # newest first
    assert "token 0" not in html  # on a later page (no other name starts with it)


def test_the_token_page_costs_the_same_queries_for_one_request_and_a_hundred_thousand_without_scanning_them(
    client, user, other_user, issue
):
    token, value = issue(user, name="busy")
    assert client.get("/api/users/me", **bearer(value)).status_code == 200
    client.force_login(user)
    url = reverse("tokens:detail", args=[token.pk])
    client.get(url)
    response, few = _page_queries(client, url)
    assert "/api/users/me" in response.content.decode()

    # Other users' tokens have records too, so the planner's statistics look like a real site's.
    others = [issue(other_user, name=f"other {n}")[0] for n in range(50)]
    _load_usage(others, MANY_RECORDS // 500)
    _load_usage([token], MANY_RECORDS)
    summarise()  # as the summariser after responses and from cron would have
    client.get("/api/users/me", **bearer(value))  # one more through the middleware: a tail past the load
    _response, many = _page_queries(client, url)
    # A page deep in the history ("older" requests) is keyset-paginated: no offset over the records.
    month_ago = timezone.now() - timedelta(days=30)
    middle = UsageRecord.objects.filter(token=token, at__lte=month_ago).order_by("-at").first()
    _response, older = _page_queries(client, f"{url}?before={middle.pk}")

    assert len(many) == len(few), "\n".join(many)
    usage_queries = [sql for sql in many + older if "tokens_usagerecord" in sql]
    assert usage_queries, "the page shows recent requests"
    for sql in usage_queries:
        assert _full_scans_of_usage_records(sql) == [], sql
