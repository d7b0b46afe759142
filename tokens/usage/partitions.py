"""PostgreSQL: the usage records are partitioned by UTC day on ``at``; this module makes and drops the days.

One partition per day, named ``tokens_usagerecord_pYYYYMMDD``, and a default partition that catches any
record no day partition holds (a clock far ahead, a day not made in time): a missing partition never
loses a record. ``prune_usage`` makes the coming days ahead of time and drops the days that are past
retention as whole tables, which takes milliseconds whatever their size, instead of deleting their rows.

Both DDL statements take PostgreSQL's strongest lock on the parent table for an instant, so every
statement here runs with a short ``lock_timeout``: when the table is busy (a long report reading it)
the step gives up, records keep flowing, and the next run of the command tries again. Without a
default partition, ``DETACH … CONCURRENTLY`` would need no such lock; PostgreSQL refuses it while a
default partition exists, and losing no record is worth the instant (measured in docs/performance.md).

No model is imported: migration 0010 uses this module too.
"""

from datetime import UTC, datetime, time, timedelta

from django.db import DatabaseError, transaction

TABLE = "tokens_usagerecord"
DEFAULT = f"{TABLE}_default"
AHEAD_DAYS = 7  # days made ahead of today by every run of prune_usage
LOCK_TIMEOUT = "200ms"


def partition_name(day):
    return f"{TABLE}_p{day:%Y%m%d}"


def _start(day):
    return datetime.combine(day, time.min, tzinfo=UTC)


def day_end(day):
    return _start(day + timedelta(days=1))


def day_partitions(cursor):
    """Return {day: table name} of the day partitions that exist."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        [TABLE],
    )
    days = {}
    for (name,) in cursor.fetchall():
        if name != DEFAULT and name.startswith(f"{TABLE}_p"):
            days[datetime.strptime(name[len(TABLE) + 2 :], "%Y%m%d").date()] = name
    return days


def create_day(cursor, day):
    """Make the partition of *day* unless it exists or the default partition already holds such records.

    Return True if it was made. Records of that day already in the default partition stay there (still
    read, summarised and pruned): moving them would hold the table for longer than the gain is worth.
    """
    name = partition_name(day)
    cursor.execute("SELECT to_regclass(%s)", [name])
    if cursor.fetchone()[0] is not None:
        return False
    cursor.execute(
        f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE at >= %s AND at < %s)",
        [_start(day), _start(day + timedelta(1))],
    )
    if cursor.fetchone()[0]:
        return False
    cursor.execute(
        f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)",
        [_start(day).isoformat(), _start(day + timedelta(1)).isoformat()],
    )
    return True


def create_ahead(connection, *, today, days=AHEAD_DAYS):
    """Make the partitions from *today* to *days* ahead; return how many were made (each its own step)."""
    made = 0
    for offset in range(days + 1):
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                made += create_day(cursor, today + timedelta(offset))
        except DatabaseError:
            # The table was busy: the next run makes it; the default partition catches records meanwhile.
            pass
    return made


def drop_day(connection, day, name, *, summarised_through):
    """Drop the partition of *day* if all its records are summarised; return its row count, or None."""
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(f"SELECT max(id), count(*) FROM {name}")
        highest, rows = cursor.fetchone()
        if highest is not None and highest > summarised_through:
            return None  # records the summaries do not hold yet: never dropped
        cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
        cursor.execute(f"DROP TABLE {name}")
    return rows
