"""The summariser: records folded into counters, daily totals and client addresses, each once."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tokens.models import DailyUsage, Token, UsageRecord
from tokens.usage.summarise import summarise

from .helpers import record_use, shown_on_pages

pytestmark = pytest.mark.django_db


@pytest.mark.clock
@pytest.mark.usefixtures("clear_of_midnight")
def test_counts_days_and_addresses_are_exact_before_and_after_summarising(user, issue):
    token, _ = issue(user)
    yesterday = timezone.now() - timedelta(days=1)
    record_use(token, at=yesterday)
    record_use(token, ip="192.0.2.2")
    record_use(token, ip="192.0.2.2", agent="client/2")
    record_use(token, accepted=False)
    before = shown_on_pages(token)
    count, ip, agent, series, address_count, addresses = before
    assert (count, ip, agent) == (3, "192.0.2.2", "client/2")
    assert len(series) == 30
    assert series[-1][1:] == (2, 1) and series[-2][1:] == (1, 0) and series[0][1:] == (0, 0)
    assert address_count == 2 and addresses == [("192.0.2.1", 2, "test"), ("192.0.2.2", 2, "client/2")]
    assert Token.objects.get(pk=token.pk).request_count == 0  # nothing summarised yet: the tail did it

    assert summarise() == 4
    assert shown_on_pages(token) == before
    token.refresh_from_db()
    assert token.request_count == 3 and token.last_used_ip == "192.0.2.2"
    days = {d.day: (d.accepted, d.refused) for d in DailyUsage.objects.filter(token=token)}
    assert days == {yesterday.date(): (1, 0), timezone.now().date(): (2, 1)}
    assert summarise() == 0 and shown_on_pages(token) == before  # idempotent

    record_use(token, ip="192.0.2.3")  # half summarised, half tail
    assert shown_on_pages(token)[0] == 4 and shown_on_pages(token)[4] == 3


def test_summarising_in_small_batches_counts_each_record_once(user, issue):
    token, _ = issue(user)
    for i in range(7):
        record_use(token, ip=f"192.0.2.{i % 3}")
    before = shown_on_pages(token)
    assert summarise(batch_size=2, max_batches=1) == 2
    assert shown_on_pages(token) == before
    assert summarise(batch_size=2) == 5
    assert shown_on_pages(token) == before
    assert Token.objects.get(pk=token.pk).request_count == 7


def test_summarising_reads_windows_of_ids_and_runs_of_missing_ids_do_not_stall_it(user, issue):
    token, _ = issue(user)
    for _ in range(12):
        record_use(token)
    ids = sorted(UsageRecord.objects.values_list("pk", flat=True))
    UsageRecord.objects.filter(pk__in=ids[2:10]).delete()  # ids that never committed, as after rollbacks
    assert summarise(batch_size=3, max_batches=1) == 2  # ids[0:3]: two records
    assert UsageRecord.objects.summarised_through() == ids[2]
    assert summarise(batch_size=3, max_batches=1) == 2  # skips to ids[10]
    assert UsageRecord.objects.summarised_through() == ids[11]
    assert summarise() == 0
    assert Token.objects.get(pk=token.pk).request_count == 4 == shown_on_pages(token)[0]


def test_records_of_a_deleted_token_are_deleted_with_it_and_never_summarised(user, issue):
    token, _ = issue(user)
    other, _ = issue(user, name="other")
    record_use(token)
    record_use(other)
    Token.objects.filter(pk=token.pk).delete()
    assert not UsageRecord.objects.filter(token_id=token.pk).exists()
    # A request that raced the deletion left a record behind: the summariser skips it.
    record_use(token)
    assert summarise() == 2  # read past, counted nowhere
    assert Token.objects.get(pk=other.pk).request_count == 1
    assert not DailyUsage.objects.filter(token_id=token.pk).exists()


def test_summaries_survive_pruning_the_raw_records(user, issue):
    token, _ = issue(user)
    record_use(token)
    summarise()
    UsageRecord.objects.all().delete()
    token.refresh_from_db()
    assert token.request_count == 1 and DailyUsage.objects.get(token=token).accepted == 1
    assert shown_on_pages(token)[0] == 1
