"""The exact reads: summaries plus the records not summarised yet, as of one watermark."""

import re
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tokens.models import DailyUsage, Token, UsageRecord
from tokens.usage.read import read_exactly, usage_totals
from tokens.usage.summarise import summarise

from .helpers import record_use, shown_on_pages

pytestmark = pytest.mark.django_db


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plans; PostgreSQL: make bench")
def test_the_readers_find_the_tail_by_the_watermark_not_along_the_credentials_history(user, issue):
    """Each tail query is a primary-key range above the watermark, whatever else narrows it.

    Walking the credential's (token, at) index instead reads every record it ever had: on a token
    with a million records that made its page five times slower (docs/performance.md, session 4).
    SQLite without statistics, as a portal's database usually is, prefers that index, so a few
    records show it; on PostgreSQL the choice depends on the table's size and ``make bench`` shows it.
    """
    token, _ = issue(user)
    for days in range(5):
        record_use(token, at=timezone.now() - timedelta(days=days))
    summarise()
    record_use(token, ip="192.0.2.7")
    with CaptureQueriesContext(connection) as queries:
        shown = shown_on_pages(token)
        all_tokens = UsageRecord.objects.unsummarised(
            token__isnull=False, at__gte=timezone.now() - timedelta(1)
        )
        assert DailyUsage.objects.series(tail=all_tokens)[-1][1:] == (
            2,
            0,
        )  # today: one summarised, one in the tail
    assert shown[0] == 6 and shown[4] == 2  # exact: 5 summarised + 1 in the tail, two addresses
    tails = [q["sql"] for q in queries if re.search(r'\bFROM "?tokens_usagerecord"? WHERE', q["sql"])]
    assert len(tails) == 4  # usage_totals, series, client_addresses; series of all tokens
    with connection.cursor() as cursor:
        for sql in tails:
            plan = " / ".join(row[-1] for row in cursor.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
            assert "SEARCH tokens_usagerecord USING INTEGER PRIMARY KEY (rowid>?)" in plan, (sql, plan)


def test_counters_read_from_a_stale_instance_are_still_exact(user, issue):
    token, _ = issue(user)
    stale = Token.objects.get(pk=token.pk)  # loaded before any use, as a page may hold it
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.5"):
        record_use(token, ip=ip)
    summarise()  # the summaries now hold all three; the tail is empty
    record_use(token, ip="192.0.2.6")
    usage_totals([stale])
    assert (stale.request_count, stale.last_used_ip) == (4, "192.0.2.6")
    usage_totals([stale])  # reading again sets, never adds
    assert stale.request_count == 4


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_a_batch_summarised_in_the_middle_of_a_read_is_neither_missed_nor_counted_twice(user, issue):
    token, _ = issue(user)
    for _ in range(3):
        record_use(token)
    batches = []

    def read():
        tail = UsageRecord.objects.unsummarised(token=token)
        if not batches:  # another process commits a batch between this page's statements
            batches.append(summarise())
        today = DailyUsage.objects.filter(token=token).series(tail=tail)[-1]
        return today[1], usage_totals([Token.objects.get(pk=token.pk)])[0].request_count

    assert read_exactly(read) == (3, 3)
    assert batches == [3]


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
@pytest.mark.django_db(transaction=True)
def test_when_summarisers_move_the_watermark_under_every_read_the_answer_stays_exact(user, issue):
    """PostgreSQL reads again, and the last attempt holds the watermark; SQLite reads one snapshot."""
    token, _ = issue(user)
    for _ in range(6):
        record_use(token)
    ids = sorted(UsageRecord.objects.values_list("pk", flat=True))
    start = UsageRecord.objects.summarised_through()
    reads, marks = [], []

    def summarise_elsewhere():
        """One batch of one record by another connection, as on another node; its thread is returned."""

        def run():
            try:
                summarise(batch_size=1, max_batches=1)
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(timeout=1)  # held: the batch passes the row by (PostgreSQL)
        return thread

    def read():
        reads.append(summarise_elsewhere())
        marks.append(UsageRecord.objects.summarised_through())
        today = DailyUsage.objects.filter(token=token).series(
            tail=UsageRecord.objects.unsummarised(token=token)
        )
        return today[-1][1], usage_totals([Token.objects.get(pk=token.pk)])[0].request_count

    try:
        assert read_exactly(read, attempts=3) == (6, 6)
    finally:
        for thread in reads:
            thread.join(timeout=30)
    if connection.vendor == "sqlite":
        # The batch committed during the read without waiting, and the read did not see it.
        assert len(reads) == 1 and marks == [start]
        assert UsageRecord.objects.summarised_through() == ids[0]
    else:
        assert len(reads) == 4 and marks[:3] == ids[:3]  # three reads moved under, the fourth held it
        assert marks[3] == ids[2] and UsageRecord.objects.summarised_through() in ids[2:4]


def test_an_address_is_new_until_a_record_or_the_summary_holds_it(user, issue):
    token, _ = issue(user)
    assert UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9")
    record_use(token, ip="192.0.2.9")
    assert not UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9")
    newest = UsageRecord.objects.latest("pk").pk
    assert UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9", before_id=newest)
    summarise()
    assert not UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9", before_id=newest + 1)
    assert UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.10")
