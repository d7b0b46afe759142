"""SQLite: usage INSERTs queue on a file lock instead of sleeping on SQLite's lock.

Each process also checkpoints the WAL after the response.
"""

import fcntl
import os
import shutil
import sqlite3
import threading
import time
from contextlib import closing

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections, connection
from django.test import Client
from django.utils import timezone

from tests.helpers import bearer
from tokens.models import Token
from tokens.usage import sqlite_turns
from tokens.usage.read import usage_totals
from tokens.usage.record import record

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the request's own autocommitted INSERT, as in production
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock; PostgreSQL has row locks"),
]


@pytest.fixture
def lock_waits(monkeypatch):
    """Set an event when a thread other than the test's asks for the usage-write turn."""
    asked = threading.Event()
    flock = fcntl.flock

    def watched(descriptor, operation):
        if operation == fcntl.LOCK_EX and threading.current_thread() is not threading.main_thread():
            asked.set()
        return flock(descriptor, operation)

    monkeypatch.setattr(sqlite_turns.fcntl, "flock", watched)
    return asked


def test_a_usage_insert_waits_its_turn_behind_another_process_then_records(user, issue, lock_waits):
    token, value = issue(user)
    answers = []

    def call():
        try:
            answers.append(Client().get("/api/users/me", **bearer(value)).status_code)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=call)
    # Another process's usage INSERT holds the turn (a second open file: flock excludes it like a process).
    with open(f"{connection.settings_dict['NAME']}-usage.lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        try:
            thread.start()
            assert lock_waits.wait(10), "the request never asked for its turn"
            thread.join(0.3)
            assert thread.is_alive() and answers == []
            assert _request_count(token) == 0
        finally:
            fcntl.flock(other, fcntl.LOCK_UN)
            thread.join(10)
    assert answers == [200]
    assert _request_count(token) == 1


def _records_in_the_database_file(tmp_path):
    """Count the usage records the database file holds without its write-ahead log: what was checkpointed."""
    copy = tmp_path / "checkpointed.sqlite3"
    shutil.copyfile(connection.settings_dict["NAME"], copy)
    with closing(sqlite3.connect(copy)) as database:
        return database.execute("SELECT count(*) FROM tokens_usagerecord").fetchone()[0]


def test_the_log_reaches_the_database_file_after_every_few_hundred_inserts(
    client, user, issue, tmp_path, monkeypatch
):
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 5)  # 500 in production: same rule, quicker test
    monkeypatch.setattr(sqlite_turns, "turns", sqlite_turns.WriterTurns())
    _token, value = issue(user)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # start from a file that matches the database
    assert _records_in_the_database_file(tmp_path) == 0
    for _ in range(4):
        assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert _records_in_the_database_file(tmp_path) == 0  # still only in the log
    assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert _records_in_the_database_file(tmp_path) == 5


def test_a_due_checkpoint_runs_even_when_django_closes_the_connection_at_the_end_of_the_request(
    user, issue, tmp_path, monkeypatch
):
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(sqlite_turns, "turns", sqlite_turns.WriterTurns())
    token, _ = issue(user)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    record(
        token_id=token.pk,
        user_id=user.pk,
        at=timezone.now(),
        accepted=True,
        method="GET",
        path="/api/users/me",
        status=200,
        ip="192.0.2.1",
        user_agent="test",
        duration_ms=1.0,
    )
    assert _records_in_the_database_file(tmp_path) == 0
    # Another worker has the database open, so closing this connection does not checkpoint by itself
    # (SQLite does that only when the last connection to a database closes).
    with closing(sqlite3.connect(connection.settings_dict["NAME"])) as other_worker:
        other_worker.execute("SELECT count(*) FROM tokens_token").fetchone()
        # CONN_MAX_AGE has run out: Django's own request_finished receiver, which in a server runs
        # first (the test client reorders the receivers, hence the explicit call), closes the
        # connection before the checkpoint's turn comes.
        connection.close_at = time.monotonic() - 1
        close_old_connections()
        assert connection.connection is None
        request_finished.send(sender=None)
        assert _records_in_the_database_file(tmp_path) == 1


def test_time_in_the_queue_counts_against_the_busy_timeout_so_a_stuck_writer_gives_a_quick_503(
    user, issue, lock_waits, monkeypatch
):
    token, value = issue(user)
    monkeypatch.setattr(sqlite_turns, "LONG_WAIT", 0.1)
    # A 2 s busy timeout (20 s in production) for the connection the request's thread opens.
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 2)
    answers = []

    def call():
        try:
            answers.append(Client().get("/api/users/me", **bearer(value)).status_code)
        finally:
            connection.close()

    thread = threading.Thread(target=call)
    name = connection.settings_dict["NAME"]
    with (
        closing(sqlite3.connect(name, isolation_level=None)) as writer,
        open(f"{name}-usage.lock", "a+") as other,
    ):
        writer.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's lock, and keeps it
        fcntl.flock(other, fcntl.LOCK_EX)
        try:
            thread.start()
            assert lock_waits.wait(10)
            threading.Event().wait(2.2)  # the request's whole budget goes by in the queue
        finally:
            fcntl.flock(other, fcntl.LOCK_UN)
        thread.join(1)  # without the budget, SQLite would now wait its own 2 s for the lock
        finished = not thread.is_alive()
        writer.execute("ROLLBACK")
    thread.join(30)
    assert finished, "the request waited for SQLite's lock after its budget had gone by in the queue"
    assert answers == [503]
    assert _request_count(token) == 0


def test_without_a_usable_lock_file_requests_are_still_recorded(client, user, issue, monkeypatch):
    monkeypatch.setattr(sqlite_turns, "turns", sqlite_turns.WriterTurns())
    token, value = issue(user)
    path = f"{connection.settings_dict['NAME']}-usage.lock"
    kept = os.path.exists(path)
    if kept:
        os.replace(path, f"{path}.kept")
    os.mkdir(path)  # cannot be opened as a file
    try:
        assert client.get("/api/users/me", **bearer(value)).status_code == 200
        assert client.get("/api/users/me", **bearer(value)).status_code == 200
    finally:
        os.rmdir(path)
        if kept:
            os.replace(f"{path}.kept", path)
    assert _request_count(token) == 2


def _request_count(token):
    """The token's request count as its pages show it (summaries + records not summarised yet)."""
    return usage_totals([Token.objects.get(pk=token.pk)])[0].request_count
