"""Durable transactions for security writes.

Usage records are written with SQLite's ``synchronous=NORMAL`` (a power cut may lose the last few
records, never corrupt the file). A revoked token coming back after a power cut would be a security
bug, so token, key and policy changes run in ``durable_atomic()``: on SQLite it switches the
connection to ``synchronous=FULL`` for that transaction, so its commit is synced to disk before the
caller is told it succeeded. PostgreSQL commits are durable by default (``synchronous_commit=on``).
"""

from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def durable_atomic():
    sqlite = connection.vendor == "sqlite"
    outermost = not connection.in_atomic_block
    if sqlite and outermost:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=FULL")
    try:
        with transaction.atomic():
            yield
    finally:
        if sqlite and outermost:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA synchronous=NORMAL")
