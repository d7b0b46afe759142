"""Pruning: delete the usage records past the retention, once the summaries hold them.

PostgreSQL: make the day partitions of the coming week and drop the whole days past retention; what is
left (the default partition, the day the cutoff falls in) and SQLite: small batches by id range, each
its own short transaction. The summaries (counters, daily totals, client addresses) are never touched.
"""

import time
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Max, Min

from ..models import UsageRecord
from . import partitions, sqlite_turns
from .summarise import summarise


@dataclass
class Pruned:
    """What one run of ``prune`` did."""

    deleted: int = 0  # records deleted in batches
    batches: int = 0
    made: int = 0  # day partitions made ahead (PostgreSQL)
    dropped: int = 0  # day partitions dropped (PostgreSQL)
    dropped_records: int = 0  # the records they held


def prune(cutoff, *, now, batch_size, pause=0.0, using=DEFAULT_DB_ALIAS):
    """Delete the usage records older than *cutoff* that the summaries hold; return a Pruned.

    The records are summarised first (waiting for a summariser running elsewhere), so nothing is
    deleted before it is counted. *pause*: seconds between batches, to leave room for traffic.
    """
    connection = connections[using]
    pruned = Pruned()
    if connection.vendor == "postgresql":
        pruned.made = partitions.create_ahead(connection, today=now.date())
    # Old records are deleted only once the summaries hold them.
    summarise(wait=True, using=using)
    if connection.vendor == "postgresql":
        pruned.dropped, pruned.dropped_records = _drop_days(connection, cutoff)
    pruned.deleted, pruned.batches = _delete_in_batches(connection, cutoff, batch_size, pause)
    return pruned


def _drop_days(connection, cutoff):
    """Drop each day partition that ends at or before *cutoff*; return (partitions, records)."""
    with connection.cursor() as cursor:
        days = partitions.day_partitions(cursor)
    through = UsageRecord.objects.using(connection.alias).summarised_through()
    dropped = records = 0
    for day, name in sorted(days.items()):
        if partitions.day_end(day) > cutoff:
            break
        try:
            rows = partitions.drop_day(connection, day, name, summarised_through=through)
        except DatabaseError:
            # The table was busy past the lock timeout: records flow on; the batches below or the
            # next run delete these.
            continue
        if rows is not None:
            dropped += 1
            records += rows
    return dropped, records


def _delete_in_batches(connection, cutoff, batch_size, pause):
    old = UsageRecord.objects.using(connection.alias).older_than(cutoff).summarised()
    bounds = old.aggregate(low=Min("pk"), high=Max("pk"))
    deleted = batches = 0
    if bounds["low"] is not None:
        # Old usage rows only: no lock any request takes (docs/security.md, "Lock order").
        # Id ranges rather than OFFSET or one big DELETE: each batch is an indexed range scan and a
        # short transaction, so API requests that insert records are never held up for long. On
        # SQLite each batch also queues with the usage INSERTs (sqlite_turns) before taking the write
        # lock, as the summariser does: without a turn, a batch following a batch kept an INSERT
        # sleeping in SQLite's busy handler for over a second.
        queued = connection.vendor == "sqlite" and connection.get_autocommit()
        for start in range(bounds["low"], bounds["high"] + 1, batch_size):
            with sqlite_turns.queued_transaction(connection):
                count, _by_model = old.filter(pk__gte=start, pk__lt=start + batch_size).delete()
            deleted += count
            batches += 1
            if queued:
                # The batch's pages, copied into the database file outside the turn: otherwise the
                # commit that crosses SQLite's checkpoint threshold does it, holding the write lock.
                connection.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if pause and start + batch_size <= bounds["high"]:
                time.sleep(pause)
    return deleted, batches
