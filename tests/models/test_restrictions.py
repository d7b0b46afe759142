"""tokens/models/restrictions.py: access, permissions and allowed addresses, and changing them."""

import pytest
from django.core.exceptions import ValidationError

from tokens.models import (
    TokenEvent,
)
from tokens.models.restrictions import address_allowed, clean_allowed_ips

pytestmark = pytest.mark.django_db


def test_existing_and_new_tokens_default_to_full_access_from_anywhere(user, issue):
    token, _value = issue(user)
    assert (token.access, token.permissions, token.allowed_ips, token.is_restricted) == (
        "read_write",
        None,
        [],
        False,
    )


def test_allowed_addresses_are_normalised_and_deduplicated():
    assert clean_allowed_ips(
        [" 192.0.2.1 ", "192.0.2.1/32", "2001:DB8:0::1", "2001:db8::/32", "10.0.0.0/8"]
    ) == ["192.0.2.1", "2001:db8::1", "2001:db8::/32", "10.0.0.0/8"]
    assert clean_allowed_ips([f"10.0.0.{i}" for i in range(50)]) == [f"10.0.0.{i}" for i in range(50)]


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "10.0.0.256",
        "10.0.0.1/33",
        "10.0.0.1/8",
        "fe80::1%eth0",
        "١٢٣.1.1.1",
        "10.0.0.1\x00",
        "10.0.0.1\u202e",
        "\ud800",
        "x" * 10_000,
        3,
        None,
        "2001:db8::/129",
    ],
)
def test_anything_but_an_address_or_network_is_refused(entry):
    with pytest.raises(ValidationError) as error:
        clean_allowed_ips([entry])
    assert "allowed_ips" in error.value.message_dict


@pytest.mark.parametrize(
    "allowed, address, expected",
    [
        (["192.0.2.0/24"], "192.0.2.200", True),
        (["192.0.2.0/24"], "192.0.3.1", False),
        (["2001:db8::/32"], "2001:db8:1::5", True),
        (["2001:db8::/32"], "2001:db9::5", False),
        (["192.0.2.7"], "::ffff:192.0.2.7", True),
        (["192.0.2.7"], None, False),
        ([], "198.51.100.1", True),
    ],
)
def test_an_address_is_allowed_only_inside_the_list(allowed, address, expected):
    assert address_allowed(allowed, address) is expected


def test_set_restrictions_changes_everything_or_nothing_and_records_one_event_each(user, other_user, issue):
    token, _value = issue(user)
    with pytest.raises(ValidationError) as error:
        token.set_restrictions(
            access="read", allowed_ips=["nowhere"], permissions=["auth.view_user"], actor=user
        )
    assert set(error.value.message_dict) == {"allowed_ips", "permissions"}
    token.refresh_from_db()
    assert (token.access, token.permissions, token.allowed_ips) == ("read_write", None, [])
    assert token.set_restrictions(access="read", allowed_ips=["192.0.2.1"], actor=other_user) == [
        "access",
        "allowed_ips",
    ]
    assert token.set_restrictions(access="read", actor=user) == []
    events = TokenEvent.objects.filter(token=token).exclude(kind="created")
    assert sorted((e.kind, e.actor.username) for e in events) == [
        ("access_changed", "bob"),
        ("addresses_changed", "bob"),
    ]
