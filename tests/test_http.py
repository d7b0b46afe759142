"""tokens/http.py: the client address, believed from X-Forwarded-For behind a trusted proxy only."""

import pytest

from tokens.models import UsageRecord

from .conftest import bearer

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
