"""The usage store's one write: a record per request, deleted with its credential or owner."""

import pytest
from django.db import connection

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
