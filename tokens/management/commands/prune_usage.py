from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from tokens import metrics
from tokens.models import AttemptCounter, RefusedClient, SitePolicy, UsageRecord
from tokens.usage.prune import prune


class Command(BaseCommand):
    help = (
        "Delete usage records older than the policy's retention (SitePolicy.usage_retention_days), "
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
        retention = SitePolicy.load().usage_retention_days
        now = timezone.now()
        cutoff = now - timedelta(days=retention)
        if dry_run:
            old = UsageRecord.objects.older_than(cutoff)
            self.stdout.write(
                f"Would delete {old.count()} usage record(s) older than {cutoff:%Y-%m-%d %H:%M} UTC "
                f"(retention {retention} days). Nothing was deleted."
            )
            return
        pruned = prune(cutoff, now=now, batch_size=batch_size, pause=pause)
        # Throttle counters past any window and refused-credential rows past the retention: small tables.
        AttemptCounter.objects.expired().delete()
        RefusedClient.objects.older_than(cutoff).delete()
        partitions = (
            f" Made {pruned.made} and dropped {pruned.dropped} day partition(s) "
            f"({pruned.dropped_records} record(s))."
            if connection.vendor == "postgresql"
            else ""
        )
        metrics.count(metrics.PRUNE_RUNS)
        self.stdout.write(
            f"Deleted {pruned.deleted + pruned.dropped_records} usage record(s) older than "
            f"{cutoff:%Y-%m-%d %H:%M} UTC (retention {retention} days) in {pruned.batches} batch(es)."
            f"{partitions} Daily totals and request counts are unchanged."
        )
