"""The usage store's one write: a record of an API request, inserted on the request path.

The counters, last use, per-day and per-address summaries are derived from the records later
(``summarise``) and read exactly in the meantime (``read``).
"""

from django.db import DEFAULT_DB_ALIAS, connections

from ..constants import PATH_MAX_LENGTH, USAGE_DATABASE, USER_AGENT_MAX_LENGTH
from ..models.usage import UsageRecord, storable
from . import sqlite_turns
from .summarise import summarising

_COLUMNS = (
    "token_id, legacy_key_id, user_id, at, accepted, method, path, status, ip, user_agent, duration_ms, "
    "would_refuse"
)
_INSERT = (
    f"INSERT INTO {UsageRecord._meta.db_table} ({_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def record(
    *,
    token_id=None,
    legacy_key_id=None,
    user_id,
    at,
    accepted,
    method,
    path,
    status,
    ip,
    user_agent,
    duration_ms,
    would_refuse=False,
    using=DEFAULT_DB_ALIAS,
):
    """Insert one record with a single autocommitted, append-only statement.

    No trigger and no foreign-key check: the INSERT locks no shared row (not the credential's, not
    a summary's, not the owner's), so any number of requests for one token run side by side. The
    counters, last use, per-day and per-address summaries are derived later by ``summarise`` and
    read exactly as summary + unsummarised tail (``usage_totals``, ``DailyUsageQuerySet.series``,
    ``client_addresses``).

    This runs on every API request, so it skips the ORM's query building: one raw INSERT.
    Outside a transaction it commits at once without waiting for the disk (SQLite
    ``synchronous=NORMAL``, PostgreSQL asynchronous commit): the record is visible as soon as
    the statement returns; a crash of the machine or of the database server may lose the last
    moments of records, never a security write (see docs/performance.md).
    """
    conn = connections[using]
    sql = _INSERT
    # Only in autocommit mode: never inside a transaction (atomic() switches autocommit off), which
    # may hold a security write and commits durably with it.
    relaxed = conn.get_autocommit()
    if relaxed and conn.vendor == "postgresql":
        # The statement switches its own implicit transaction to asynchronous commit: the row is
        # visible to everyone at once, but the commit does not wait for the WAL flush.
        sql += " RETURNING set_config('synchronous_commit', 'off', true)"
    params = [
        token_id,
        legacy_key_id,
        user_id,
        conn.ops.adapt_datetimefield_value(at),
        accepted,
        storable(method, 10),
        storable(path, PATH_MAX_LENGTH),
        status,
        ip,
        storable(user_agent, USER_AGENT_MAX_LENGTH),
        duration_ms,
        would_refuse,
    ]
    if relaxed and conn.vendor == "sqlite":
        # SQLite's durability is a setting of the connection, and every other commit on this one is
        # synchronous=FULL: the INSERT goes through the same file's usage connection, kept at NORMAL
        # (settings.py), queued behind the other processes' usage INSERTs rather than sleeping on
        # the lock. It reads nothing, so what it sees of the main connection does not matter.
        conn = connections[USAGE_DATABASE]
        conn.ensure_connection()  # the turn may shorten its busy timeout
        with sqlite_turns.turns.turn(conn), conn.cursor() as cursor:
            cursor.execute(sql, params)
    else:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
    summarising.count_record(using)


def record_with(mark, *, using=DEFAULT_DB_ALIAS, **fields):
    """Run *mark()*, a write to the credential's row, and ``record(**fields)`` in one transaction.

    Both or neither: the rare request that marks a first use is not counted as used unless its
    record is written. On SQLite it still takes its turn with the other usage INSERTs (before the
    write lock, as they do). Return what *mark()* returned.
    """
    with sqlite_turns.queued_transaction(connections[using]):
        marked = mark()
        record(using=using, **fields)
    return marked
