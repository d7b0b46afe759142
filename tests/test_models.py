"""Models: statuses, querysets, the policy's rules, events, and the usage summaries (summary + tail)."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from tokens.models import ClientAddress, DailyUsage, ExpirationPolicy, Token, TokenEvent, UsageRecord
from tokens.models.usage import client_addresses, usage_totals

pytestmark = pytest.mark.django_db


def test_the_policy_starts_with_the_documented_defaults(policy):
    assert policy.default_lifetime == timedelta(days=30)
    assert policy.minimum_lifetime == timedelta(minutes=5)
    assert policy.maximum_lifetime == timedelta(days=365)
    assert policy.no_expiry_allowed_for == "nobody"
    assert policy.presets == ["1h", "1d", "7d", "30d", "90d", "1y"]
    assert policy.legacy_keys_accepted and policy.legacy_sunset_at is None
    assert policy.usage_retention_days == 90 and policy.max_active_tokens is None
    assert not policy.bearer_can_create_tokens


def test_there_is_only_ever_one_policy_row(policy):
    with pytest.raises(IntegrityError), transaction.atomic():
        ExpirationPolicy.objects.create(pk=2)
    assert ExpirationPolicy.load().pk == 1


@pytest.mark.parametrize("changes, field", [
    ({"minimum_lifetime": timedelta(days=10), "maximum_lifetime": timedelta(days=5)}, "maximum_lifetime"),
    ({"default_lifetime": timedelta(days=400)}, "default_lifetime"),
    ({"minimum_lifetime": timedelta(0)}, "minimum_lifetime"),
    ({"presets": ["1h", "2w"]}, "presets"),
    ({"presets": "1h"}, "presets"),
    ({"maximum_lifetime": timedelta(days=60), "default_lifetime": timedelta(days=30)}, "presets"),
    ({"legacy_sunset_at": timezone.now() - timedelta(days=1)}, "legacy_sunset_at"),
])
def test_the_policy_refuses_inconsistent_settings(policy, changes, field):
    for name, value in changes.items():
        setattr(policy, name, value)
    with pytest.raises(ValidationError) as error:
        policy.full_clean()
    assert field in error.value.message_dict


def test_no_expiry_can_be_allowed_for_staff_only(policy, user, staff_user):
    policy.no_expiry_allowed_for = ExpirationPolicy.NoExpiry.STAFF
    assert policy.allows_no_expiry(staff_user) and not policy.allows_no_expiry(user)
    policy.check_expiry(staff_user, None)
    with pytest.raises(ValidationError):
        policy.check_expiry(user, None)


def test_issue_enforces_the_policy_bounds(user, policy):
    now = timezone.now()
    for expires_at in (now + timedelta(minutes=1), now + timedelta(days=366), now - timedelta(days=1)):
        with pytest.raises(ValidationError) as error:
            Token.objects.issue(user=user, name="x", expires_at=expires_at)
        assert "expires_at" in error.value.message_dict
    assert not Token.objects.exists()


def test_issue_stores_no_plaintext_and_str_is_the_name(user, issue):
    token, value = issue(user, name="deploy")
    row = Token.objects.filter(pk=token.pk).values().get()
    assert value not in repr(row)
    assert value[len("bpt_") + 12:-8] not in repr(row)  # not even the secret part
    assert str(token) == "deploy" and value not in repr(token)
    assert TokenEvent.objects.filter(token=token, kind="created").count() == 1


def test_a_reused_nonce_returns_the_first_token_and_creates_nothing(user):
    expires = timezone.now() + timedelta(days=1)
    first, _ = Token.objects.issue(user=user, name="a", expires_at=expires, nonce="n1")
    with pytest.raises(Token.AlreadyIssued) as again:
        Token.objects.issue(user=user, name="b", expires_at=expires, nonce="n1")
    assert again.value.token == first and Token.objects.count() == 1


def test_status_and_status_filters(user, issue):
    active, _ = issue(user, name="active")
    expired, _ = issue(user, name="expired")
    revoked, _ = issue(user, name="revoked")
    Token.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    revoked.revoke(actor=user)
    assert [t.status for t in Token.objects.order_by("pk")] == ["active", "expired", "revoked"]
    for status, token in (("active", active), ("expired", expired), ("revoked", revoked)):
        assert list(Token.objects.with_status(status)) == [token]


def test_exceeding_finds_active_tokens_longer_than_a_new_maximum(user, issue, policy):
    short, _ = issue(user, name="short", days=7)
    long, _ = issue(user, name="long", days=300)
    policy.no_expiry_allowed_for = "everyone"
    policy.save()
    forever, _ = issue(user, name="forever", days=None)
    assert set(Token.objects.exceeding(timedelta(days=30))) == {long, forever}
    long.shorten(timezone.now() + timedelta(days=30), actor=user)
    assert set(Token.objects.exceeding(timedelta(days=30))) == {forever}
    assert TokenEvent.objects.filter(token=long, kind="shortened").exists()


def test_expired_events_are_written_once(user, issue):
    token, _ = issue(user)
    Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    Token.objects.record_expiries()
    Token.objects.record_expiries()
    assert TokenEvent.objects.filter(token=token, kind="expired").count() == 1


def _record(token, *, accepted=True, ip="192.0.2.1", at=None, agent="test"):
    UsageRecord.objects.record(token_id=token.pk, user_id=token.user_id, at=at or timezone.now(), accepted=accepted,
                               method="GET", path="/api/users/me", status=200 if accepted else 401, ip=ip,
                               user_agent=agent, duration_ms=1.0)


def _shown(token):
    """What the pages show for *token*: count, last use, 30 days, addresses (summary + unsummarised tail)."""
    token = Token.objects.get(pk=token.pk)
    usage_totals([token])
    records = UsageRecord.objects.filter(token=token)
    count, addresses = client_addresses(ClientAddress.objects.filter(token=token), records, limit=10)
    return (
        token.request_count, token.last_used_ip, token.last_used_user_agent,
        token.daily_usage.series(records=records),
        count, sorted((a.ip, a.requests, a.last_user_agent) for a in addresses),
    )


def test_counts_days_and_addresses_are_exact_before_and_after_summarising(user, issue):
    token, _ = issue(user)
    yesterday = timezone.now() - timedelta(days=1)
    _record(token, at=yesterday)
    _record(token, ip="192.0.2.2")
    _record(token, ip="192.0.2.2", agent="client/2")
    _record(token, accepted=False)
    before = _shown(token)
    count, ip, agent, series, address_count, addresses = before
    assert (count, ip, agent) == (3, "192.0.2.2", "client/2")
    assert len(series) == 30
    assert series[-1][1:] == (2, 1) and series[-2][1:] == (1, 0) and series[0][1:] == (0, 0)
    assert address_count == 2 and addresses == [("192.0.2.1", 2, "test"), ("192.0.2.2", 2, "client/2")]
    assert Token.objects.get(pk=token.pk).request_count == 0  # nothing summarised yet: the tail did it

    assert UsageRecord.objects.summarise() == 4
    assert _shown(token) == before
    token.refresh_from_db()
    assert token.request_count == 3 and token.last_used_ip == "192.0.2.2"
    days = {d.day: (d.accepted, d.refused) for d in DailyUsage.objects.filter(token=token)}
    assert days == {yesterday.date(): (1, 0), timezone.now().date(): (2, 1)}
    assert UsageRecord.objects.summarise() == 0 and _shown(token) == before  # idempotent

    _record(token, ip="192.0.2.3")  # half summarised, half tail
    assert _shown(token)[0] == 4 and _shown(token)[4] == 3


def test_summarising_in_small_batches_counts_each_record_once(user, issue):
    token, _ = issue(user)
    for i in range(7):
        _record(token, ip=f"192.0.2.{i % 3}")
    before = _shown(token)
    assert UsageRecord.objects.summarise(batch_size=2, max_batches=1) == 2
    assert _shown(token) == before
    assert UsageRecord.objects.summarise(batch_size=2) == 5
    assert _shown(token) == before
    assert Token.objects.get(pk=token.pk).request_count == 7


def test_records_of_a_deleted_token_are_deleted_with_it_and_never_summarised(user, issue):
    token, _ = issue(user)
    other, _ = issue(user, name="other")
    _record(token)
    _record(other)
    Token.objects.filter(pk=token.pk).delete()
    assert not UsageRecord.objects.filter(token_id=token.pk).exists()
    # A request that raced the deletion left a record behind: the summariser skips it.
    _record(token)
    assert UsageRecord.objects.summarise() == 2  # read past, counted nowhere
    assert Token.objects.get(pk=other.pk).request_count == 1
    assert not DailyUsage.objects.filter(token_id=token.pk).exists()


def test_an_address_is_new_until_a_record_or_the_summary_holds_it(user, issue):
    token, _ = issue(user)
    assert UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9")
    _record(token, ip="192.0.2.9")
    assert not UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9")
    newest = UsageRecord.objects.latest("pk").pk
    assert UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9", before_id=newest)
    UsageRecord.objects.summarise()
    assert not UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.9", before_id=newest + 1)
    assert UsageRecord.objects.address_is_new(token_id=token.pk, ip="192.0.2.10")


def test_summaries_survive_pruning_the_raw_records(user, issue):
    token, _ = issue(user)
    _record(token)
    UsageRecord.objects.summarise()
    UsageRecord.objects.all().delete()
    token.refresh_from_db()
    assert token.request_count == 1 and DailyUsage.objects.get(token=token).accepted == 1
    assert _shown(token)[0] == 1


@pytest.mark.django_db(transaction=True)
def test_a_usage_record_leaves_every_later_commit_durable(user, issue):
    from django.db import connection

    token, _ = issue(user)
    _record(token)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 2  # FULL
        else:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"


def test_lifetime_limits_are_told_in_plain_words(user, policy):
    from tokens.models.policy import describe_lifetime

    assert [describe_lifetime(d) for d in (timedelta(days=365), timedelta(days=90), timedelta(hours=12),
                                           timedelta(minutes=5), timedelta(days=1, minutes=30))] == [
        "1 year", "90 days", "12 hours", "5 minutes", "1470 minutes"]
    with pytest.raises(ValidationError) as error:
        Token.objects.issue(user=user, name="x", expires_at=timezone.now() + timedelta(minutes=2))
    assert error.value.message_dict["expires_at"] == ["The shortest lifetime allowed is 5 minutes."]
