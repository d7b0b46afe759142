"""A team's integration outlives its manager: real gunicorn workers serve a service account's token
while the person who manages it is deactivated and leaves the team.
"""

import threading
import time
from collections import Counter

import pytest
from django.core import mail
from django.core.management import call_command

from tokens.models import ServiceAccount, UsageRecord

from ..helpers import make_manager
from .test_load import run_clients

pytestmark = pytest.mark.live

CLIENTS = 4


def test_deactivating_the_manager_while_the_accounts_token_is_in_use_fails_no_request(
    main_server, user, service_account, issue
):
    make_manager(user, service_account.team)
    token, value = issue(service_account.user, name="nightly-sync")
    stop = threading.Event()
    statuses = [Counter() for _ in range(CLIENTS)]

    def work(client, n):
        # Until told to stop, and at least a few requests after the manager is gone.
        while not stop.is_set():
            response = client.get(
                "/api/users/me", headers={"Authorization": f"Bearer {value}", "User-Agent": f"sync/{n}"}
            )
            statuses[n][response.status] += 1

    clients = threading.Thread(target=run_clients, args=(main_server, CLIENTS, work))
    clients.start()
    try:
        time.sleep(1.5)
        before = sum(statuses, Counter())
        # The manager leaves: deactivated (as the admin or SCIM would) and taken out of the team.
        user.is_active = False
        user.save(update_fields=["is_active"])
        user.groups.remove(service_account.team)
        assert list(ServiceAccount.objects.managed_by(user)) == []
        time.sleep(1.5)
    finally:
        stop.set()
        clients.join(timeout=120)
    total = sum(statuses, Counter())
    assert set(total) == {200}, total
    assert total[200] > before[200] + CLIENTS, (before, total)  # served after the departure too
    assert UsageRecord.objects.filter(token=token, accepted=False).count() == 0

    # The account has nobody left to manage it: its team's administrators (here the superuser) hear of it.
    call_command("notify_unmanaged_service_accounts", stdout=None)
    assert [message.to for message in mail.outbox] == [["sam@example.com"]]
    # And the integration goes on.
    assert (
        main_server.client().get("/api/users/me", headers={"Authorization": f"Bearer {value}"}).status == 200
    )
