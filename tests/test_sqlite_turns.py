"""SQLite: usage INSERTs queue on a file lock instead of sleeping on SQLite's, and checkpoint after the response."""

import fcntl
import shutil
import sqlite3
import threading

import pytest
from django.db import connection
from django.test import Client

from tests.conftest import bearer
from tokens import sqlite_turns

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the request's own autocommitted INSERT, as in production
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock; PostgreSQL has row locks"),
]


def _call_in_another_thread(value, answers):
    def call():
        try:
            answers.append(Client().get("/api/users/me", **bearer(value)).status_code)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_a_usage_insert_waits_its_turn_behind_another_process_then_records(user, issue):
    token, value = issue(user)
    # Another process's usage INSERT holds the turn (a second open file: flock excludes it like a process).
    with open(f"{connection.settings_dict['NAME']}-usage.lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        answers = []
        thread = _call_in_another_thread(value, answers)
        thread.join(0.5)
        assert thread.is_alive() and answers == []
        token.refresh_from_db()
        assert token.request_count == 0
        fcntl.flock(other, fcntl.LOCK_UN)
    thread.join(10)
    assert answers == [200]
    token.refresh_from_db()
    assert token.request_count == 1


def _records_in_the_database_file(tmp_path):
    """Count the usage records the database file holds without its write-ahead log: what was checkpointed."""
    copy = tmp_path / "checkpointed.sqlite3"
    shutil.copyfile(connection.settings_dict["NAME"], copy)
    with sqlite3.connect(copy) as database:
        return database.execute("SELECT count(*) FROM tokens_usagerecord").fetchone()[0]


def test_the_log_reaches_the_database_file_after_every_few_hundred_inserts(client, user, issue, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(sqlite_turns, "CHECKPOINT_EVERY", 5)  # 500 in production: same rule, quicker test
    monkeypatch.setattr(sqlite_turns, "turns", sqlite_turns.WriterTurns())
    _token, value = issue(user)
    for _ in range(4):
        assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert _records_in_the_database_file(tmp_path) == 0  # still only in the log
    assert client.get("/api/users/me", **bearer(value)).status_code == 200
    assert _records_in_the_database_file(tmp_path) == 5
