import time
from contextlib import nullcontext
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from tokens import metrics, sqlite_turns, usage_partitions
from tokens.models import AttemptCounter, ExpirationPolicy, RefusedClient, UsageRecord


class Command(BaseCommand):
    help = (
        "Delete usage records older than the policy's retention (ExpirationPolicy.usage_retention_days), "
        "safe to run from cron while the site serves traffic. Records are summarised first, and a record "
        "the summaries do not hold yet is never deleted, so per-day totals, client addresses and request "
        "counts survive. PostgreSQL: makes the day partitions of the coming week and drops whole days "
        "past retention; what is left (the default partition, the day the cutoff falls in) and SQLite: "
        "small batches by id range, each its own short transaction."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=5000,
            help="Ids per batch (default 5000). Smaller batches hold the write lock for less time.",
        )
        parser.add_argument(
            "--pause",
            type=float,
            default=0.0,
            help="Seconds to sleep between batches, to leave room for traffic (default 0).",
        )

    def handle(self, *args, dry_run, batch_size, pause, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be a positive number of rows, for example 5000.")
        if pause < 0:
            raise CommandError("--pause must be zero or a positive number of seconds.")
        retention = ExpirationPolicy.load().usage_retention_days
        now = timezone.now()
        cutoff = now - timedelta(days=retention)
        if dry_run:
            old = UsageRecord.objects.older_than(cutoff)
            self.stdout.write(
                f"Would delete {old.count()} usage record(s) older than {cutoff:%Y-%m-%d %H:%M} UTC "
                f"(retention {retention} days). Nothing was deleted."
            )
            return
        made = dropped = dropped_records = 0
        if connection.vendor == "postgresql":
            made = usage_partitions.create_ahead(connection, today=now.date())
        # Old records are deleted only once the summaries hold them.
        UsageRecord.objects.summarise(wait=True)
        if connection.vendor == "postgresql":
            dropped, dropped_records = self._drop_days(cutoff)
        deleted, batches = self._delete_in_batches(cutoff, batch_size, pause)
        # Throttle counters past any window and refused-credential rows past the retention: small tables.
        AttemptCounter.objects.expired().delete()
        RefusedClient.objects.older_than(cutoff).delete()
        partitions = (
            f" Made {made} and dropped {dropped} day partition(s) ({dropped_records} record(s))."
            if connection.vendor == "postgresql"
            else ""
        )
        metrics.count(metrics.PRUNE_RUNS)
        self.stdout.write(
            f"Deleted {deleted + dropped_records} usage record(s) older than {cutoff:%Y-%m-%d %H:%M} UTC "
            f"(retention {retention} days) in {batches} batch(es).{partitions} "
            "Daily totals and request counts are unchanged."
        )

    @staticmethod
    def _drop_days(cutoff):
        """Drop each day partition that ends at or before *cutoff*; return (partitions, records)."""
        with connection.cursor() as cursor:
            days = usage_partitions.day_partitions(cursor)
        through = UsageRecord.objects.summarised_through()
        dropped = records = 0
        for day, name in sorted(days.items()):
            if usage_partitions.day_end(day) > cutoff:
                break
            try:
                rows = usage_partitions.drop_day(connection, day, name, summarised_through=through)
            except DatabaseError:
                # The table was busy past the lock timeout: records flow on; the batches below or the
                # next run delete these.
                continue
            if rows is not None:
                dropped += 1
                records += rows
        return dropped, records

    @staticmethod
    def _delete_in_batches(cutoff, batch_size, pause):
        old = UsageRecord.objects.older_than(cutoff).summarised()
        bounds = old.aggregate(low=Min("pk"), high=Max("pk"))
        deleted = batches = 0
        if bounds["low"] is not None:
            # Old usage rows only: no lock any request takes (docs/security.md, "Lock order").
            # Id ranges rather than OFFSET or one big DELETE: each batch is an indexed range scan and a
            # short transaction, so API requests that insert records are never held up for long. On
            # SQLite each batch also queues with the usage INSERTs (tokens/sqlite_turns.py) before
            # taking the write lock, as the summariser does: without a turn, a batch following a batch
            # kept an INSERT sleeping in SQLite's busy handler for over a second.
            queued = connection.vendor == "sqlite" and connection.get_autocommit()
            for start in range(bounds["low"], bounds["high"] + 1, batch_size):
                with sqlite_turns.turns.turn(connection) if queued else nullcontext(), transaction.atomic():
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
