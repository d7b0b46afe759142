"""The usage store's one write: a record per request, deleted with its credential or owner."""

import pytest
from django.db import connection, connections, transaction

from tests.helpers import bearer
from tokens.constants import USAGE_DATABASE
from tokens.models import LegacyApiKey, UsageRecord

from .helpers import record_use

pytestmark = pytest.mark.django_db


def test_deleting_a_user_deletes_the_records_of_their_tokens_and_keys_and_no_one_elses(
    user, other_user, issue
):
    token, _ = issue(user)
    kept, _ = issue(other_user, name="someone else's")
    key, _ = LegacyApiKey.objects.import_key(user=user, key="legacy-" + "k" * 30)
    for credential in (token, kept, key):
        record_use(credential)
    user.delete()
    assert list(UsageRecord.objects.values_list("token_id", "legacy_key_id")) == [(kept.pk, None)]


@pytest.mark.django_db(transaction=True)
def test_a_usage_record_leaves_every_later_commit_durable(user, issue):
    token, _ = issue(user)
    record_use(token)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 2  # FULL
        else:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_a_request_records_through_the_usage_connection_which_alone_waits_for_no_disk(
    client, user, issue
):
    if connection.vendor != "sqlite":
        assert USAGE_DATABASE not in connections  # PostgreSQL: the statement's own asynchronous commit
        return
    token, value = issue(user)
    client.get("/api/users/me", **bearer(value))  # the first use: marked and recorded in one transaction
    usage = connections[USAGE_DATABASE]
    usage.close()
    assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert usage.connection is not None  # opened by the second request's record
    usage.close_if_unusable_or_obsolete()  # what the end of every request does: kept, like the main one
    assert usage.connection is not None
    with usage.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 1  # NORMAL
    assert usage.settings_dict["NAME"] == connection.settings_dict["NAME"]
    assert UsageRecord.objects.filter(token=token).count() == 2  # seen at once by the main connection


def test_inside_a_transaction_a_record_is_part_of_it(user, issue):
    # pytest-django's transaction: the record is written on the main connection, with the transaction's
    # durability, and rolled back with it (the usage connection would have committed it on its own).
    token, _ = issue(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        record_use(token)
        assert UsageRecord.objects.filter(token=token).count() == 1
        raise RuntimeError
    assert not UsageRecord.objects.filter(token=token).exists()
