"""tokens/http.py: the client address, believed from X-Forwarded-For behind a trusted proxy only."""

import pytest

from tokens.http import limited_address
from tokens.models import UsageRecord

from .helpers import bearer

pytestmark = pytest.mark.django_db


def test_the_client_ip_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(client, issued, settings):
    _token, value = issued
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    client.get("/api/users/me", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="1.2.3.4", **bearer(value))
    client.get(
        "/api/users/me", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 10.2.2.2", **bearer(value)
    )
    client.get("/api/users/me", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="evil", **bearer(value))
    assert list(UsageRecord.objects.order_by("pk").values_list("ip", flat=True)) == [
        "198.51.100.7",
        "1.2.3.4",
        "10.1.1.1",
    ]


def test_a_trusted_ipv4_proxy_seen_through_a_dual_stack_socket_is_still_trusted(client, issued, settings):
    _token, value = issued
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    # gunicorn bound to [::] sees an IPv4 proxy as ::ffff:10.0.0.5: its X-Forwarded-For is believed.
    client.get(
        "/api/users/me", REMOTE_ADDR="::ffff:10.0.0.5", HTTP_X_FORWARDED_FOR="1.2.3.4", **bearer(value)
    )
    # An IPv4-mapped hop is trusted too, and the chain is read past it.
    client.get(
        "/api/users/me",
        REMOTE_ADDR="10.0.0.5",
        HTTP_X_FORWARDED_FOR="5.6.7.8, ::ffff:10.2.2.2",
        **bearer(value),
    )
    # A mapped address outside the trusted networks is no proxy.
    client.get(
        "/api/users/me", REMOTE_ADDR="::ffff:198.51.100.7", HTTP_X_FORWARDED_FOR="1.2.3.4", **bearer(value)
    )
    assert list(UsageRecord.objects.order_by("pk").values_list("ip", flat=True)) == [
        "1.2.3.4",
        "5.6.7.8",
        "::ffff:198.51.100.7",
    ]


@pytest.mark.parametrize(
    ("address", "counted_as"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        (None, "unknown"),
        ("not an address", "unknown"),
    ],
)
def test_per_address_limits_count_an_ipv6_client_by_its_64(address, counted_as):
    assert limited_address(address) == counted_as
