"""Concurrent clients against gunicorn with several workers, on the main database of the run.

CI runs this twice: once on SQLite (WAL, IMMEDIATE transactions, a busy timeout) and once on
PostgreSQL. Either way every request is answered, recorded once, and counted exactly.
"""

import threading
import time
from collections import Counter

import pytest
from django.db import connection

from tokens.models import DailyUsage, Token, UsageRecord
from tokens.usage.read import usage_totals
from tokens.usage.summarise import summarise as summarise_usage

pytestmark = pytest.mark.live

CLIENTS = 8
REQUESTS_EACH = 250


def run_clients(server, count, work):
    """Run *work(client, n)* in *count* threads, each with its own connection; report any failure."""
    failures = []

    def target(n):
        client = server.client()
        try:
            work(client, n)
        except Exception as error:  # reported below, with the thread's number
            failures.append((n, error))
        finally:
            client.close()

    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures


def test_eight_clients_making_250_requests_each_with_one_token_are_counted_exactly(main_server, user, issue):
    token, value = issue(user)
    statuses = [Counter() for _ in range(CLIENTS)]

    def work(client, n):
        for _ in range(REQUESTS_EACH):
            response = client.get(
                "/api/users/me",
                headers={"Authorization": f"Bearer {value}", "User-Agent": f"load-client/{n}"},
            )
            statuses[n][response.status] += 1

    run_clients(main_server, CLIENTS, work)

    total = sum(statuses, Counter())
    assert total == {200: CLIENTS * REQUESTS_EACH}
    token.refresh_from_db()
    usage_totals([token])  # as the pages read it: summaries + the records not summarised yet
    assert token.request_count == 2000
    assert UsageRecord.objects.filter(token=token).count() == 2000
    assert UsageRecord.objects.filter(token=token, accepted=True, status=200).count() == 2000
    series = DailyUsage.objects.filter(token=token).series(
        days=2, tail=UsageRecord.objects.unsummarised(token=token)
    )
    assert sum(accepted for _day, accepted, _refused in series) == 2000
    assert token.last_used_user_agent.startswith("load-client/")
    log = main_server.log()
    assert "database is locked" not in log
    assert "Traceback" not in log


def test_a_revoke_issued_mid_load_is_honoured_by_every_request_that_starts_after_it_returns(
    main_server, user, issue
):
    token, value = issue(user)
    headers = {"Authorization": f"Bearer {value}"}
    results = [[] for _ in range(CLIENTS)]  # per client: (started, finished, status)
    warmed_up = threading.Barrier(CLIENTS + 1)
    revoke_started, after_revoke = [None], [None]
    stop = threading.Event()

    def work(client, n):
        for i in range(400):  # bounded even if something goes wrong
            started = time.monotonic()
            status = client.get("/api/users/me", headers=headers).status
            results[n].append((started, time.monotonic(), status))
            if i == 10:
                warmed_up.wait(timeout=60)
            if stop.is_set():
                return

    def revoke_then_keep_going():
        warmed_up.wait(timeout=60)
        revoker = main_server.client()
        revoke_started[0] = time.monotonic()
        response = revoker.request("DELETE", f"/api/tokens/{token.pk}", headers=headers)
        after_revoke[0] = time.monotonic()
        assert response.status == 204, response
        # Let every client make a good number of requests after the revoke, then stop them.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(sum(1 for started, _f, _s in r if started > after_revoke[0]) >= 20 for r in results):
                break
            time.sleep(0.05)
        stop.set()

    revoker = threading.Thread(target=revoke_then_keep_going)
    revoker.start()
    run_clients(main_server, CLIENTS, work)
    revoker.join(timeout=60)

    revoked_at = after_revoke[0]
    assert revoked_at is not None
    everything = [entry for per_client in results for entry in per_client]
    after = [status for started, _finished, status in everything if started > revoked_at]
    before = [status for _started, finished, status in everything if finished < revoke_started[0]]
    assert len(after) >= CLIENTS * 20
    # Refused: 401, or 429 once a client has failed often enough to meet the API failure limit.
    assert 401 in after and set(after) <= {401, 429}, Counter(after)
    assert set(before) == {200}
    assert {status for _s, _f, status in everything} <= {200, 401, 429}  # never a 5xx, nothing else

    # Exact usage: every answered request is one record; the count holds the accepted ones (and the DELETE).
    token.refresh_from_db()
    usage_totals([token])
    accepted = sum(1 for entry in everything if entry[2] == 200) + 1
    assert token.request_count == accepted
    assert UsageRecord.objects.filter(token=token).count() == len(everything) + 1
    refused = UsageRecord.objects.filter(token=token, accepted=False).count()
    assert refused == len(everything) + 1 - accepted
    assert Token.objects.get(pk=token.pk).status == "revoked"


def test_the_usage_api_adds_up_in_every_answer_while_another_process_summarises(main_server, user, issue):
    """Counter, days and addresses of every answer lie between the requests answered and those sent.

    Four clients use a token while this process summarises in batches of 7, as another node would,
    and a reader asks for the token's usage again and again (with a second token of the owner). A batch
    that committed between two of the reader's statements would be counted twice (summaries and tail)
    or not at all; ``read_exactly`` reads as of one watermark instead. The three numbers come from
    statements a few milliseconds apart while requests keep arriving, so each is checked against the
    bounds, not against the others.
    """
    token, value = issue(user)
    _reader_token, reader_value = issue(user, name="reader")
    sent, answered = Counter(), Counter()  # per client
    stop = threading.Event()
    readings = []

    def work(client, n):
        # At least 150 requests each, and on until the reader has ten answers: the usage INSERTs and the
        # summariser take turns on a file lock, which is not a queue, so on a busy machine the reader's
        # requests may wait out many of the clients' (bounded: a reader stalled for a minute fails).
        deadline = time.monotonic() + 60
        while sent[n] < 150 or (len(readings) < 10 and time.monotonic() < deadline):
            sent[n] += 1
            assert client.get("/api/users/me", headers={"Authorization": f"Bearer {value}"}).status == 200
            answered[n] += 1

    def summarise():
        try:
            while not stop.is_set():
                summarise_usage(batch_size=7, max_batches=1)
        finally:
            connection.close()

    def read():
        client = main_server.client()
        try:
            while not stop.is_set():
                before = sum(answered.values())
                body = client.get(
                    f"/api/tokens/{token.pk}/usage", headers={"Authorization": f"Bearer {reader_value}"}
                ).json()
                readings.append((before, body, sum(sent.values())))
        finally:
            client.close()

    helpers = [threading.Thread(target=summarise), threading.Thread(target=read)]
    for helper in helpers:
        helper.start()
    try:
        run_clients(main_server, 4, work)
    finally:
        stop.set()
        for helper in helpers:
            helper.join(timeout=60)

    assert len(readings) >= 10
    for before, body, sent_after in readings:
        count = body["request_count"]
        days = sum(day["accepted"] + day["refused"] for day in body["daily"])
        addresses = sum(address["requests"] for address in body["client_ips"])
        assert before <= count <= days <= addresses <= sent_after, (
            before,
            count,
            days,
            addresses,
            sent_after,
        )
    summarise_usage()
    token.refresh_from_db()
    assert token.request_count == sum(answered.values()) >= 600
