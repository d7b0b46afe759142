"""Time a token's page with a thousand usage records and with a million (target: at most 1.5× as long).

Run by ``bench/bench.py`` after the load, on the same database (bench.bench sets Django up before it
imports this module). Two tokens of their own get their records straight from SQL (generated on the
server, three seconds apart, one in ten refused, from 40 addresses; on PostgreSQL into the day partitions
``prune_usage`` would have made ahead); the portal's own summariser then folds them into the per-day and
per-address summaries (timed: its throughput), and the planner's statistics are gathered, as a production
database would have them. Each page is requested in-process through Django's test client, signed in as the
owner, the four in turns: the newest requests, and an older page reached by the "older" link (keyset
pagination deep in the history).
"""

import os
import statistics
import time
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tokens.models import Token, UsageRecord
from tokens.usage import partitions as usage_partitions
from tokens.usage.summarise import summarise

FEW = 1_000
MANY = int(os.environ.get("BENCH_PAGE_RECORDS", 1_000_000))
TARGET = 1.5

_RECORD_COLUMNS = (
    "token_id, legacy_key_id, user_id, at, accepted, method, path, status, ip, user_agent, duration_ms"
)

_POSTGRESQL = [
    f"""INSERT INTO tokens_usagerecord ({_RECORD_COLUMNS})
        SELECT %(token)s, NULL, %(user)s, now() - i * interval '3 seconds', i %% 10 <> 0, 'GET',
               '/api/users/me', CASE WHEN i %% 10 <> 0 THEN 200 ELSE 401 END, ('192.0.2.' || (i %% 40))::inet,
               'bench-pages', 1.5
        FROM generate_series(%(first)s, %(last)s) AS i""",
]
_SQLITE = [
    f"""WITH RECURSIVE seq(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM seq WHERE i < :last)
        INSERT INTO tokens_usagerecord ({_RECORD_COLUMNS})
        SELECT :token, NULL, :user, strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (i * 3) || ' seconds'),
               i % 10 <> 0, 'GET', '/api/users/me', CASE WHEN i % 10 <> 0 THEN 200 ELSE 401 END,
               '192.0.2.' || (i % 40), 'bench-pages', 1.5
        FROM seq""",
]


def _make_days(last):
    """PostgreSQL: the day partitions of records 0 to *last*, as ``prune_usage`` would have made them."""
    if connection.vendor != "postgresql":
        return
    today = timezone.now().date()
    with connection.cursor() as cursor:
        for back in range(last * 3 // 86400 + 2):
            usage_partitions.create_day(cursor, today - timedelta(days=back))


def _load(token, first, last):
    """Give *token* records number *first* to *last* (record i is 3·i seconds old), then summarise them.

    Return the seconds the summariser took.
    """
    params = {"token": token.pk, "user": token.user_id, "first": first, "last": last}
    if connection.vendor == "postgresql":
        _make_days(last)
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in _POSTGRESQL:
                cursor.execute(statement, params)
    else:
        connection.ensure_connection()
        with transaction.atomic():
            for statement in _SQLITE:
                connection.connection.execute(statement, params)
    started = time.perf_counter()
    summarise()
    summarised = time.perf_counter() - started
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # What autovacuum would long have done to weeks of records (visibility map, statistics),
            # and the checkpoints they would have gone through: without one, the checkpointer writes
            # the load out while the page is timed.
            cursor.execute("VACUUM ANALYZE tokens_usagerecord")
            cursor.execute("CHECKPOINT")
        else:
            # The records' statistics only, for the pages timed here. A portal's own SQLite database has
            # none at all (nothing runs ANALYZE on it), so the other tables are left without, as there.
            # Statistics of the whole database taken here, while it held five tokens, misled SQLite's
            # planner in the benches that follow (a trust policy's live tokens read by scanning the
            # 100,000 tokens bench/operations.py adds: 50 ms an exchange).
            cursor.execute("ANALYZE tokens_usagerecord")
            # Weeks of records would have gone through many checkpoints; one transaction of a million
            # leaves them all in the write-ahead log, where every page read would look for them first.
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return summarised


def _time(pages, *, rounds=8, repeat=5):
    """Return {url: (median ms per GET, queries per GET)} for the (client, url) pairs in *pages*.

    The pages take turns, *repeat* GETs each per round, so a noisy moment on the shared machine
    falls on all of them alike.
    """
    queries, times = {}, {url: [] for _client, url in pages}
    for client, url in pages:
        for _ in range(5):
            assert client.get(url).status_code == 200
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        queries[url] = len(captured)  # now: the next request's request_started empties the query log
    for _ in range(rounds):
        for client, url in pages:
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(url)
                times[url].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
    return {url: (statistics.median(times[url]), queries[url]) for _client, url in pages}


def page_scaling():
    """Return the report lines: the token page's time with FEW and with MANY usage records.

    Two tokens in the same database, one with FEW records and one with MANY, their pages timed in
    turns: what differs is only how much the token was used, not the database, its partitions or the
    machine's moment.
    """
    expires_at = timezone.now() + timedelta(days=1)
    # The day partitions of the retention period, as prune_usage makes them whatever the traffic.
    _make_days(MANY - 1)
    pages = []
    load_seconds = summarise_seconds = 0.0
    for size in (FEW, MANY):
        user = get_user_model().objects.create_user(f"bench-pages-{size}")
        token, _value = Token.objects.issue(user=user, name="pages", expires_at=expires_at)
        started = time.perf_counter()
        summarise_seconds += _load(token, 0, size - 1)
        load_seconds += time.perf_counter() - started
        client = Client(SERVER_NAME="127.0.0.1")
        client.force_login(user)
        url = reverse("tokens:detail", args=[token.pk])
        # The record in the middle of the history: its "older" page seeks deep into the index.
        records = UsageRecord.objects.filter(token=token).order_by("-at", "-id").values_list("pk", flat=True)
        pages += [(client, url), (client, f"{url}?before={records[size // 2]}")]
    timed = _time(pages)

    lines = [
        "",
        f"Token page, in-process (Django's test client, signed in; median of 40 GETs, the four pages in "
        f"turns), a token with {FEW:,} and one with {MANY:,} usage records in the same database (loaded "
        f"and summarised in {load_seconds:.0f} s, of which the summariser {summarise_seconds:.1f} s: "
        f"{(FEW + MANY) / summarise_seconds:,.0f} records/s):",
        "",
        f"| token page | {FEW:,} records | {MANY:,} records | ratio | queries | target ≤ {TARGET:g}× |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for index, label in enumerate(("newest requests", "an older page, halfway back")):
        (few_ms, few_queries), (many_ms, many_queries) = timed[pages[index][1]], timed[pages[2 + index][1]]
        ratio = many_ms / few_ms
        lines.append(
            f"| {label} | {few_ms:.2f} ms | {many_ms:.2f} ms | {ratio:.2f}× "
            f"| {few_queries} → {many_queries} "
            f"| {'yes' if ratio <= TARGET else 'no'} |"
        )
    return lines
