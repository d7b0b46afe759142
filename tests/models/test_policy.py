"""tokens/models/policy.py: the site policy's defaults, its one row, its consistency rules and its words."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from tokens.models import (
    SitePolicy,
    Token,
)
from tokens.models.policy import describe_lifetime

pytestmark = pytest.mark.django_db


def test_the_policy_starts_with_the_documented_defaults(policy):
    assert policy.default_lifetime == timedelta(days=30)
    assert policy.minimum_lifetime == timedelta(minutes=5)
    assert policy.maximum_lifetime == timedelta(days=365)
    assert policy.no_expiry_allowed_for == "nobody"
    assert policy.presets == ["1h", "1d", "7d", "30d", "90d", "1y"]
    assert policy.security_level == "compatibility" and policy.legacy_sunset_at is None
    assert policy.usage_retention_days == 90 and policy.max_active_tokens is None
    assert not policy.bearer_can_create_tokens


def test_there_is_only_ever_one_policy_row(policy):
    with pytest.raises(IntegrityError), transaction.atomic():
        SitePolicy.objects.create(pk=2)
    assert SitePolicy.load().pk == 1


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"minimum_lifetime": timedelta(days=10), "maximum_lifetime": timedelta(days=5)}, "maximum_lifetime"),
        ({"default_lifetime": timedelta(days=400)}, "default_lifetime"),
        ({"minimum_lifetime": timedelta(0)}, "minimum_lifetime"),
        ({"presets": ["1h", "2w"]}, "presets"),
        ({"presets": "1h"}, "presets"),
        ({"maximum_lifetime": timedelta(days=60), "default_lifetime": timedelta(days=30)}, "presets"),
        ({"legacy_sunset_at": timezone.now() - timedelta(days=1)}, "legacy_sunset_at"),
    ],
)
def test_the_policy_refuses_inconsistent_settings(policy, changes, field):
    for name, value in changes.items():
        setattr(policy, name, value)
    with pytest.raises(ValidationError) as error:
        policy.full_clean()
    assert field in error.value.message_dict


def test_no_expiry_can_be_allowed_for_staff_only(policy, user, staff_user):
    policy.no_expiry_allowed_for = SitePolicy.NoExpiry.STAFF
    assert policy.allows_no_expiry(staff_user) and not policy.allows_no_expiry(user)
    policy.check_expiry(staff_user, None)
    with pytest.raises(ValidationError):
        policy.check_expiry(user, None)


def test_lifetime_limits_are_told_in_plain_words(user, policy):
    assert [
        describe_lifetime(d)
        for d in (
            timedelta(days=365),
            timedelta(days=90),
            timedelta(hours=12),
            timedelta(minutes=5),
            timedelta(days=1, minutes=30),
        )
    ] == ["1 year", "90 days", "12 hours", "5 minutes", "1470 minutes"]
    with pytest.raises(ValidationError) as error:
        Token.objects.issue(user=user, name="x", expires_at=timezone.now() + timedelta(minutes=2))
    assert error.value.message_dict["expires_at"] == ["The shortest lifetime allowed is 5 minutes."]
